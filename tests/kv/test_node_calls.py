"""``NodeCalls`` (how a node calls other members' APIs) and ``PeerNames`` (whose certificate a
peer must show): schemes, the token header, the node's certificate, and names learned from
configurations and members lists."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from raftly.core.types import ConfState, Member
from raftly.kv.cluster_file import Address, ClusterSpec, NodeSpec
from raftly.kv.node_calls import NodeCalls, PeerNames
from raftly.security.certs import init_certs
from raftly.security.tls import TlsFiles

API = Address("10.0.0.1", 8001)


def authorization(calls: NodeCalls) -> str | None:
    """The Authorization header every call of a session of ``calls`` carries."""

    async def header() -> str | None:
        async with calls.session(1.0) as session:
            return session.headers.get("Authorization")

    return asyncio.run(header())


def test_plain_calls_use_http_and_no_token() -> None:
    calls = NodeCalls()
    assert not calls.tls and calls.url(API) == "http://10.0.0.1:8001"
    assert calls.endpoint_url("h:1") == "http://h:1"
    assert calls.endpoint_url("https://h:1") == "https://h:1"  # an explicit scheme stays
    assert authorization(calls) is None


def test_tls_calls_use_https_the_nodes_certificate_and_the_token(tmp_path: Path) -> None:
    init_certs(tmp_path, ["n1"])
    calls = NodeCalls.of(TlsFiles.from_dir(tmp_path, "n1"), "secret-token")
    assert calls.tls and calls.ssl is not None
    assert calls.ssl.verify_mode == ssl.CERT_REQUIRED and calls.ssl.check_hostname
    assert calls.url(API) == "https://10.0.0.1:8001"
    assert calls.endpoint_url("h:1") == "https://h:1"
    assert authorization(calls) == "Bearer secret-token"
    assert NodeCalls.of(None, "").token is None  # an empty $RAFTLY_TOKEN is no token


def test_peer_names_start_from_the_cluster_and_learn_members_never_forgetting() -> None:
    cluster = ClusterSpec("c", (NodeSpec("n1", 1, API, API), NodeSpec("n2", 2, API, API)))
    names = PeerNames(cluster)
    assert (names(1), names(2), names(3)) == ("n1", "n2", None)
    names.learn_conf(ConfState(frozenset({1, 3}), frozenset(),
                               (Member(1, "n1", "a:1", "a:2"), Member(3, "n3", "b:1", "b:2"))))
    assert (names(2), names(3)) == ("n2", "n3")  # n2 left the configuration: still known
    names.learn([Member(4, "", "c:1", "c:2"), Member(5, "n5", "d:1", "d:2")])
    assert (names(4), names(5)) == (None, "n5")  # a member without a name teaches nothing

"""The HTTP API of real processes: CAS, delete, status codes, limits, and hostile input.

One cluster serves the whole module; every test leaves all three nodes running.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import Iterator

import pytest
from e2e_helpers import request

from raftly.kv.client import Client
from raftly.localcluster import ProcessCluster
from raftly.transport.codec import encode_frame, encode_handshake


@pytest.fixture
def kv(shared_cluster: ProcessCluster) -> Iterator[Client]:
    with Client(shared_cluster.endpoints, timeout=15) as client:
        yield client


def _leader_api(cluster: ProcessCluster) -> str:
    leader, _ = cluster.wait_for_leader()
    return cluster.nodes[leader].api


def _follower_api(cluster: ProcessCluster) -> str:
    leader, _ = cluster.wait_for_leader()
    return next(n.api for n in cluster.nodes.values() if n.name != leader)


def test_cas_swaps_only_when_the_value_matches(shared_cluster: ProcessCluster,
                                               kv: Client) -> None:
    api = _leader_api(shared_cluster)
    assert request(api, "PUT", "/v1/kv/cas-missing?expect=x", b"new").status == 412
    assert kv.get("cas-missing") is None
    kv.put("cas", b"old")
    reply = request(api, "PUT", "/v1/kv/cas?expect=wrong", b"new")
    assert reply.status == 412 and kv.get("cas") == b"old"
    reply = request(api, "PUT", "/v1/kv/cas?expect=old", b"new")
    assert reply.status == 200 and b'"swapped": true' in reply.body
    assert kv.get("cas") == b"new"
    assert kv.cas("cas", b"old", b"newer") is False
    assert kv.cas("cas", b"new", b"newer") is True and kv.get("cas") == b"newer"


def test_delete_reports_whether_the_key_existed(shared_cluster: ProcessCluster,
                                                kv: Client) -> None:
    api = _leader_api(shared_cluster)
    kv.put("del", b"v")
    reply = request(api, "DELETE", "/v1/kv/del")
    assert reply.status == 200 and b'"deleted": true' in reply.body
    assert request(api, "GET", "/v1/kv/del").status == 404
    reply = request(api, "DELETE", "/v1/kv/del")
    assert reply.status == 200 and b'"deleted": false' in reply.body


def test_reads_on_any_node_see_the_latest_write_and_404_when_missing(
        shared_cluster: ProcessCluster, kv: Client) -> None:
    index = kv.put("fresh", b"value")
    for node in shared_cluster.nodes.values():
        # Linearizable by default, even on a follower: no stale read after the write returned.
        reply = request(node.api, "GET", "/v1/kv/fresh")
        assert (reply.status, reply.body) == (200, b"value"), node.name
        assert request(node.api, "GET", "/v1/kv/never-written").status == 404
        status = request(node.api, "GET", "/v1/status")
        assert status.status == 200 and b'"role"' in status.body
    assert index > 0


def test_a_follower_redirects_writes_to_the_leader(shared_cluster: ProcessCluster) -> None:
    leader, _ = shared_cluster.wait_for_leader()
    leader_url = shared_cluster.nodes[leader].spec.api.url
    follower = _follower_api(shared_cluster)
    for method, path in (("PUT", "/v1/kv/a%2Fb?expect=x"), ("DELETE", "/v1/kv/gone")):
        reply = request(follower, method, path, b"v" if method == "PUT" else None)
        assert reply.status == 307
        # The key's percent-encoding and the query string go to the leader unchanged.
        assert reply.headers["location"] == leader_url + path


def test_oversized_requests_get_413(shared_cluster: ProcessCluster) -> None:
    api = _leader_api(shared_cluster)
    assert request(api, "PUT", "/v1/kv/" + "k" * 5000, b"v").status == 413
    assert request(api, "GET", "/v1/kv/" + "k" * 5000).status == 413
    assert request(api, "PUT", "/v1/kv/big", b"x" * ((1 << 20) + 1)).status == 413
    # Without a Content-Length (chunked), the body is cut off once it passes the limit.
    chunks = (b"x" * 65536 for _ in range(20))
    assert request(api, "PUT", "/v1/kv/big-chunked", chunks).status == 413  # type: ignore[arg-type]
    assert request(api, "GET", "/v1/kv/big").status == 404


def test_malformed_requests_get_4xx_with_a_json_error(shared_cluster: ProcessCluster) -> None:
    api = _leader_api(shared_cluster)
    bad = [
        ("PUT", "/v1/kv/s", {"X-Raftly-Seq": "1"}),                  # seq without client id
        ("PUT", "/v1/kv/s", {"X-Raftly-Client": "c", "X-Raftly-Seq": "-1"}),
        ("GET", "/v1/kv/s?consistency=sometimes", {}),
        ("GET", "/v1/kv?limit=lots", {}),
        ("GET", "/v1/kv?limit=0", {}),
        ("POST", "/v1/kv/s", {}),
        ("GET", "/v2/whatever", {}),
    ]
    for method, path, headers in bad:
        reply = request(api, method, path, b"v" if method != "GET" else None, headers)
        assert 400 <= reply.status < 500, (method, path, reply.status)
        assert b'"error"' in reply.body, (method, path, reply.body)
    # Not even HTTP: the server answers 400 or hangs up, and keeps serving.
    with socket.create_connection(_host_port(api), timeout=10) as s:
        s.sendall(b"\x00\xffNOT HTTP AT ALL\r\n\r\n")
        answer = s.recv(100)
        assert answer == b"" or answer.split(b" ")[1] == b"400", answer
    assert request(api, "GET", "/v1/status").status == 200


def _host_port(endpoint: str) -> tuple[str, int]:
    host, port = endpoint.rsplit(":", 1)
    return host, int(port)


def test_a_peer_speaking_garbage_to_the_raft_port_does_not_hurt_the_node(
        shared_cluster: ProcessCluster, kv: Client) -> None:
    leader, _ = shared_cluster.wait_for_leader()
    for node in shared_cluster.nodes.values():
        addr = (node.spec.raft.host, node.spec.raft.port)
        payloads = [
            os.urandom(4096),                                   # noise
            struct.pack(">I", 0xFFFFFFF0) + b"\x00" * 64,       # an absurd frame length
            struct.pack(">I", 8) + b"\xc1" * 8,                 # a frame of invalid msgpack
            b"",                                                # connect and say nothing
            encode_frame(encode_handshake("another-cluster", 2)),
        ]
        # Past a correct handshake (as a stranger, then as a real member): garbage frames.
        cluster_id = shared_cluster.spec.cluster_id
        other = next(n.spec.id for n in shared_cluster.nodes.values() if n is not node)
        for claimed in (99, other):
            hello = encode_frame(encode_handshake(cluster_id, claimed))
            payloads += [hello + encode_frame(b"\x93\x01\x02"),
                         hello + encode_frame(os.urandom(200)),
                         hello + struct.pack(">I", 0x7FFFFFFF)]
        for payload in payloads:
            # The node may hang up first: that is the point.
            with socket.create_connection(addr, timeout=10) as s, \
                    contextlib.suppress(OSError):
                s.sendall(payload)
    for node in shared_cluster.nodes.values():
        assert node.running, f"{node.name} died"
        assert shared_cluster.status(node.name) is not None
    # The cluster still commits, on every node.
    index = kv.put("after-garbage", b"ok")
    for name in shared_cluster.nodes:
        shared_cluster.wait_applied(name, index)
    # Garbage on the Raft port is no reason for an election.
    assert shared_cluster.wait_for_leader()[0] == leader

"""LocalCluster and start_node with TLS: mutual TLS between the peers and HTTPS on the API with
the certificates of a ``raftly certs`` directory (issued where missing); a node joining a TLS
cluster with an auth file over https with its token; names of peers learned by the address
finder."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from kv_helpers import ADMIN, AUTH, FAST, READ, call, followers, run
from polling import eventually

from raftly.kv import service
from raftly.kv.cluster_file import ClusterSpec
from raftly.kv.join import JoinError, request_join
from raftly.kv.node_calls import NodeCalls
from raftly.kv.service import LocalCluster, RunningNode
from raftly.security.tls import TlsFiles, client_context, common_name
from raftly.transport import TcpTransport


def https(certs: Path) -> aiohttp.ClientSession:
    context = client_context(certs / "ca.crt", certs / "client.crt", certs / "client.key")
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))


def transport(node: RunningNode) -> TcpTransport:
    t = node.server._transport
    assert isinstance(t, TcpTransport)
    return t


async def peer_port_name(certs: Path, node: RunningNode) -> str | None:
    """The name on the certificate a node's peer port shows (after a mutual TLS handshake)."""
    files = TlsFiles.from_dir(certs, "n1")
    context = client_context(files.ca, files.cert, files.key)
    context.check_hostname = False
    host, port = transport(node).listen_address
    _, writer = await asyncio.open_connection(host, port, ssl=context)
    try:
        return common_name(writer.get_extra_info("peercert"))
    finally:
        writer.close()


def test_a_tls_cluster_elects_and_serves_writes_over_https(tmp_path: Path) -> None:
    certs = tmp_path / "tls"

    async def main() -> None:
        async with LocalCluster(3, config=FAST, tls_dir=certs) as cluster, https(certs) as s:
            assert sorted(p.name for p in certs.iterdir()) == [
                "ca.crt", "ca.key", "client.crt", "client.key", "n1.crt", "n1.key", "n2.crt",
                "n2.key", "n3.crt", "n3.key"]
            leader = await cluster.wait_for_leader()
            assert all(url.startswith("https://127.0.0.1:") for url in cluster.urls)
            assert (await call(s, "PUT", leader.url + "/v1/kv/k", data=b"v"))[0] == 200
            for follower in followers(cluster, leader):  # a ReadIndex round over mutual TLS
                assert (await call(s, "GET", follower.url + "/v1/kv/k"))[:2] == (200, b"v")
            for node in cluster.nodes:
                assert await peer_port_name(certs, node) == node.name
                assert transport(node).stats()["refused"] == 0
            # Plain HTTP gets no data from the HTTPS port.
            async with aiohttp.ClientSession() as plain:
                with pytest.raises(aiohttp.ClientError):
                    await call(plain, "GET", leader.url.replace("https", "http") + "/v1/kv/k")

    run(main())


def test_a_node_joins_a_tls_cluster_with_tokens_using_its_admin_token(tmp_path: Path) -> None:
    certs = tmp_path / "tls"

    async def main() -> None:
        async with LocalCluster(3, config=FAST, members=True, tls_dir=certs, auth=AUTH,
                                token=ADMIN) as cluster:
            leader = await cluster.wait_for_leader()
            tls = TlsFiles.from_dir(certs, "n1")
            # Without a token, or with one that may not add members: refused at once, saying so.
            for calls, why in ((NodeCalls.of(tls), "--token"),
                               (NodeCalls.of(tls, READ), "needs an admin token")):
                with pytest.raises(JoinError, match=why):
                    await request_join([str(leader.api_address)], "n9",
                                       cluster.nodes[0].spec.raft, cluster.nodes[0].spec.api,
                                       timeout=5.0, calls=calls)
            n4 = await cluster.add_node("n4")
            assert (certs / "n4.crt").exists()  # issued with the cluster's CA
            await eventually(lambda: n4.server.id in leader.server.conf.voters, 10.0,
                             what="n4 promoted")
            async with https(certs) as s:
                status, _, _ = await call(s, "PUT", leader.url + "/v1/kv/k", data=b"v",
                                          headers={"Authorization": f"Bearer {ADMIN}"})
                assert status == 200
            await eventually(lambda: n4.kv.get("k") == b"v", 10.0, what="n4 caught up")
            assert transport(n4).stats()["refused"] == 0

    run(main())


def test_a_node_missing_its_peers_names_learns_them_from_the_members_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    certs = tmp_path / "tls"
    real = service.peer_transport

    def forgetful(cluster: ClusterSpec, node_id: int, *args: object, **kwargs: object
                  ) -> tuple[TcpTransport, service.PeerNames]:
        if node_id == 3:  # n3 starts knowing only itself
            cluster = ClusterSpec(cluster.cluster_id, (cluster.by_id(3),))  # type: ignore[arg-type]
        return real(cluster, node_id, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(service, "peer_transport", forgetful)

    async def main() -> None:
        async with LocalCluster(3, config=FAST, tls_dir=certs) as cluster:
            n3 = cluster.node("n3")
            # n1 and n2 are refused by n3 (and n3 refuses to dial them) until its address
            # finder read their names off a members list; then all three agree on a leader.
            await eventually(lambda: transport(n3).stats()["refused"] > 0, what="a refusal")
            await cluster.wait_for_leader(timeout=15.0)  # n3 hears the leader: accepted

    run(main())

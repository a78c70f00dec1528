"""LocalCluster and start_node with TLS: mutual TLS between the peers and HTTPS on the API with
the certificates of a ``raftly certs`` directory (issued where missing); a node joining a TLS
cluster with an auth file over https with its token; names of peers learned by the address
finder."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import re
import shutil
from collections.abc import Awaitable
from pathlib import Path

import aiohttp
import pytest
from kv_helpers import ADMIN, AUTH, FAST, READ, call, followers, run
from polling import eventually
from test_service import write_cluster_file

from raftly.kv import service
from raftly.kv.cluster_file import Address, ClusterSpec
from raftly.kv.identity import IdentityError
from raftly.kv.join import JoinError, request_join
from raftly.kv.node_calls import NodeCalls, PeerNames
from raftly.kv.service import JoinSpec, LocalCluster, RunningNode, serve
from raftly.localproc import free_ports
from raftly.security.certs import init_certs, issue, load_authority, write_pair
from raftly.security.tls import TlsError, TlsFiles, client_context, common_name
from raftly.storage import DiskStorage
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
            # The admin token was for joining: the nodes' routine look-ups go to addresses
            # other nodes hand out and show the certificate only.
            assert all(node.calls.token is None and node.calls.tls for node in cluster.nodes)

    run(main())


def test_a_node_missing_its_peers_names_learns_them_from_the_members_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    certs = tmp_path / "tls"
    real = service.peer_transport

    def forgetful(cluster: ClusterSpec, node_id: int, *args: object, **kwargs: object
                  ) -> tuple[TcpTransport, PeerNames]:
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


def test_serve_runs_a_tls_cluster_with_tokens_that_a_new_node_joins(tmp_path: Path) -> None:
    certs = tmp_path / "tls"
    init_certs(certs, ["n1", "n2", "n3", "n4"])
    cluster_file = tmp_path / "cluster.toml"
    names = ["n1", "n2", "n3"]
    endpoints = write_cluster_file(cluster_file, names)

    async def main() -> None:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(serve(cluster_file, name, tmp_path / name, config=FAST,
                                           stop=stop, tls=TlsFiles.from_dir(certs, name),
                                           auth=AUTH, token=ADMIN))
                 for name in names]
        raft_port, api_port = free_ports(2)
        join = JoinSpec(tuple(endpoints), "n4", Address("127.0.0.1", raft_port),
                        Address("127.0.0.1", api_port), timeout=20.0)
        tasks.append(asyncio.create_task(serve(None, None, tmp_path / "n4", join=join,
                                               config=FAST, stop=stop,
                                               tls=TlsFiles.from_dir(certs, "n4"),
                                               auth=AUTH, token=ADMIN)))
        token = {"Authorization": f"Bearer {ADMIN}"}
        async with https(certs) as s:
            async def members() -> dict[str, str] | None:
                with contextlib.suppress(aiohttp.ClientError):
                    status, body, _ = await call(s, "GET", f"https://{endpoints[0]}/v1/members",
                                                 headers=token)
                    if status == 200:
                        return {m["name"]: m["role"] for m in body["members"]}
                return None

            await eventually(lambda: _has_voter(members(), "n4"), 20.0, what="n4 a voter")
            async with s.put(f"https://{endpoints[0]}/v1/kv/k", data=b"v", headers=token) as r:
                assert r.status == 200 and r.url.scheme == "https"
            # Without a token the cluster answers nothing.
            status, body, _ = await call(s, "GET", f"https://127.0.0.1:{api_port}/v1/kv/k")
            assert status == 401 and body["code"] == "unauthorized"
        stop.set()
        await asyncio.gather(*tasks)

    run(main(), 60.0)


async def _has_voter(members: Awaitable[dict[str, str] | None], name: str) -> bool:
    found = await members
    return found is not None and found.get(name) == "voter"


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain"])
def test_a_node_that_lost_its_disk_in_an_auth_cluster_is_refused_without_any_token(
        tmp_path: Path, tls: bool) -> None:
    """No node has a token. With TLS a node's certificate is its read pass to the others' APIs,
    so the lost disk is found; without TLS the check cannot be made, and a start that cannot
    be checked is refused too, naming --token (never taken for "no cluster running")."""
    certs = tmp_path / "tls"
    names = ["n1", "n2", "n3"]
    init_certs(certs, names)
    cluster_file = tmp_path / "cluster.toml"
    endpoints = write_cluster_file(cluster_file, names)
    scheme = "https" if tls else "http"

    def start(name: str, stop: asyncio.Event) -> Awaitable[None]:
        return serve(cluster_file, name, tmp_path / name, fsync="never", config=FAST, stop=stop,
                     tls=TlsFiles.from_dir(certs, name) if tls else None, auth=AUTH)

    async def main() -> None:
        stops = {name: asyncio.Event() for name in names}
        tasks = {name: asyncio.create_task(start(name, stops[name])) for name in names}
        try:
            async with https(certs) as s:
                async def put() -> bool:
                    with contextlib.suppress(aiohttp.ClientError):
                        for endpoint in endpoints:
                            status, _, _ = await call(
                                s, "PUT", f"{scheme}://{endpoint}/v1/kv/k", data=b"v",
                                headers={"Authorization": f"Bearer {ADMIN}"})
                            if status == 200:
                                return True
                    return False

                async def applied(endpoint: str) -> bool:
                    status, body, _ = await call(s, "GET", f"{scheme}://{endpoint}/v1/status",
                                                 headers={"Authorization": f"Bearer {READ}"})
                    return status == 200 and body["applied_index"] >= 2

                await eventually(put, 20.0, what="a write")
                for endpoint in endpoints:  # every node took it: the leader knows
                    await eventually(lambda e=endpoint: applied(e), 20.0,
                                     what=f"{endpoint} applied the write")
            stops["n3"].set()
            await tasks.pop("n3")
            shutil.rmtree(tmp_path / "n3")  # the disk is gone, and its votes with it
            message = r"n3 holds entries .* lost its disk" if tls else r"401 .*--token"
            with pytest.raises(IdentityError, match=message):
                await start("n3", asyncio.Event())
        finally:
            for stop in stops.values():
                stop.set()
            await asyncio.gather(*tasks.values())

    run(main(), 60.0)


def test_a_restarted_node_names_members_added_after_its_cluster_file_at_once(
        tmp_path: Path) -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST, members=True, data_dir=tmp_path) as cluster:
            await cluster.wait_for_leader()
            n4 = await cluster.add_node("n4")
            await eventually(lambda: _conf_has(cluster.node("n1"), n4.server.id), 10.0,
                             what="n1 applied the configuration with n4")
            assert cluster.cluster is not None
            spec = cluster.cluster
        n4_id = n4.server.id
        transport, names = service.peer_transport(spec, 1, ("127.0.0.1", 0), peers=False)
        assert names(n4_id) is None  # the cluster file does not list n4
        node = await service.start_node(spec, "n1", storage=DiskStorage(tmp_path / "n1"),
                                        transport=transport, config=FAST, peer_names=names)
        try:
            assert names(n4_id) == "n4"  # from the stored configuration, before any change
        finally:
            await node.close()

    run(main())


async def _conf_has(node: RunningNode, node_id: int) -> bool:
    return node_id in {m.id for m in node.server.conf.members}


def test_serve_refuses_to_start_with_a_certificate_naming_another_node(tmp_path: Path) -> None:
    certs = tmp_path / "tls"
    init_certs(certs, ["n1", "n2"])
    cluster_file = tmp_path / "cluster.toml"
    write_cluster_file(cluster_file, ["n1", "n2"])
    wrong = TlsFiles(certs / "n2.crt", certs / "n2.key", certs / "ca.crt")
    with pytest.raises(TlsError, match=r"n2\.crt names 'n2', not this node 'n1'"):
        run(serve(cluster_file, "n1", tmp_path / "n1", config=FAST, tls=wrong))
    assert not (tmp_path / "n1").exists()  # refused before anything was written


@pytest.mark.parametrize(("validity", "level", "message"), [
    ((-1, 400), logging.INFO, r"expires on \S+ \S+ UTC \(in 400 days\)"),
    ((-1, 10), logging.WARNING, r"expires in 10 days, on .*raftly certs renew"),
    ((1, 400), logging.WARNING, r"not valid before .*is the clock right"),
])
def test_a_node_logs_its_certificates_expiry_and_warns_when_it_is_near(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, validity: tuple[int, int], level: int,
        message: str) -> None:
    files = _certificate_valid(tmp_path, *validity)
    with caplog.at_level(logging.INFO, logger="raftly.kv"):
        service.check_own_certificate(files, "n1")
    [record] = [r for r in caplog.records if "certificate" in r.getMessage()]
    assert record.levelno == level and re.search(message, record.getMessage()), record


def test_a_node_refuses_to_start_with_an_expired_certificate(tmp_path: Path) -> None:
    files = _certificate_valid(tmp_path, -30, -1)
    with pytest.raises(TlsError, match=r"n1\.crt expired on .*raftly certs renew"):
        service.check_own_certificate(files, "n1")


def _certificate_valid(tmp_path: Path, from_days: int, to_days: int) -> TlsFiles:
    """n1's certificate, valid from ``from_days`` to ``to_days`` from now (+ 1 hour)."""
    init_certs(tmp_path, ["n9"])
    now = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    cert, key = issue(load_authority(tmp_path), "n1", not_before=now + datetime.timedelta(
        days=from_days), not_after=now + datetime.timedelta(days=to_days))
    write_pair(tmp_path, "n1", cert, key)
    return TlsFiles.from_dir(tmp_path, "n1")


def test_intruders_on_the_peer_port_are_refused_and_the_kv_cluster_keeps_serving(
    tmp_path: Path,
) -> None:
    """Each intruder claims to be a follower and sends the leader a heartbeat of a far higher
    term, which would depose it if accepted: certificates of another CA, of another node, and
    none at all."""
    from raftly.core.messages import Heartbeat
    from raftly.security.certs import new_authority
    from raftly.security.tls import peer_client_context, peer_server_context

    certs = tmp_path / "tls"

    def files_of(name: str, cert: object, key: object) -> TlsFiles:
        folder = tmp_path / f"intruder-{name}"
        folder.mkdir()
        cert_path, key_path = write_pair(folder, name, cert, key)  # type: ignore[arg-type]
        return TlsFiles(cert_path, key_path, certs / "ca.crt")

    async def intrude(files: TlsFiles, src: int, leader: RunningNode) -> None:
        t = TcpTransport(src, ("127.0.0.1", 0), {leader.spec.id: transport(leader).listen_address},
                         cluster_id=transport(leader).cluster_id,
                         server_ssl=peer_server_context(files),
                         client_ssl=peer_client_context(files),
                         peer_name=lambda _: leader.name)
        await t.start(lambda _: None)
        try:
            t.send(Heartbeat(term=1_000_000, src=src, dst=leader.spec.id, commit=0, seq=1))
            await eventually(lambda: t.stats()["connect_failures"] >= 1, what="a refused dial")
        finally:
            await t.close()

    async def no_certificate(leader: RunningNode) -> None:
        context = client_context(certs / "ca.crt")
        context.check_hostname = False
        host, port = transport(leader).listen_address
        with contextlib.suppress(OSError, aiohttp.ClientError, asyncio.IncompleteReadError):
            reader, writer = await asyncio.open_connection(host, port, ssl=context)
            await reader.read()  # the listener refuses and closes
            writer.close()

    async def main() -> None:
        async with LocalCluster(3, config=FAST, tls_dir=certs) as cluster, https(certs) as s:
            leader = await cluster.wait_for_leader()
            term = leader.server.node.term
            victim = followers(cluster, leader)[0]
            other_ca = files_of(victim.name, *issue(new_authority(), victim.name))
            other_node = TlsFiles.from_dir(certs, next(
                n.name for n in cluster.nodes if n.name not in (leader.name, victim.name)))
            for files in (other_ca, other_node):
                await intrude(files, victim.spec.id, leader)
            await no_certificate(leader)
            await eventually(lambda: transport(leader).stats()["refused"] >= 3,
                             what="three refusals")
            assert leader.server.node.term == term and leader.server.is_leader
            assert (await call(s, "PUT", leader.url + "/v1/kv/after", data=b"ok"))[0] == 200
            assert (await call(s, "GET", victim.url + "/v1/kv/after"))[:2] == (200, b"ok")

    run(main())

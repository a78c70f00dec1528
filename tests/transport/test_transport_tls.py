"""TcpTransport with mutual TLS on loopback: legitimate peers exchange messages and snapshots;
a peer with a certificate of another CA, another node's name, none, an expired or not yet valid
one, or no TLS at all is refused with one WARNING line, while the legitimate peers keep talking;
the dialler checks the listener's name too; an id with no known name is refused and reported."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest
from polling import eventually
from transport_helpers import Node, Sinks, hb, run

from raftly.core.messages import Heartbeat, InstallSnapshot
from raftly.core.types import ConfState, Snapshot, SnapshotMeta
from raftly.security.certs import init_certs, issue, load_authority, new_authority, write_pair
from raftly.security.tls import TlsFiles, peer_client_context, peer_server_context

NAMES = {1: "n1", 2: "n2", 3: "n3"}
LOG = "raftly.transport.tcp"


@dataclass(frozen=True, slots=True)
class Pki:
    """A cluster CA with certificates for n1..n3, in ``dir``."""

    dir: Path

    def files(self, name: str) -> TlsFiles:
        return TlsFiles.from_dir(self.dir, name)

    def tls(self, name: str, files: TlsFiles | None = None) -> dict[str, object]:
        """TcpTransport keyword arguments for node ``name`` (or for ``files``)."""
        files = files or self.files(name)
        return {"server_ssl": peer_server_context(files), "client_ssl": peer_client_context(files),
                "peer_name": NAMES.get}


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    init_certs(tmp_path / "certs", ["n1", "n2", "n3"])
    return Pki(tmp_path / "certs")


async def tls_nodes(pki: Pki, *ids: int) -> list[Node]:
    """Started TLS nodes that know each other's addresses."""
    nodes = [await Node(i, **pki.tls(NAMES[i])).start() for i in ids]
    for node in nodes:
        node.t.set_peers({n.id: n.addr for n in nodes})
    return nodes


def heartbeats_from(node: Node, src: int) -> list[int]:
    return [m.commit for m in node.inbox if isinstance(m, Heartbeat) and m.src == src]


async def exchange(nodes: list[Node], commit: int) -> None:
    """Every node sends every other a heartbeat carrying ``commit``; all arrive."""
    for a in nodes:
        for b in nodes:
            if a is not b:
                a.t.send(hb(a.id, b.id, commit))
    for b in nodes:
        for a in nodes:
            if a is not b:
                await eventually(lambda a=a, b=b: commit in heartbeats_from(b, a.id),
                                 what=f"heartbeat {commit} from {a.id} at {b.id}")


def refusals(caplog: pytest.LogCaptureFixture, node: int,
             level: int = logging.WARNING) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == LOG and r.levelno == level
            and r.getMessage().startswith(f"node {node}: refused ")]


def test_three_tls_transports_exchange_messages_and_a_snapshot(pki: Pki, tmp_path: Path) -> None:
    path = tmp_path / "snap"
    path.write_bytes(b"snapshot bytes " * 10_000)

    async def body() -> None:
        sinks = Sinks()
        nodes = [await Node(i, **pki.tls(NAMES[i])).start(sinks) for i in (1, 2, 3)]
        for node in nodes:
            node.t.set_peers({n.id: n.addr for n in nodes})
        await exchange(nodes, 1)
        meta = SnapshotMeta(index=7, term=2, conf=ConfState(frozenset({1, 2, 3})))
        msg = InstallSnapshot(term=2, src=1, dst=3, snapshot=Snapshot(meta))
        assert await nodes[0].t.send_snapshot(msg, str(path), chunk_size=16 << 10) is True
        assert bytes(sinks.made[0].data) == path.read_bytes()
        assert [m for m in nodes[2].inbox if isinstance(m, InstallSnapshot)] == [msg]
        assert all(n.t.stats()["refused"] == 0 for n in nodes)
        for node in nodes:
            await node.t.close()

    run(body)


def _expired(pki: Pki) -> tuple[str, TlsFiles]:
    now = datetime.datetime.now(datetime.UTC)
    cert, key = issue(load_authority(pki.dir), "n3", not_before=now - datetime.timedelta(days=9),
                      not_after=now - datetime.timedelta(days=1))
    return "certificate verify failed: certificate has expired", _written(pki, cert, key)


def _not_yet_valid(pki: Pki) -> tuple[str, TlsFiles]:
    now = datetime.datetime.now(datetime.UTC)
    cert, key = issue(load_authority(pki.dir), "n3", not_before=now + datetime.timedelta(days=1),
                      not_after=now + datetime.timedelta(days=9))
    return "certificate verify failed: certificate is not yet valid", _written(pki, cert, key)


def _other_ca(pki: Pki) -> tuple[str, TlsFiles]:
    cert, key = issue(new_authority(), "n3")
    return ("certificate verify failed: unable to get local issuer certificate",
            _written(pki, cert, key))


def _written(pki: Pki, cert: object, key: object) -> TlsFiles:
    folder = pki.dir.parent / "intruder"
    folder.mkdir()
    cert_path, key_path = write_pair(folder, "n3", cert, key)  # type: ignore[arg-type]
    return TlsFiles(cert_path, key_path, pki.dir / "ca.crt")


def _other_name(pki: Pki) -> tuple[str, TlsFiles]:
    return "certificate names 'n2', not 'n3'", pki.files("n2")  # n2's own, stolen


@pytest.mark.parametrize("make", [_expired, _not_yet_valid, _other_ca, _other_name],
                         ids=["expired", "not-yet-valid", "other-ca", "other-name"])
def test_a_peer_with_a_bad_certificate_is_refused_and_the_others_keep_talking(
    pki: Pki, caplog: pytest.LogCaptureFixture,
    make: object,
) -> None:
    caplog.set_level(logging.INFO, LOG)
    why, files = make(pki)  # type: ignore[operator]
    intruder_kwargs = pki.tls("n3", files)
    intruder_kwargs["peer_name"] = NAMES.get
    # The intruder's listener needs a loadable context; it checks nothing here.
    intruder_kwargs["server_ssl"] = peer_server_context(pki.files("n3"))
    _run_intrusion(pki, caplog, Node(3, **intruder_kwargs), why)


def _run_intrusion(pki: Pki, caplog: pytest.LogCaptureFixture, intruder: Node, why: str) -> None:
    caplog.set_level(logging.DEBUG, LOG)

    async def body() -> None:
        a, b = await tls_nodes(pki, 1, 2)
        await intruder.start()
        intruder.t.set_peers({1: a.addr})
        await exchange([a, b], 1)
        for commit in range(1, 30):  # keeps redialling with its backoff while refused
            intruder.t.send(hb(3, 1, commit))
            await asyncio.sleep(0.02)
        await eventually(lambda: any(why in line for line in refusals(caplog, 1)),
                         what=f"the refusal {why!r}")
        await exchange([a, b], 2)
        assert heartbeats_from(a, 3) == []
        lines = refusals(caplog, 1)
        quiet = refusals(caplog, 1, logging.DEBUG)
        assert all(why in line and "127.0.0.1:" in line for line in lines + quiet), lines
        # Every refusal has its line: the first a WARNING, the rest (within the rate limit's
        # interval, which outlasts this test) at DEBUG.
        assert len(lines) == 1
        assert a.t.stats()["refused"] == len(lines) + len(quiet)
        for node in (a, b, intruder):
            await node.t.close()

    run(body)


def test_a_peer_without_a_certificate_is_refused(pki: Pki,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOG)
    no_cert = ssl.create_default_context(cafile=str(pki.dir / "ca.crt"))
    no_cert.check_hostname = False
    intruder = Node(3, server_ssl=peer_server_context(pki.files("n3")), client_ssl=no_cert,
                    peer_name=NAMES.get)
    _run_intrusion(pki, caplog, intruder, "TLS handshake failed: no certificate")


def test_a_plaintext_peer_on_the_tls_port_is_refused(pki: Pki,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOG)
    _run_intrusion(pki, caplog, Node(3), "TLS handshake failed: plaintext on a TLS port")


def test_a_tls_peer_on_a_plaintext_port_gets_nowhere(pki: Pki,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOG)

    async def body() -> None:
        plain = await Node(2).start()
        (a,) = await tls_nodes(pki, 1)
        a.t.set_peers({2: plain.addr})
        for commit in range(1, 10):
            a.t.send(hb(1, 2, commit))
            await asyncio.sleep(0.02)
        await eventually(lambda: plain.t.stats()["decode_errors"] > 1, what="bad handshakes")
        assert any(r.levelno == logging.WARNING and "node 2: bad handshake from 127.0.0.1:"
                   in r.getMessage() for r in caplog.records)
        assert a.t.stats()["connects"] == 0
        assert plain.inbox == []
        await a.t.close()
        await plain.t.close()

    run(body)


def test_the_dialler_refuses_a_listener_with_another_nodes_name(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOG)

    async def body() -> None:
        a, c = await tls_nodes(pki, 1, 3)
        a.t.set_peers({2: c.addr})  # "node 2" is in fact node 3
        a.t.send(hb(1, 2))
        await eventually(lambda: a.t.stats()["refused"] == 1, what="the refusal")
        assert any(r.levelno == logging.WARNING and "node 1 -> 2: refused 127.0.0.1:" in
                   r.getMessage() and "certificate names 'n3', not 'n2'" in r.getMessage()
                   for r in caplog.records)
        await eventually(lambda: c.t.stats()["inbound_connections"] == 0, what="closed at c")
        assert c.inbox == []
        await a.t.close()
        await c.t.close()

    run(body)


def test_an_id_without_a_known_name_is_refused_until_its_name_is_learned(pki: Pki) -> None:
    async def body() -> None:
        names = {1: "n1"}
        wanted: list[int] = []
        a = Node(1, **{**pki.tls("n1"), "peer_name": names.get})
        a.t.on_unknown_peer = wanted.append
        await a.start()
        (c,) = await tls_nodes(pki, 3)
        c.t.set_peers({1: a.addr})

        async def delivered() -> bool:
            c.t.send(hb(3, 1, 5))
            await asyncio.sleep(0.02)
            return bool(heartbeats_from(a, 3))

        c.t.send(hb(3, 1, 5))
        await eventually(lambda: bool(wanted), what="on_unknown_peer")
        assert wanted[0] == 3 and a.t.stats()["refused"] >= 1 and a.inbox == []
        names[3] = "n3"
        await eventually(delivered, what="the heartbeat once n3 is known")
        await a.t.close()
        await c.t.close()

    run(body)


def test_a_silent_connection_on_the_tls_port_is_refused_after_the_handshake_timeout(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOG)

    async def body() -> None:
        a = await Node(1, handshake_timeout=0.2, **pki.tls("n1")).start()
        reader, writer = await asyncio.open_connection(*a.addr)
        assert await asyncio.wait_for(reader.read(), 3.0) == b""
        writer.close()
        assert a.t.stats()["refused"] == 1
        assert any("no TLS handshake within 0.2s" in line for line in refusals(caplog, 1))
        await a.t.close()

    run(body)


def test_tls_needs_both_contexts_and_peer_names(pki: Pki) -> None:
    kwargs = pki.tls("n1")
    with pytest.raises(ValueError, match="peer_name"):
        Node(1, server_ssl=kwargs["server_ssl"], client_ssl=kwargs["client_ssl"])
    with pytest.raises(ValueError, match="both"):
        Node(1, server_ssl=kwargs["server_ssl"], peer_name=NAMES.get)


def test_snapshot_connections_are_checked_both_ways(pki: Pki, tmp_path: Path) -> None:
    path = tmp_path / "snap"
    path.write_bytes(b"x" * 1000)
    meta = SnapshotMeta(index=7, term=2, conf=ConfState(frozenset({1, 2, 3})))

    async def body() -> None:
        sinks = Sinks()
        a = await Node(1, **pki.tls("n1")).start(sinks)
        # Node 3 showing n2's certificate is refused by the listener...
        thief = await Node(3, **{**pki.tls("n3", pki.files("n2")),
                                 "server_ssl": peer_server_context(pki.files("n3"))}).start()
        thief.t.set_peers({1: a.addr})
        msg = InstallSnapshot(term=2, src=3, dst=1, snapshot=Snapshot(meta))
        assert await thief.t.send_snapshot(msg, str(path)) is False
        assert a.t.stats()["refused"] == 1
        # ...and a listener that is not the node dialled is refused by the sender.
        c = await Node(3, **pki.tls("n3")).start(sinks)
        a.t.set_peers({2: c.addr})
        msg = InstallSnapshot(term=2, src=1, dst=2, snapshot=Snapshot(meta))
        assert await a.t.send_snapshot(msg, str(path)) is False
        assert a.t.stats()["refused"] == 2 and c.t.stats()["refused"] == 0
        assert sinks.made == [] and a.inbox == [] and c.inbox == []
        for node in (a, thief, c):
            await node.t.close()

    run(body)


async def _slow_link(target: tuple[str, int], delay: float) -> asyncio.Server:
    """A loopback proxy to ``target`` that holds every chunk ``delay`` seconds each way: a link
    with a round trip of 2 * ``delay``."""

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.closing(writer), contextlib.suppress(OSError):
            while data := await reader.read(1 << 16):
                await asyncio.sleep(delay)  # the latency of the link, each way
                writer.write(data)
                await writer.drain()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*target)
        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    return await asyncio.start_server(serve, "127.0.0.1", 0)


def test_a_tls_dial_over_a_slow_link_gets_the_handshake_timeout_not_the_connect_timeout(
    pki: Pki,
) -> None:
    """A 0.4 s round trip: TCP connects at once (loopback to the proxy), but TLS and the
    handshake frame take >= 0.8 s, far beyond the 0.3 s connect timeout."""

    async def body() -> None:
        a = await Node(1, connect_timeout=0.3, **pki.tls("n1")).start()
        b = await Node(2, **pki.tls("n2")).start()
        link = await _slow_link(b.addr, 0.2)
        a.t.set_peers({2: link.sockets[0].getsockname()[:2]})
        for commit in range(1, 100):  # one every 0.1 s until one gets through
            a.t.send(hb(1, 2, commit))
            if heartbeats_from(b, 1):
                break
            await asyncio.sleep(0.1)
        assert heartbeats_from(b, 1), "no heartbeat arrived over the slow link"
        assert b.t.stats()["refused"] == 0
        link.close()
        await a.t.close()
        await b.t.close()  # both ends closed: the proxy's pumps see EOF and end
        await eventually(lambda: not any(t.get_coro().__name__ in ("pump", "serve")
                                         for t in asyncio.all_tasks()),
                         what="the proxy's tasks end")

    run(body)

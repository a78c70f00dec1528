"""Resource limits of the KV API on a real node (raw sockets on 127.0.0.1): the connection cap,
the idle timeout, the request-body deadline (408), and slowloris clients that cannot hold the
node: a normal request is still answered while they are connected, and once they fill every
slot they are cut off within the timeouts."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from kv_helpers import FAST, SecureCluster, call, run
from polling import eventually

from raftly.kv import connections
from raftly.kv.connections import ConnectionCap
from raftly.kv.http import Limits, make_runner
from raftly.kv.service import LocalCluster, RunningNode
from raftly.security.certs import init_certs
from raftly.security.tls import client_context

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@contextlib.asynccontextmanager
async def single(limits: Limits) -> AsyncIterator[RunningNode]:
    async with LocalCluster(1, config=FAST, limits=limits) as cluster:
        yield await cluster.wait_for_leader()


async def connect(node: RunningNode) -> Conn:
    return await asyncio.open_connection(node.api_address.host, node.api_address.port)


def cap_of(node: RunningNode) -> ConnectionCap:
    cap = getattr(node.runner, "cap", None)
    assert isinstance(cap, ConnectionCap)
    return cap


async def closed_by_server(reader: asyncio.StreamReader, timeout: float = 10.0) -> bytes:
    """Everything the server sends until it closes the connection (fails if it never does).

    A reset counts as closed: a server that closes while a client still sends resets it.
    """
    received = bytearray()

    async def until_closed() -> None:
        with contextlib.suppress(ConnectionResetError):
            while chunk := await reader.read(65536):
                received.extend(chunk)

    await asyncio.wait_for(until_closed(), timeout)
    return bytes(received)


async def status_ok(node: RunningNode, tls: ssl.SSLContext | None = None) -> bool:
    """Whether a fresh connection gets ``GET /v1/status`` answered 200 (within 2 s)."""
    connector = aiohttp.TCPConnector(force_close=True, ssl=tls if tls is not None else True)
    timeout = aiohttp.ClientTimeout(total=2.0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as s:
        try:
            return (await call(s, "GET", node.url + "/v1/status"))[0] == 200
        except (aiohttp.ClientError, TimeoutError):
            return False


def test_connections_beyond_the_cap_are_closed_at_once_and_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "raftly.kv.connections")

    async def main() -> None:
        async with single(Limits(max_connections=4)) as node:
            held = [await connect(node) for _ in range(4)]
            await eventually(lambda: cap_of(node).open == 4, what="4 connections admitted")
            reader, writer = await connect(node)
            writer.write(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
            assert await closed_by_server(reader, 5.0) == b"", "no answer beyond the cap"
            assert not await status_ok(node)
            assert "API connection limit reached (4 open)" in caplog.text
            # A slot freed is a connection served.
            held.pop()[1].close()
            await eventually(lambda: status_ok(node), what="a request served again")
            for _, w in held:
                w.close()
            await eventually(lambda: cap_of(node).open == 0, what="every slot released")

    run(main())


def test_an_idle_or_never_finished_request_is_closed_after_the_idle_timeout() -> None:
    async def main() -> None:
        async with single(Limits(idle_timeout=0.3)) as node:
            silent = await connect(node)
            half = await connect(node)
            half[1].write(b"GET /v1/status HTTP/1.1\r\nHo")
            kept = await connect(node)
            kept[1].write(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
            for reader, _ in (silent, half):
                assert await closed_by_server(reader) == b""
            # After an answer, a keep-alive connection idles out too.
            answer = await closed_by_server(kept[0])
            assert answer.startswith(b"HTTP/1.1 200"), answer
            await eventually(lambda: cap_of(node).open == 0, what="slots released")

    run(main())


async def trickle(writer: asyncio.StreamWriter, count: int, interval: float) -> None:
    """Send one body byte every ``interval`` seconds: a body that never arrives in time."""
    with contextlib.suppress(ConnectionError):
        for _ in range(count):
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(interval)


def test_a_body_that_does_not_arrive_in_time_gets_408_and_the_connection_closed() -> None:
    async def main() -> None:
        async with single(Limits(body_timeout=0.5)) as node:
            for request in ("PUT /v1/kv/slow", "POST /v1/members"):
                reader, writer = await connect(node)
                writer.write(f"{request} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
                             .encode())
                sender = asyncio.create_task(trickle(writer, 1000, 0.05))
                answer = await closed_by_server(reader)
                sender.cancel()
                assert answer.startswith(b"HTTP/1.1 408"), answer
                assert b"did not arrive within 0.5s" in answer and b"Connection: close" in answer
            assert node.kv.get("slow") is None
            assert await status_ok(node)

    run(main())


def test_slowloris_clients_cannot_hold_the_node() -> None:
    async def main() -> None:
        limits = Limits(max_connections=20, idle_timeout=3.0, body_timeout=3.0)
        async with single(limits) as node:
            slow: list[Conn] = []
            senders: list[asyncio.Task[None]] = []

            async def open_slow(count: int) -> None:
                for n in range(count):
                    reader, writer = await connect(node)
                    if n % 2:  # headers that never end
                        writer.write(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                    else:  # a body that never ends
                        writer.write(b"PUT /v1/kv/s HTTP/1.1\r\nHost: x\r\n"
                                     b"Content-Length: 100000\r\n\r\n")
                        senders.append(asyncio.create_task(trickle(writer, 100000, 0.05)))
                    slow.append((reader, writer))

            # Half the slots held by slow clients: a normal request is answered while they
            # still hold them (a condition, not a stopwatch: slow CI cannot fake it).
            await open_slow(10)
            await eventually(lambda: cap_of(node).open == 10, what="slow clients connected")
            assert await status_ok(node)
            # Once the answer's connection is released the ten are all still counted: none was
            # cut before the answer (the count only falls until open_slow below).
            await eventually(lambda: cap_of(node).open == 10, what="the slow ones still held")
            # Every slot held: the slow ones are cut off by the timeouts, and the node serves
            # again without anyone closing them.
            await open_slow(10)
            await eventually(lambda: status_ok(node), timeout=20.0, what="served again")
            for reader, _ in slow:
                answer = await closed_by_server(reader)
                assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer
            for sender in senders:
                sender.cancel()

    run(main())


def test_a_stalled_tls_handshake_holds_a_counted_slot_until_the_handshake_timeout(
        tmp_path: Path) -> None:
    init_certs(tmp_path, ["n1"])
    trust = client_context(tmp_path / "ca.crt")

    async def main() -> None:
        # No other timeout could close the stalled ones within the test: idle_timeout is long.
        limits = Limits(max_connections=3, handshake_timeout=0.5, idle_timeout=3600.0)
        async with SecureCluster(1, config=FAST, limits=limits, tls_dir=tmp_path) as cluster:
            node = await cluster.wait_for_leader()
            assert await status_ok(node, trust)
            # Connected, never a ClientHello: each one is counted while it stalls.
            stalled = [await connect(node) for _ in range(3)]
            await eventually(lambda: cap_of(node).open == 3, what="stalled handshakes counted")
            assert not await status_ok(node, trust), "the cap holds while they stall"
            for reader, _ in stalled:
                assert await closed_by_server(reader, 20.0) == b""
            await eventually(lambda: status_ok(node, trust), what="served again")
            await eventually(lambda: cap_of(node).open == 0, what="every slot released")
            # A handshake that fails (plaintext), or that the client drops halfway, frees its
            # slot too.
            plain = await connect(node)
            plain[1].write(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
            assert not (await closed_by_server(plain[0])).startswith(b"HTTP")
            dropped = await connect(node)
            dropped[1].write(b"\x16\x03\x01\x02\x00\x01")  # the start of a ClientHello
            await eventually(lambda: cap_of(node).open == 1, what="the dropped one counted")
            dropped[1].transport.abort()
            await eventually(lambda: cap_of(node).open == 0, what="every slot released")

    run(main())


def test_the_cap_is_clamped_below_the_open_file_limit_and_logged(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cap of 1024 under the usual limit of 1024 descriptors never engages: accept() fails
    with EMFILE first. The runner keeps a reserve for the WAL, snapshots and peers."""
    caplog.set_level(logging.INFO, "raftly.kv.http")
    monkeypatch.setattr(connections, "open_file_limit", lambda: 1024)
    runner = make_runner(web.Application(), Limits(max_connections=1024))
    cap = getattr(runner, "cap", None)
    assert isinstance(cap, ConnectionCap)
    assert cap.limit == 1024 - connections.FD_RESERVE
    assert f"at most {cap.limit} open connections, not 1024" in caplog.text
    monkeypatch.setattr(connections, "open_file_limit", lambda: 100_000)
    cap = getattr(make_runner(web.Application(), Limits(max_connections=1024)), "cap", None)
    assert isinstance(cap, ConnectionCap) and cap.limit == 1024


def test_the_soft_open_file_limit_is_raised_to_the_hard_limit() -> None:
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard < 64:
        pytest.skip("needs a finite hard limit to lower the soft one below")
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard // 2, hard))
        assert connections.raise_fd_limit() == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_accept_errors_for_want_of_descriptors_do_not_flood_the_log(
        caplog: pytest.LogCaptureFixture) -> None:
    """asyncio logs one error with a traceback per failed accept(), about a hundred per loop
    turn while the descriptors are gone; once a runner is made, one per interval gets through."""
    make_runner(web.Application(), Limits())

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for _ in range(500):
            loop.call_exception_handler({
                "message": "socket.accept() out of system resource",
                "exception": OSError(errno.EMFILE, "Too many open files")})

    with caplog.at_level(logging.ERROR, "asyncio"):
        run(main())
    lines = [r for r in caplog.records if r.name == "asyncio"
             and r.getMessage().startswith("socket.accept() out of system resource")]
    assert len(lines) <= 1

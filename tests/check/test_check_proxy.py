"""The link proxy: bytes pass, a dropped link is a black hole, a reset link refuses, heal works."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from raftly.check.proxy import LinkProxy, Network


def run(coro: Any, timeout: float = 20.0) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


async def echo_server() -> tuple[asyncio.Server, int]:
    """A server that echoes every byte back (stands in for a node's Raft port)."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def with_proxy(body: Callable[[LinkProxy], Awaitable[None]]) -> None:
    server, port = await echo_server()
    proxy = LinkProxy(("a", "b"), ("127.0.0.1", port))
    await proxy.start()
    try:
        await body(proxy)
    finally:
        await proxy.close()
        server.close()


async def roundtrip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes,
                    timeout: float = 1.0) -> bytes:
    writer.write(data)
    await writer.drain()
    got = b""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while len(got) < len(data):
                chunk = await reader.read(65536)
                if not chunk:
                    break
                got += chunk
    return got


def test_forwards_both_ways() -> None:
    async def body(proxy: LinkProxy) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await roundtrip(reader, writer, b"hello") == b"hello"
        big = bytes(range(256)) * 4096  # 1 MiB, several chunks
        assert await roundtrip(reader, writer, big, 5.0) == big
        writer.close()
        assert proxy.forwarded_bytes >= 2 * (5 + len(big))
    run(with_proxy(body))


def test_drop_is_a_black_hole_and_heal_closes_what_it_swallowed() -> None:
    async def body(proxy: LinkProxy) -> None:
        r1, w1 = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await roundtrip(r1, w1, b"before") == b"before"
        proxy.set_state("drop")
        # Open connection: bytes vanish, nothing comes back, the connection stays open.
        assert await roundtrip(r1, w1, b"lost", 0.3) == b""
        # New connection: accepted, but nothing is forwarded.
        r2, w2 = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await roundtrip(r2, w2, b"void", 0.3) == b""
        assert proxy.dropped_bytes >= 8
        proxy.set_state("pass")
        # Healing closes the black-holed connections (their byte stream has a gap)...
        for r in (r1, r2):
            async with asyncio.timeout(2):
                assert await r.read(100) == b""
        # ...and a new connection works again.
        r3, w3 = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await roundtrip(r3, w3, b"after") == b"after"
        for w in (w1, w2, w3):
            w.close()
    run(with_proxy(body))


def test_reset_refuses_and_closes() -> None:
    async def body(proxy: LinkProxy) -> None:
        r1, w1 = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await roundtrip(r1, w1, b"x") == b"x"
        proxy.set_state("reset")
        async with asyncio.timeout(2):
            assert await r1.read(100) == b""
        r2, w2 = await asyncio.open_connection("127.0.0.1", proxy.port)
        async with asyncio.timeout(2):
            assert await r2.read(100) == b""
        proxy.set_state("pass")
        r3, w3 = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await roundtrip(r3, w3, b"y") == b"y"
        for w in (w1, w2, w3):
            w.close()
    run(with_proxy(body))


def test_target_down_closes_the_dialler() -> None:
    async def body() -> None:
        server, port = await echo_server()
        server.close()
        await server.wait_closed()
        proxy = LinkProxy(("a", "b"), ("127.0.0.1", port))
        await proxy.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            async with asyncio.timeout(3):
                assert await reader.read(100) == b""
            writer.close()
        finally:
            await proxy.close()
    run(body())


@pytest.mark.parametrize("groups, blocked", [
    ([["a", "b"], ["c"]], {("a", "c"), ("c", "a"), ("b", "c"), ("c", "b")}),
    ([["a", "b", "c"]], set()),
])
def test_network_views_are_symmetric(groups: list[list[str]], blocked: set[tuple[str, str]]
                                     ) -> None:
    async def body() -> None:
        net = Network({n: ("127.0.0.1", 1) for n in "abc"})
        await net.start()
        try:
            assert len(net.links) == 6
            assert len({p.port for p in net.links.values()}) == 6
            net.connect_only(groups)
            assert set(net.blocked()) == blocked
            net.heal()
            assert net.blocked() == []
            # A one-sided view still cuts both directions.
            net.apply_view({"a": {"a", "b", "c"}, "b": {"a", "b"}, "c": {"a", "c"}})
            assert set(net.blocked()) == {("b", "c"), ("c", "b")}
        finally:
            await net.close()
    run(body())


def test_a_proxy_never_listens_on_a_port_reserved_for_a_node(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The nodes' ports are chosen free but left unbound until the nodes start; the OS offering one
    to a proxy had a node fail to start ("raft address ... is also n1 raft")."""
    from raftly.localproc import free_ports

    reserved = free_ports(1)[0]
    real_start_server = asyncio.start_server
    calls: list[int] = []

    async def offers_the_reserved_port_first(*args: Any) -> asyncio.Server:
        calls.append(args[2])
        if len(calls) == 1:  # as the OS may: the first port it offers is the node's
            return await real_start_server(args[0], args[1], reserved)
        return await real_start_server(*args)

    monkeypatch.setattr(asyncio, "start_server", offers_the_reserved_port_first)

    async def body() -> None:
        network = Network({"a": ("127.0.0.1", reserved), "b": ("127.0.0.1", reserved)})
        await network.start()
        try:
            ports = {proxy.port for proxy in network.links.values()}
            assert reserved not in ports and 0 not in ports
            assert len(calls) == 3
            # the squatted port was let go: the node can bind it
            server = await real_start_server(lambda r, w: None, "127.0.0.1", reserved)
            server.close()
        finally:
            await network.close()
    run(body())

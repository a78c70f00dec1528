"""A fault-injecting TCP proxy: one listening port per directed link between two nodes.

The nodes run unmodified. Node ``a``'s cluster file names, as the Raft address of every other
node ``b``, the proxy port of the link ``a -> b``; the proxy forwards those bytes to ``b``'s real
Raft port. The raftly transport dials one outbound connection per ordered pair of nodes and
only writes on it (replies travel on the peer's own connection), so the link ``a -> b`` carries
exactly what ``a`` sends to ``b`` (plus the handshake reply).

Each link is in one of three states:

- ``pass``: bytes are forwarded both ways.
- ``drop``: a black hole. Bytes on open connections are read and discarded; a new connection is
  accepted but never forwarded, so the dialler's handshake times out. That is what a cable cut
  looks like to TCP: silence, not a reset.
- ``reset``: open connections are closed and new ones are closed at once (a refusing firewall).

Leaving ``drop`` closes the connections that were black-holed: bytes were lost mid-stream, so
their framing can no longer be trusted, and the nodes redial as they would after a real outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Iterable, Set
from dataclasses import dataclass, field
from typing import Any, Literal

logger = logging.getLogger("raftly.check.proxy")

LinkState = Literal["pass", "drop", "reset"]
Link = tuple[str, str]
"""A directed link (from node, to node), by node name."""

_CHUNK = 256 << 10


@dataclass(eq=False)
class _Conn:
    """One proxied connection: the dialler's side and, once connected, the target's side."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def close(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                with contextlib.suppress(Exception):
                    writer.close()
        for task in self.tasks:
            task.cancel()


class LinkProxy:
    """The proxy of one directed link: listens on ``port`` and forwards to ``target``."""

    def __init__(self, link: Link, target: tuple[str, int], host: str = "127.0.0.1") -> None:
        self.link = link
        self.target = target
        self.host = host
        self.state: LinkState = "pass"
        self.port = 0
        self.forwarded_bytes = 0
        self.dropped_bytes = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._conns: set[_Conn] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, port: int = 0, avoid: Set[int] = frozenset()) -> int:
        """Listen on ``port`` (0: one the OS picks, never one in ``avoid``)."""
        # The nodes' ports were free when chosen, but nothing holds them until the nodes start,
        # so the OS may offer one of them here: such a port is kept bound (so it is not offered
        # again) until this proxy has a port of its own.
        squatted: list[asyncio.Server] = []
        try:
            for _ in range(100):
                server = await asyncio.start_server(self._accept, self.host, port)
                bound = server.sockets[0].getsockname()[1]
                if port or bound not in avoid:
                    self._server, self.port = server, bound
                    return bound
                squatted.append(server)
            raise OSError(f"proxy {self.link}: the OS offered only ports reserved for the nodes")
        finally:
            for server in squatted:
                server.close()

    def set_state(self, state: LinkState) -> None:
        previous, self.state = self.state, state
        if state == "reset" or (previous == "drop" and state != "drop"):
            # A reset refuses what is open; leaving a black hole closes the connections that
            # lost bytes (see the module docstring).
            self._close_all()

    def _close_all(self) -> None:
        for conn in list(self._conns):
            conn.close()
        self._conns.clear()

    def _spawn(self, coro: Coroutine[Any, Any, None], conn: _Conn | None = None
               ) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if conn is not None:
            conn.tasks.append(task)
        return task

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.state == "reset":
            writer.close()
            return
        conn = _Conn(writer)
        self._conns.add(conn)
        try:
            if self.state == "pass":
                try:
                    up_reader, up_writer = await asyncio.wait_for(
                        asyncio.open_connection(*self.target), 2.0)
                except (OSError, TimeoutError):
                    # The target is down (killed): the dialler sees its connection closed, as it
                    # would with no proxy in between.
                    return
                conn.upstream = up_writer
                if self.state != "pass":  # changed while connecting
                    return
                back = self._spawn(self._pump(up_reader, writer), conn)
                await self._pump(reader, up_writer)
                await asyncio.wait([back], timeout=1.0)
            else:
                # Black hole: swallow whatever the dialler sends until the link heals.
                await self._pump(reader, None)
        except asyncio.CancelledError:
            pass
        finally:
            conn.close()
            self._conns.discard(conn)

    async def _pump(self, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter | None) -> None:
        """Copy ``reader`` to ``writer`` while the link passes; discard while it drops."""
        try:
            while True:
                data = await reader.read(_CHUNK)
                if not data:
                    break
                if self.state != "pass" or writer is None:
                    self.dropped_bytes += len(data)
                    continue
                self.forwarded_bytes += len(data)
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            if writer is not None:
                with contextlib.suppress(Exception):
                    writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._close_all()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)


class Network:
    """Every directed link between ``nodes``; ``partition`` and ``heal`` set them together.

    ``targets`` maps each node name to its real Raft address. ``reserved``: ports chosen for the
    nodes but not yet bound by them (the targets' ports are always reserved); no proxy takes one.
    """

    def __init__(self, targets: dict[str, tuple[str, int]], host: str = "127.0.0.1",
                 reserved: Iterable[int] = ()) -> None:
        self.targets = dict(targets)
        self.host = host
        self.reserved = set(reserved) | {port for _, port in targets.values()}
        self.links: dict[Link, LinkProxy] = {
            (a, b): LinkProxy((a, b), targets[b], host)
            for a in targets for b in targets if a != b}

    async def start(self) -> None:
        try:
            for proxy in self.links.values():
                await proxy.start(avoid=self.reserved)
        except BaseException:
            await self.close()
            raise

    def address(self, src: str, dst: str) -> tuple[str, int]:
        """Where ``src`` must dial to reach ``dst``."""
        return self.host, self.links[(src, dst)].port

    def set_links(self, links: Iterable[Link], state: LinkState) -> None:
        for link in links:
            self.links[link].set_state(state)

    def connect_only(self, groups: Iterable[Iterable[str]], state: LinkState = "drop") -> None:
        """Let each node talk only to the nodes it shares a group with (both directions)."""
        sees: dict[str, set[str]] = {n: set() for n in self.targets}
        for group in groups:
            members = set(group)
            for n in members:
                sees[n] |= members
        self.apply_view(sees, state)

    def apply_view(self, sees: dict[str, set[str]], state: LinkState = "drop") -> None:
        """Link ``a -> b`` passes iff ``b in sees[a]`` and ``a in sees[b]`` (symmetric cuts)."""
        for (a, b), proxy in self.links.items():
            ok = b in sees.get(a, set()) and a in sees.get(b, set())
            proxy.set_state("pass" if ok else state)

    def heal(self) -> None:
        for proxy in self.links.values():
            proxy.set_state("pass")

    def blocked(self) -> list[Link]:
        return sorted(link for link, proxy in self.links.items() if proxy.state != "pass")

    async def close(self) -> None:
        await asyncio.gather(*(p.close() for p in self.links.values()), return_exceptions=True)


__all__ = ["Link", "LinkProxy", "LinkState", "Network"]

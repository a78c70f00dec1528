"""Shared pieces of the server snapshot tests: counting state machines and a restartable
cluster of ``RaftServer`` on DiskStorage + SnapshotStore in a temp dir, on a ``MemoryNetwork``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from polling import eventually

from raftly.core.config import Config
from raftly.core.state_machine import SupportsRead, SupportsWrite
from raftly.server import RaftServer
from raftly.storage import DiskStorage
from raftly.storage.snapshots import SnapshotStore
from raftly.transport import MemoryNetwork

FAST = Config(tick_interval=0.005, heartbeat_interval=0.02, election_timeout=0.15)


class Counter:
    """Adds the integer in each command; remembers which indexes it applied one by one."""

    def __init__(self) -> None:
        self.value = 0
        self.applied: list[int] = []

    def apply(self, index: int, command: bytes) -> object:
        self.applied.append(index)
        self.value += int(command)
        return self.value


class CounterCapture:
    def __init__(self, value: int) -> None:
        self.value = value

    def persist(self, sink: SupportsWrite) -> None:
        sink.write(str(self.value).encode())


class SnapshottingCounter(Counter):
    def capture(self) -> CounterCapture:
        return CounterCapture(self.value)

    def restore(self, source: SupportsRead) -> None:
        self.value = int(source.read())


class Nodes:
    """Servers 1..n on DiskStorage + SnapshotStore under ``root``, restartable one by one."""

    def __init__(self, root: Path, n: int = 3, machine: type[Counter] = SnapshottingCounter,
                 *, config: Config = FAST, net: MemoryNetwork | None = None,
                 **options: object) -> None:
        self.root = root
        self.net = net if net is not None else MemoryNetwork()
        self.ids = list(range(1, n + 1))
        self.machine = machine
        self.config = config
        self.options = options
        self.servers: dict[int, RaftServer] = {}

    async def start(self, i: int) -> RaftServer:
        d = self.root / f"n{i}"
        server = RaftServer(i, storage=DiskStorage(d, segment_size=1024),
                            transport=self.net.transport(i), state_machine=self.machine(),
                            bootstrap=frozenset(self.ids), config=self.config,
                            rng=random.Random(i), snapshots=SnapshotStore(d),
                            **self.options)  # type: ignore[arg-type]
        await server.start()
        self.servers[i] = server
        return server

    async def start_all(self) -> None:
        for i in self.ids:
            await self.start(i)

    async def leader(self) -> RaftServer:
        return await eventually(lambda: next((s for s in self.servers.values() if s.is_leader),
                                             None), what="a leader")

    async def close(self) -> None:
        for server in self.servers.values():
            await server.close()


@contextlib.asynccontextmanager
async def running(root: Path, n: int = 3, machine: type[Counter] = SnapshottingCounter,
                  **options: object) -> AsyncIterator[Nodes]:
    """``Nodes`` with all of them started; every one still open is closed at the end."""
    nodes = Nodes(root, n, machine, **options)  # type: ignore[arg-type]
    try:
        await nodes.start_all()
        yield nodes
    finally:
        await nodes.close()


def run(test: Callable[[], Awaitable[None]], timeout: float = 60) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout))


async def propose(server: RaftServer, count: int) -> None:
    await asyncio.gather(*(server.propose(b"1") for _ in range(count)))

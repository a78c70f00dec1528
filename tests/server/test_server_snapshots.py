"""RaftServer with snapshots: automatic compaction, InstallSnapshot for a far-behind follower,
restart from snapshot + log tail, a corrupt snapshot, and a state machine without the hooks.

Real DiskStorage and SnapshotStore files in a temp dir, in-memory transports, real time with
fast timers: every wait polls a condition with a generous deadline.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from polling import eventually

from raftly.core.config import Config
from raftly.core.state_machine import SupportsRead, SupportsWrite
from raftly.server import RaftServer
from raftly.storage import DiskStorage, StorageError
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


class _CounterCapture:
    def __init__(self, value: int) -> None:
        self.value = value

    def persist(self, sink: SupportsWrite) -> None:
        sink.write(str(self.value).encode())


class SnapshottingCounter(Counter):
    def capture(self) -> _CounterCapture:
        return _CounterCapture(self.value)

    def restore(self, source: SupportsRead) -> None:
        self.value = int(source.read())


class Nodes:
    """Servers 1..n on DiskStorage + SnapshotStore under ``root``, restartable one by one."""

    def __init__(self, root: Path, n: int = 3, machine: type[Counter] = SnapshottingCounter,
                 **options: object) -> None:
        self.root = root
        self.net = MemoryNetwork()
        self.ids = list(range(1, n + 1))
        self.machine = machine
        self.options = options
        self.servers: dict[int, RaftServer] = {}

    async def start(self, i: int) -> RaftServer:
        d = self.root / f"n{i}"
        server = RaftServer(i, storage=DiskStorage(d, segment_size=1024),
                            transport=self.net.transport(i), state_machine=self.machine(),
                            bootstrap=frozenset(self.ids), config=FAST, rng=random.Random(i),
                            snapshots=SnapshotStore(d), **self.options)  # type: ignore[arg-type]
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


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 60))


async def propose(server: RaftServer, count: int) -> None:
    await asyncio.gather(*(server.propose(b"1") for _ in range(count)))


def test_the_log_is_compacted_behind_each_snapshot_as_entries_are_applied(tmp_path: Path) -> None:
    async def body() -> None:
        nodes = Nodes(tmp_path, snapshot_entries=20, snapshot_retain=5)
        await nodes.start_all()
        try:
            leader = await nodes.leader()
            for _ in range(10):
                await propose(leader, 20)
            for server in nodes.servers.values():
                await eventually(lambda s=server: s.state_machine.value == 200)
                await eventually(lambda s=server: s.status().snapshot_index >= 180)
                st = server.status()
                # What follows the last snapshot, plus the retained entries: never the history.
                assert st.last_index - st.first_index < 20 + 5 + 5, st
                assert st.log_bytes < 4096, st
        finally:
            await nodes.close()

    run(body)


def test_a_follower_cut_off_while_the_log_was_compacted_catches_up_by_snapshot(
        tmp_path: Path) -> None:
    async def body() -> None:
        nodes = Nodes(tmp_path, snapshot_entries=20, snapshot_retain=5)
        await nodes.start_all()
        try:
            leader = await nodes.leader()
            behind = next(s for s in nodes.servers.values() if s is not leader)
            nodes.net.disconnect(behind.id)
            for _ in range(10):
                await propose(leader, 20)
            await eventually(lambda: leader.status().first_index > behind.status().last_index + 1)
            nodes.net.connect(behind.id)
            await eventually(lambda: behind.state_machine.value == 200, timeout=20,
                             what="the follower caught up")
            assert behind.status().snapshot_index > 0
            assert behind._snapshots is not None and behind._snapshots.stats["installed"] >= 1
            # It jumped: the entries the snapshot covers were never applied one by one here.
            assert len(behind.state_machine.applied) < 200
        finally:
            await nodes.close()

    run(body)


def test_a_restarted_node_restores_its_snapshot_and_replays_only_the_tail(
        tmp_path: Path) -> None:
    async def body() -> None:
        nodes = Nodes(tmp_path, snapshot_entries=20, snapshot_retain=5)
        await nodes.start_all()
        try:
            leader = await nodes.leader()
            await propose(leader, 110)
            follower = next(s for s in nodes.servers.values() if s is not leader)
            await eventually(lambda: follower.status().snapshot_index >= 100)
            await follower.close()
            again = await nodes.start(follower.id)
            snapshot = again.status().snapshot_index
            assert snapshot >= 100
            await eventually(lambda: again.state_machine.value == 110)
            assert all(i > snapshot for i in again.state_machine.applied)
        finally:
            await nodes.close()

    run(body)


def _flip_byte_in_newest_snapshot(directory: Path) -> Path:
    store = SnapshotStore(directory)
    newest = store.metas()[0]
    path = Path(store.path(newest))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))
    return path


def test_a_corrupt_newest_snapshot_is_reported_and_an_older_one_used_if_the_log_covers_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        nodes = Nodes(tmp_path, n=1, snapshot_entries=10, snapshot_retain=1000)
        server = await nodes.start(1)
        await nodes.leader()
        for _ in range(4):
            await propose(server, 10)
            await eventually(lambda: server.status().snapshot_index
                             == server.status().applied_index)
        newest = server.status().snapshot_index
        await nodes.close()
        corrupt = _flip_byte_in_newest_snapshot(tmp_path / "n1")
        with caplog.at_level(logging.WARNING):
            again = await nodes.start(1)
        try:
            assert f"{corrupt}: corrupt" in caplog.text
            assert 0 < again.status().snapshot_index < newest
            await eventually(lambda: again.state_machine.value == 40)
        finally:
            await nodes.close()

    run(body)


def test_a_corrupt_snapshot_the_log_does_not_cover_stops_the_start_with_the_file_named(
        tmp_path: Path) -> None:
    async def body() -> None:
        nodes = Nodes(tmp_path, n=1, snapshot_entries=10, snapshot_retain=0)
        server = await nodes.start(1)
        await nodes.leader()
        await propose(server, 35)
        await eventually(lambda: server.status().first_index > 30)
        await nodes.close()
        corrupt = _flip_byte_in_newest_snapshot(tmp_path / "n1")
        with pytest.raises(StorageError, match=f"{corrupt}: corrupt"):
            await nodes.start(1)

    run(body)


def test_a_state_machine_without_snapshot_hooks_runs_with_compaction_off_and_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        nodes = Nodes(tmp_path, n=1, machine=Counter, snapshot_entries=10)
        with caplog.at_level(logging.WARNING):
            server = await nodes.start(1)
        try:
            await nodes.leader()
            await propose(server, 50)
            assert server.state_machine.value == 50
            assert server.status().first_index == 1 and server.status().snapshot_index == 0
            warnings = [r for r in caplog.records if "no snapshot hooks" in r.getMessage()]
            assert len(warnings) == 1
        finally:
            await nodes.close()

    run(body)


def test_a_restart_cuts_a_log_left_longer_than_the_retain_setting(tmp_path: Path) -> None:
    async def body() -> None:
        # Stopped with its whole log still there (as when a stop comes between a snapshot and
        # its compaction, or after lowering --snapshot-retain): the start compacts at once.
        keep_all = Nodes(tmp_path, n=1, snapshot_entries=20, snapshot_retain=1000)
        server = await keep_all.start(1)
        await keep_all.leader()
        await propose(server, 100)
        await eventually(lambda: server.status().snapshot_index >= 100)
        assert server.status().first_index == 1
        await keep_all.close()
        again = await Nodes(tmp_path, n=1, snapshot_entries=20, snapshot_retain=5).start(1)
        try:
            st = again.status()
            assert st.first_index == st.snapshot_index - 5 + 1, st
        finally:
            await again.close()

    run(body)

"""RaftServer with snapshots: automatic compaction, InstallSnapshot for a far-behind follower,
restart from snapshot + log tail, a corrupt snapshot, and a state machine without the hooks.

Real DiskStorage and SnapshotStore files in a temp dir, in-memory transports, real time with
fast timers: every wait polls a condition with a generous deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
from polling import eventually
from snapshot_helpers import Counter, Nodes, SnapshottingCounter, propose, run

import raftly.transport.memory as memory_transport
from raftly.core.config import Config
from raftly.core.messages import InstallSnapshot
from raftly.core.state_machine import SupportsRead
from raftly.logevents import event_of
from raftly.server import RaftServer
from raftly.storage import StorageError
from raftly.storage.snapshots import SnapshotStore
from raftly.transport.base import IncomingSnapshotSink
from raftly.transport.memory import MemoryTransport


async def leave_one_behind(nodes: Nodes, count: int) -> tuple[RaftServer, RaftServer]:
    """Cut a follower off while the leader commits ``count`` entries, 20 at a time; return the
    leader and that follower (still cut off)."""
    leader = await nodes.leader()
    behind = next(s for s in nodes.servers.values() if s is not leader)
    nodes.net.disconnect(behind.id)
    for _ in range(count // 20):
        await propose(leader, 20)
    return leader, behind


async def compacted_single_node(root: Path, count: int) -> None:
    """Leave in ``root/n1`` a one-node cluster's data dir whose log was compacted after
    ``count`` commands (a snapshot every 10 entries, none retained)."""
    nodes = Nodes(root, n=1, snapshot_entries=10, snapshot_retain=0)
    server = await nodes.start(1)
    await nodes.leader()
    await propose(server, count)
    await eventually(lambda: server.status().first_index > count - 10)
    await nodes.close()


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
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="raftly.server")

    async def body() -> None:
        nodes = Nodes(tmp_path, snapshot_entries=20, snapshot_retain=5)
        await nodes.start_all()
        try:
            leader, behind = await leave_one_behind(nodes, 200)
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
    # Each snapshot taken and installed is one log line with its fields.
    events = [event_of(r) for r in caplog.records]
    taken = [fields for name, fields in events if name == "snapshot_taken"]
    installed = [fields for name, fields in events if name == "snapshot_installed"]
    assert taken and all(f["size"] > 0 and f["index"] > 0 for f in taken)
    assert installed and installed[0]["index"] >= 20


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
        await compacted_single_node(tmp_path, 35)
        corrupt = _flip_byte_in_newest_snapshot(tmp_path / "n1")
        with pytest.raises(StorageError, match=f"{corrupt}: corrupt"):
            await Nodes(tmp_path, n=1).start(1)

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


class SlowRestoreCounter(SnapshottingCounter):
    def restore(self, source: SupportsRead) -> None:
        time.sleep(1.0)  # a large state (in the install thread)
        super().restore(source)


@pytest.mark.parametrize("machine", [SnapshottingCounter, SlowRestoreCounter])
def test_a_slow_transfer_under_steady_writes_is_installed_once_then_replicated(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, machine: type[Counter]) -> None:
    # A transfer that takes as long as many snapshots' worth of writes (hashicorp/raft #212):
    # the leader must keep the entries after the snapshot on its way, or the follower needs a
    # new snapshot as soon as it installed one, forever.
    def slow_copy(path: str, sink: IncomingSnapshotSink, chunk_size: int) -> None:
        with open(path, "rb") as source:
            time.sleep(0.5)  # a large state on a real network (in the transfer's thread)
            while chunk := source.read(chunk_size):
                sink.write(chunk)
        sink.finish()

    monkeypatch.setattr(memory_transport, "_copy", slow_copy)

    async def body() -> None:
        # Hundreds of entries are written while the file travels and while it is restored: the
        # leader keeps those after the snapshot until the follower confirms it.
        # An election timeout a busy CI machine does not stall past: a follower silent that
        # long would (by design) lose the leader's hold on the entries after its snapshot.
        patient = Config(tick_interval=0.01, heartbeat_interval=0.05, election_timeout=1.0)
        nodes = Nodes(tmp_path, machine=machine, config=patient, snapshot_entries=20)
        await nodes.start_all()
        stop = asyncio.Event()
        try:
            leader, behind = await leave_one_behind(nodes, 100)
            nodes.net.connect(behind.id)

            async def writer() -> None:  # ~100 entries per transfer: 5 snapshots' worth
                while not stop.is_set():
                    await leader.propose(b"1")
                    await asyncio.sleep(0.005)

            writing = asyncio.create_task(writer())
            await eventually(lambda: behind.status().applied_index
                             >= leader.status().commit_index - 20, timeout=20,
                             what="the follower keeping up with the writes")
            stop.set()
            await writing
            assert behind._snapshots is not None
            assert behind._snapshots.stats["installed"] == 1
        finally:
            stop.set()
            await nodes.close()

    run(body)


def test_a_transfer_that_fails_unexpectedly_is_reported_and_retried(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    failures = 0
    real_send = MemoryTransport.send_snapshot

    async def first_one_raises(self: MemoryTransport, msg: InstallSnapshot, path: str, *,
                               chunk_size: int = 1 << 20) -> bool:
        nonlocal failures
        if failures == 0:
            failures += 1
            raise ValueError("a bug in a transport")
        return await real_send(self, msg, path, chunk_size=chunk_size)

    monkeypatch.setattr(MemoryTransport, "send_snapshot", first_one_raises)

    async def body() -> None:
        nodes = Nodes(tmp_path, snapshot_entries=20, snapshot_retain=5)
        await nodes.start_all()
        try:
            _, behind = await leave_one_behind(nodes, 100)
            nodes.net.connect(behind.id)
            await eventually(lambda: behind.state_machine.value == 100, timeout=20,
                             what="the follower caught up after a failed transfer")
            assert failures == 1 and "a bug in a transport" in caplog.text
        finally:
            await nodes.close()

    run(body)


def test_a_compacted_data_dir_is_refused_by_a_server_that_cannot_restore_snapshots(
        tmp_path: Path) -> None:
    async def body() -> None:
        await compacted_single_node(tmp_path, 30)
        # Serving the log's tail on an empty state would be serving a wrong state.
        with pytest.raises(StorageError, match=r"compacted up to index .* cannot restore"):
            await Nodes(tmp_path, n=1, machine=Counter).start(1)

    run(body)

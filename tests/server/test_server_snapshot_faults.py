"""RaftServer snapshots under stress and faults: a large snapshot written while heartbeats go
on, a restart that finishes an interrupted install, an InstallSnapshot without its file, pending
proposals overtaken by a snapshot, a close during a snapshot write or transfer, and a leader
change during a transfer.

Real DiskStorage and SnapshotStore files in a temp dir, in-memory transports, real time: every
wait polls a condition with a generous deadline. A transfer is held mid-way by a gate in the
receiver's sink, so "during a transfer" is a fact, not a hope.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from polling import eventually
from snapshot_helpers import Nodes, SnapshottingCounter, propose, run, running

from raftly.core.config import Config
from raftly.core.messages import Heartbeat, InstallSnapshot, Message
from raftly.core.state_machine import SupportsRead, SupportsWrite
from raftly.core.types import ConfState, Snapshot, SnapshotMeta
from raftly.server import OutcomeUnknown, RaftServer
from raftly.storage.snapshots import SnapshotStore
from raftly.transport import MemoryNetwork
from raftly.transport.base import IncomingSnapshotSink
from raftly.transport.memory import MemoryTransport

# Slow enough that a loop stalled by a snapshot write would miss heartbeats and start elections.
REALISTIC = Config(tick_interval=0.01, heartbeat_interval=0.05, election_timeout=0.5)
BIG = 64 << 20
CHUNK = 1 << 20
HEAD = 20


class _BigCapture:
    def __init__(self, value: int, spans: list[float]) -> None:
        self.value = value
        self.spans = spans

    def persist(self, sink: SupportsWrite) -> None:
        self.spans.append(time.monotonic())
        sink.write(str(self.value).encode().ljust(HEAD))
        for _ in range(BIG // CHUNK):
            # Encoded item by item, as a real state machine serialises its records: Python
            # work holding the GIL in the writing thread, not one quick bulk write.
            sink.write(b"".join(i.to_bytes(8, "little") for i in range(CHUNK // 8)))
        self.spans.append(time.monotonic())


class BigCounter(SnapshottingCounter):
    """A counter whose snapshot is 64 MB (the value, then filler), slow to encode; ``spans``
    records when each of its snapshot writes began and ended (time.monotonic)."""

    def __init__(self) -> None:
        super().__init__()
        self.spans: list[float] = []

    def capture(self) -> _BigCapture:  # type: ignore[override]
        return _BigCapture(self.value, self.spans)

    def restore(self, source: SupportsRead) -> None:
        self.value = int(source.read(HEAD))
        while source.read(CHUNK):
            pass  # read to the end: the reader verifies every frame


class HeartbeatClock(MemoryNetwork):
    """Records when each Heartbeat reaches its receiver."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: dict[int, list[float]] = defaultdict(list)

    def _deliver(self, dst: MemoryTransport, msg: Message) -> None:
        if isinstance(msg, Heartbeat):
            self.arrivals[msg.dst].append(time.monotonic())
        super()._deliver(dst, msg)


class _GatedSink:
    def __init__(self, inner: IncomingSnapshotSink, entered: threading.Event,
                 gate: threading.Event) -> None:
        self.inner = inner
        self.entered = entered
        self.gate = gate

    def write(self, data: bytes, /) -> int:
        self.entered.set()
        self.gate.wait(30)
        return self.inner.write(data)

    def finish(self) -> SnapshotMeta:
        return self.inner.finish()

    def abort(self) -> None:
        self.inner.abort()


class Gate:
    """Holds every snapshot transfer to ``node`` at its first write until ``open()``."""

    def __init__(self, net: MemoryNetwork, node: int) -> None:
        self.entered = threading.Event()
        self.released = threading.Event()
        transport = net.transport(node)
        inner = transport._snapshot_sink
        assert inner is not None

        def sink(msg: InstallSnapshot) -> _GatedSink:
            return _GatedSink(inner(msg), self.entered, self.released)

        transport._snapshot_sink = sink

    def open(self) -> None:
        self.released.set()


def _temporaries(root: Path) -> list[Path]:
    return sorted(root.glob("n*/snapshots/*.tmp"))


def _assert_no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


def _others(nodes: Nodes, server: RaftServer) -> list[RaftServer]:
    return [s for s in nodes.servers.values() if s is not server]


@contextlib.asynccontextmanager
async def _held_transfer(root: Path) -> AsyncIterator[tuple[Nodes, RaftServer, RaftServer, Gate]]:
    """Three nodes: the leader (second) is sending its snapshot to a follower (third) that fell
    behind a compaction, the transfer held at its first write until the gate (fourth) opens."""
    async with running(root, snapshot_entries=20, snapshot_retain=5) as nodes:
        leader = await nodes.leader()
        behind = _others(nodes, leader)[0]
        gate = Gate(nodes.net, behind.id)
        try:
            nodes.net.disconnect(behind.id)
            await propose(leader, 100)
            await eventually(lambda: leader.status().first_index
                             > behind.status().last_index + 1)
            nodes.net.connect(behind.id)
            await eventually(gate.entered.is_set, what="the transfer began")
            yield nodes, leader, behind, gate
        finally:
            gate.open()  # before the close: a held copy thread would outlive it


def test_heartbeats_keep_flowing_and_no_election_happens_while_a_large_snapshot_is_written(
        tmp_path: Path) -> None:
    async def body() -> None:
        clock = HeartbeatClock()
        async with running(tmp_path, machine=BigCounter, config=REALISTIC, net=clock,
                           snapshot_entries=50) as nodes:
            leader = await nodes.leader()
            term = leader.status().term
            await propose(leader, 50)
            await eventually(lambda: leader.status().snapshot_index > 0, timeout=30,
                             what="the leader's snapshot is durable and the log cut")
            ended = time.monotonic()
            machine = leader.state_machine
            assert isinstance(machine, BigCounter)
            began = machine.spans[0]
            # Longer than an election timeout: a loop stalled by the write would lose the lead.
            assert ended - began > REALISTIC.election_timeout, "the write was too quick"
            for server in _others(nodes, leader):
                await eventually(lambda s=server: s.status().snapshot_index > 0, timeout=30,
                                 what=f"node {server.id} took its snapshot")
            assert {s.status().term for s in nodes.servers.values()} == {term}
            for server in _others(nodes, leader):
                await eventually(lambda s=server: any(t > ended for t in clock.arrivals[s.id]),
                                 what=f"a heartbeat at node {server.id} after the write")
                seen = [t for t in clock.arrivals[server.id] if began <= t <= ended]
                marks = [began, *seen, ended]
                gap = max(b - a for a, b in itertools.pairwise(marks))
                assert gap < REALISTIC.election_timeout / 2, (server.id, gap, ended - began)
            assert leader.is_leader
            assert {s.status().term for s in nodes.servers.values()} == {term}

    run(body)


def test_a_restart_finishes_an_install_whose_snapshot_is_newer_than_the_log(
        tmp_path: Path) -> None:
    async def body() -> None:
        async with running(tmp_path, snapshot_entries=20, snapshot_retain=5) as nodes:
            leader = await nodes.leader()
            behind = _others(nodes, leader)[0]
            await propose(leader, 10)
            await eventually(lambda: behind.state_machine.value == 10)
            nodes.net.disconnect(behind.id)
            old_last = behind.status().last_index
            await behind.close()
            await propose(leader, 100)
            await eventually(lambda: leader.status().snapshot_index > old_last + 20)
            assert leader._snapshots is not None
            newest = leader._snapshots.store.metas()[0]
            data = Path(leader._snapshots.store.path(newest)).read_bytes()
            # What an install makes durable before cutting the log: the leader's file, verified
            # and renamed into the follower's store. The follower stopped right after that.
            store = SnapshotStore(tmp_path / f"n{behind.id}")
            incoming = store.receive()
            incoming.write(data)
            meta = incoming.finish()
            store.install(incoming)
            with store.open(meta) as reader:
                expected = int(reader.read())

            again = await nodes.start(behind.id)
            st = again.status()
            assert (st.snapshot_index, st.first_index, st.last_index, st.applied_index) == (
                meta.index, meta.index + 1, meta.index, meta.index), st
            assert again.state_machine.value == expected
            assert again.state_machine.applied == []
            nodes.net.connect(behind.id)
            await eventually(lambda: again.state_machine.value == 110, timeout=20)
            assert all(i > meta.index for i in again.state_machine.applied)

    run(body)


def test_an_install_snapshot_arriving_without_its_file_is_dropped_with_one_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        async with running(tmp_path, snapshot_entries=20, snapshot_retain=5) as nodes:
            leader = await nodes.leader()
            await propose(leader, 10)
            follower = _others(nodes, leader)[0]
            await eventually(lambda: follower.state_machine.value == 10)
            before = follower.status()
            # Newer term and far ahead: stepped, it would move the follower's term and log.
            meta = SnapshotMeta(index=before.last_index + 100, term=before.term + 1,
                                conf=ConfState(frozenset(nodes.ids)))
            msg = InstallSnapshot(term=before.term + 1, src=leader.id, dst=follower.id,
                                  snapshot=Snapshot(meta, b"999"))
            with caplog.at_level(logging.WARNING, logger="raftly.server"):
                nodes.net.transport(leader.id).send(msg)
                await eventually(lambda: any("dropped an InstallSnapshot" in r.getMessage()
                                             for r in caplog.records),
                                 what="the warning about the dropped message")
                await propose(leader, 5)  # a round trip after it: it was handled by then
                await eventually(lambda: follower.state_machine.value == 15)
            after = follower.status()
            assert after.term == before.term and after.leader == leader.id
            assert (after.snapshot_index, after.first_index) == (before.snapshot_index,
                                                                 before.first_index)
            assert after.last_index == before.last_index + 5
            assert follower.failure is None
            drops = [r for r in caplog.records if "dropped an InstallSnapshot" in r.getMessage()]
            assert len(drops) == 1 and drops[0].levelno == logging.WARNING

    run(body)


def test_proposals_overtaken_by_a_leaders_snapshot_end_with_outcome_unknown(
        tmp_path: Path) -> None:
    async def body() -> None:
        async with running(tmp_path, snapshot_entries=20, snapshot_retain=5) as nodes:
            old = await nodes.leader()
            await propose(old, 5)
            majority = _others(nodes, old)
            for server in majority:
                await eventually(lambda s=server: s.state_machine.value == 5)
            nodes.net.partition([old.id], [s.id for s in majority])
            # Never timed out: only the snapshot can end them.
            pending = [asyncio.ensure_future(old.propose(b"100", timeout=None))
                       for _ in range(3)]
            await eventually(lambda: old.status().last_index >= old.status().commit_index + 3)
            stale_last = old.status().last_index
            new = await eventually(lambda: next((s for s in majority if s.is_leader), None),
                                   what="a leader in the majority")
            await propose(new, 60)
            await eventually(lambda: new.status().first_index > stale_last + 1)
            nodes.net.heal()
            results = await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True),
                                             20)
            assert all(isinstance(r, OutcomeUnknown) for r in results), results
            await eventually(lambda: old.state_machine.value == 65, timeout=20)
            assert old._snapshots is not None and old._snapshots.stats["installed"] >= 1
            assert all(s.failure is None for s in nodes.servers.values())

    run(body)


def test_closing_a_server_while_it_writes_a_snapshot_is_clean_and_it_restarts(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        nodes = Nodes(tmp_path, n=1, machine=BigCounter, snapshot_entries=20)
        server = await nodes.start(1)
        await nodes.leader()
        await propose(server, 20)
        machine = server.state_machine
        assert isinstance(machine, BigCounter)
        await eventually(lambda: len(machine.spans) > 0, what="the snapshot write began")
        assert len(machine.spans) == 1, "the write ended before the close"
        began = time.monotonic()
        await server.close()
        assert time.monotonic() - began < 5
        assert server.failure is None
        assert _temporaries(tmp_path) == []
        again = await nodes.start(1)
        try:
            assert _temporaries(tmp_path) == []
            await nodes.leader()
            await eventually(lambda: again.state_machine.value == 20)
            await propose(again, 1)
            assert again.state_machine.value == 21
        finally:
            await again.close()

    run(body)
    _assert_no_errors_logged(caplog)


def test_closing_a_leader_while_it_sends_a_snapshot_is_clean_and_the_cluster_restarts(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        async with _held_transfer(tmp_path) as (nodes, leader, behind, gate):
            began = time.monotonic()
            await leader.close()
            assert time.monotonic() - began < 5
            assert leader.failure is None
            gate.open()
            await eventually(lambda: behind.state_machine.value == 100, timeout=20,
                             what="the next leader brought the follower up to date")
            await nodes.close()
            assert _temporaries(tmp_path) == []
        async with running(tmp_path, snapshot_entries=20, snapshot_retain=5) as again:
            assert _temporaries(tmp_path) == []
            await propose(await again.leader(), 1)
            for server in again.servers.values():
                await eventually(lambda s=server: s.state_machine.value == 101)

    run(body)
    _assert_no_errors_logged(caplog)


def test_a_follower_gets_the_right_state_when_the_leader_changes_during_its_transfer(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        async with _held_transfer(tmp_path) as (nodes, old, behind, gate):
            successor = next(s for s in _others(nodes, old) if s is not behind)
            old.transfer_leadership(successor.id)
            await eventually(lambda: successor.is_leader and not old.is_leader)
            gate.open()
            await propose(successor, 10)
            for server in nodes.servers.values():
                await eventually(lambda s=server: s.state_machine.value == 110, timeout=20)
            assert behind.status().snapshot_index > 0
            assert all(s.failure is None for s in nodes.servers.values())

    run(body)
    _assert_no_errors_logged(caplog)


def test_a_leader_keeps_the_snapshot_it_is_sending_and_the_entries_after_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        async with _held_transfer(tmp_path) as (nodes, leader, behind, gate):
            sending = leader.status().snapshot_index
            # Newer snapshots meanwhile: the file in flight is held against pruning (the store
            # keeps two), and the log is not cut past it, so the follower can go on from the
            # log once it has installed it instead of needing yet another snapshot.
            for _ in range(4):
                taken = leader.status().snapshot_index
                await propose(leader, 25)
                await eventually(lambda t=taken: leader.status().snapshot_index > t)
            assert leader.status().first_index <= sending + 1
            assert leader._snapshots is not None
            assert sending in {m.index for m in leader._snapshots.store.metas()}
            gate.open()
            await eventually(lambda: behind.state_machine.value == 200, timeout=20,
                             what="the follower caught up")
            assert behind._snapshots is not None and behind._snapshots.stats["installed"] == 1
            assert all(s.failure is None for s in nodes.servers.values())

    run(body)
    _assert_no_errors_logged(caplog)

"""SimCluster on real DiskStorage: a simulated crash loses exactly what the disk loses.

Each node's storage is reopened from its directory at every restart, after being abandoned the
way a killed process abandons it. The run must be identical, step for step, to the same seed on
MemoryStorage: both storages then keep and lose the same things across crashes.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from raftly.core.types import ConfState, Entry, HardState, InitialState, SnapshotMeta
from raftly.storage import DiskStorage, MemoryStorage, Storage
from raftly.testing import SimCluster


class RecordingStorage:
    """Wraps a storage and records what every load found; ``reopen`` plays the crash."""

    def __init__(self, open_storage: Callable[[], Storage], reopen: bool) -> None:
        self.open_storage = open_storage
        self.inner = open_storage()
        self.reopen = reopen
        self.loaded: list[InitialState] = []

    @property
    def bootstrapped(self) -> bool:
        return self.inner.bootstrapped

    def bootstrap(self, conf: ConfState) -> None:
        self.inner.bootstrap(conf)

    def load(self) -> InitialState:
        if self.loaded and self.reopen:
            assert isinstance(self.inner, DiskStorage)
            self.inner.abandon()
            self.inner = self.open_storage()
        self.loaded.append(self.inner.load())
        return self.loaded[-1]

    def save(self, hard_state: HardState | None, entries: Sequence[Entry]) -> None:
        self.inner.save(hard_state, entries)

    def compact(self, meta: SnapshotMeta) -> None:
        self.inner.compact(meta)

    @property
    def log_bytes(self) -> int:
        return self.inner.log_bytes

    # The read side the node reads its durable log through.
    @property
    def first_index(self) -> int:
        return self.inner.first_index

    @property
    def last_index(self) -> int:
        return self.inner.last_index

    def term(self, index: int) -> int:
        return self.inner.term(index)

    def entries(self, lo: int, hi: int) -> list[Entry]:
        return self.inner.entries(lo, hi)

    def close(self) -> None:
        self.inner.close()


def crashy_run(seed: int, storage_factory: Callable[[int], Storage],
               snapshot_every: int | None = None) -> SimCluster:
    rng = random.Random(seed)
    c = SimCluster(n=3, seed=seed, storage_factory=storage_factory, snapshot_every=snapshot_every)
    for step in range(30):
        leader = c.leader()
        if leader is not None:
            for k in range(rng.randint(0, 5)):
                c.start(leader, f"{step}.{k}".encode())
        c.run(rng.uniform(0.05, 1.0))
        victim = rng.randrange(3)
        if rng.random() < 0.3:
            c.restart(victim)
    c.check_one_leader(timeout=10.0)
    c.one(b"last", 3, retry=True)
    return c


@pytest.mark.parametrize("snapshot_every", [None, 3], ids=["no-snapshots", "snapshots"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_crash_on_disk_storage_loses_what_memory_storage_loses(
        seed: int, snapshot_every: int | None, tmp_path: Path) -> None:
    disks: list[RecordingStorage] = []
    memories: list[RecordingStorage] = []

    def disk(i: int) -> Storage:
        disks.append(RecordingStorage(lambda: DiskStorage(tmp_path / f"n{i}", fsync="never"),
                                      reopen=True))
        return disks[-1]

    def memory(_i: int) -> Storage:
        memories.append(RecordingStorage(MemoryStorage, reopen=False))
        return memories[-1]

    on_disk = crashy_run(seed, disk, snapshot_every)
    in_memory = crashy_run(seed, memory, snapshot_every)
    assert sum(len(d.loaded) for d in disks) > 3 + 3  # restarts really reopened directories
    for d, m in zip(disks, memories, strict=True):
        assert d.loaded == m.loaded  # every restart found the same durable state
    assert on_disk.message_count() == in_memory.message_count()
    assert on_disk.steps == in_memory.steps
    for i in range(3):
        assert on_disk.applied(i) == in_memory.applied(i)
        assert on_disk.snapshots_installed(i) == in_memory.snapshots_installed(i)
    if snapshot_every is not None:  # logs were really compacted, on disk too
        assert all(d.first_index > 1 for d in disks)
    for d in disks:
        d.close()


def test_a_crash_during_a_slow_save_loses_that_save_and_nothing_else() -> None:
    c = SimCluster(n=3, seed=4, disk_latency=(0.2, 0.2))
    leader = c.check_one_leader()
    c.one(b"durable", 3, retry=True)
    index, _, ok = c.start(leader, b"in flight")
    assert ok
    c.run(0.05)  # the followers' saves are under way, and the leader's own
    c.crash(leader)
    c.restart(leader)
    log = c.node(leader).log
    assert log.last_index < index  # the save that had not completed is gone
    c.run(5.0)
    # The followers' copies survived: the entry still commits, under the next leader.
    assert any(command == b"in flight" for _, command in c.applied(leader))


def test_heartbeats_flow_while_a_save_is_slower_than_the_election_timeout() -> None:
    c = SimCluster(n=3, seed=6)
    leader = c.check_one_leader()
    term = c.term(leader)
    c.set_disk_latency((3.0, 3.0), leader)  # three election timeouts and more
    c.start(leader, b"slow")
    c.run(10.0)
    assert c.leader() == leader and c.term(leader) == term
    assert [cmd for _, cmd in c.applied(leader)] == [b"slow"]


def test_followers_with_saves_slower_than_the_election_timeout_keep_their_leader() -> None:
    c = SimCluster(n=3, seed=8)
    leader = c.check_one_leader()
    term = c.term(leader)
    for i in range(3):
        if i != leader:
            c.set_disk_latency((1.5, 1.5), i)
    for k in range(5):
        c.start(leader, f"w{k}".encode())
        c.run(2.0)
    assert c.leader() == leader and all(c.term(i) == term for i in range(3))
    assert len(c.applied(leader)) == 5

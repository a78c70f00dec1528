"""DiskStorage against MemoryStorage as a model, on random sequences of operations.

Each step is a save (valid or not), a compaction or a restart; after every step both storages
must load the same state, and a call rejected by one must be rejected by the other.
"""

from __future__ import annotations

import shutil
import tempfile

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from raftly.core.types import ConfState, Entry, EntryType, HardState, SnapshotMeta
from raftly.storage import DiskStorage, MemoryStorage, StorageError

CONF = ConfState(frozenset({1, 2}))


class DiskMatchesMemory(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="raftly-model-")
        self.segment_size = 160
        self.disk = DiskStorage(self.dir, fsync="never", segment_size=self.segment_size)
        self.memory = MemoryStorage()
        self.disk.bootstrap(CONF)
        self.memory.bootstrap(CONF)
        self.term = 1

    def teardown(self) -> None:
        self.disk.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def both(self, call: str, *args: object) -> None:
        outcomes = []
        for storage in (self.memory, self.disk):
            try:
                getattr(storage, call)(*args)
                outcomes.append(None)
            except StorageError as exc:
                outcomes.append(type(exc))
        assert outcomes[0] == outcomes[1], f"{call}{args}: memory {outcomes[0]}, disk {outcomes[1]}"

    @rule(data=st.data())
    def save(self, data: st.DataObject) -> None:
        snap = self.memory.load().snapshot.index
        last = self.memory.last_index
        # Mostly valid starts (append or overwrite), sometimes a gap or below the snapshot.
        first = data.draw(st.integers(max(1, snap - 1), last + 2), label="first")
        count = data.draw(st.integers(0, 6), label="count")
        self.term += data.draw(st.integers(0, 1), label="term bump")
        entries = [
            Entry(
                first + i,
                self.term,
                data.draw(st.binary(max_size=40), label="data"),
                data.draw(st.sampled_from(EntryType), label="type"),
            )
            for i in range(count)
        ]
        hard_state = data.draw(
            st.none()
            | st.builds(
                HardState,
                st.just(self.term),
                st.none() | st.integers(0, 3),
                st.integers(0, first + count + 1),
            ),
            label="hard state",
        )
        self.both("save", hard_state, entries)

    @rule(data=st.data())
    def compact(self, data: st.DataObject) -> None:
        state = self.memory.load()
        index = data.draw(st.integers(0, self.memory.last_index + 3), label="index")
        held = {e.index: e.term for e in state.entries}
        term = data.draw(st.sampled_from([held.get(index, self.term), self.term + 1]), label="t")
        self.both("compact", SnapshotMeta(index, term, CONF))

    @rule()
    def restart(self) -> None:
        # A clean restart: both write the lazily kept commit index at close.
        self.memory.close()
        self.disk.close()
        self.disk = DiskStorage(self.dir, fsync="never", segment_size=self.segment_size)

    @invariant()
    def same_state(self) -> None:
        expected = self.memory.load()
        assert self.disk.load() == expected
        assert self.disk.last_index == self.memory.last_index
        for entry in expected.entries[-3:]:
            assert self.disk.term(entry.index) == entry.term
        if expected.entries:
            lo = expected.entries[len(expected.entries) // 2].index
            assert self.disk.entries(lo, self.disk.last_index + 1) == [
                e for e in expected.entries if e.index >= lo
            ]


DiskMatchesMemory.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_disk_matches_memory = DiskMatchesMemory.TestCase

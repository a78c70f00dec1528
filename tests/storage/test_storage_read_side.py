"""The read side of the Storage contract (``LogReader``), which a ``RaftNode`` reads through:
the same answers from MemoryStorage and DiskStorage, before and after a restart, an overwrite
and a compaction."""

from __future__ import annotations

import pytest
from conftest import Harness
from storage_helpers import ents

from raftly.core.types import ConfState, HardState, SnapshotMeta
from raftly.storage import StorageError

CONF = ConfState(frozenset({1, 2, 3}))


def test_an_empty_log_ends_at_the_snapshot(harness: Harness) -> None:
    harness.storage.bootstrap(CONF)
    s = harness.storage
    assert (s.first_index, s.last_index, s.term(0)) == (1, 0, 0)
    assert s.entries(1, 1) == []


def test_reads_return_what_was_saved_and_survive_a_restart(harness: Harness) -> None:
    harness.storage.bootstrap(CONF)
    harness.storage.save(HardState(2, 1, 0), ents(1, 3, 1) + ents(4, 6, 2))
    for restart in (False, True):
        s = harness.restart() if restart else harness.storage
        assert (s.first_index, s.last_index) == (1, 6)
        assert [s.term(i) for i in range(1, 7)] == [1, 1, 1, 2, 2, 2]
        assert s.entries(2, 5) == ents(2, 3, 1) + ents(4, 4, 2)
        assert s.entries(1, 7) == s.load().entries


def test_reads_follow_an_overwritten_suffix(harness: Harness) -> None:
    harness.storage.bootstrap(CONF)
    harness.storage.save(HardState(1, 1, 0), ents(1, 5, 1))
    harness.storage.save(HardState(2, None, 0), ents(3, 3, 2))
    s = harness.storage
    assert s.last_index == 3
    assert [s.term(i) for i in (1, 2, 3)] == [1, 1, 2]
    assert s.entries(1, 4) == ents(1, 2, 1) + ents(3, 3, 2)


def test_reads_after_compaction_start_after_the_snapshot(harness: Harness) -> None:
    harness.storage.bootstrap(CONF)
    harness.storage.save(HardState(1, 1, 4), ents(1, 6, 1))
    harness.storage.compact(SnapshotMeta(4, 1, CONF))
    for restart in (False, True):
        s = harness.restart() if restart else harness.storage
        assert (s.first_index, s.last_index, s.term(4)) == (5, 6, 1)
        assert s.entries(5, 7) == ents(5, 6, 1)


@pytest.mark.parametrize(("lo", "hi"), [(0, 2), (3, 5), (2, 4)])
def test_reading_an_entry_not_held_raises(harness: Harness, lo: int, hi: int) -> None:
    harness.storage.bootstrap(CONF)
    harness.storage.save(HardState(1, 1, 0), ents(1, 2, 1))
    with pytest.raises(StorageError):
        harness.storage.entries(lo, hi)
    with pytest.raises(StorageError):
        harness.storage.term(3)

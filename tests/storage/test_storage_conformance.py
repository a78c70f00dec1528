"""The Storage contract, checked against MemoryStorage and DiskStorage alike.

Every durable-state assertion is made after ``harness.restart()``, which for the disk storage
means a close and a fresh open of the data directory.
"""

from __future__ import annotations

import pytest
from conf_strategies import addressed
from conftest import Harness
from storage_helpers import ents

from raftly.core.types import ConfState, Entry, EntryType, HardState, SnapshotMeta
from raftly.storage import StorageError

CONF = ConfState(frozenset({1, 2, 3}))


def boot(h: Harness) -> None:
    h.storage.bootstrap(CONF)


def test_load_before_bootstrap_raises(harness: Harness) -> None:
    with pytest.raises(StorageError, match="bootstrap"):
        harness.storage.load()


def test_bootstrap_is_durable(harness: Harness) -> None:
    boot(harness)
    state = harness.restart().load()
    assert state.hard_state == HardState()
    assert state.snapshot == SnapshotMeta(conf=CONF)
    assert state.entries == []


def test_a_configuration_with_learners_and_addresses_survives_bootstrap_and_compaction(
    harness: Harness,
) -> None:
    first = addressed({1})
    harness.storage.bootstrap(first)
    assert harness.restart().load().snapshot == SnapshotMeta(conf=first)
    harness.storage.save(HardState(1, 1, 3), ents(1, 3, 1))
    later = SnapshotMeta(3, 1, addressed({1}, {4}))
    harness.storage.compact(later)
    assert harness.restart().load().snapshot == later


def test_bootstrap_twice_raises(harness: Harness) -> None:
    boot(harness)
    with pytest.raises(StorageError, match="already"):
        harness.storage.bootstrap(CONF)
    with pytest.raises(StorageError, match="already"):
        harness.restart().bootstrap(CONF)


def test_save_entries_and_hard_state(harness: Harness) -> None:
    boot(harness)
    harness.storage.save(HardState(1, 2, 0), ents(1, 3, 1))
    harness.storage.save(HardState(1, 2, 3), ents(4, 6, 1))
    state = harness.restart().load()
    assert state.entries == ents(1, 6, 1)
    assert state.hard_state == HardState(1, 2, 3)


def test_commit_alone_waits_for_a_vote_change_or_close(harness: Harness) -> None:
    boot(harness)
    harness.storage.save(HardState(1, 2, 0), ents(1, 3, 1))
    harness.storage.save(HardState(1, 2, 3), [])
    if harness.kind == "memory":  # load() without close() is what a crash leaves
        assert harness.storage.load().hard_state == HardState(1, 2, 0)
    harness.storage.save(HardState(2, None, 3), [])
    assert harness.storage.load().hard_state == HardState(2, None, 3)
    harness.storage.save(HardState(2, None, 3), ents(4, 4, 2))
    harness.storage.save(HardState(2, None, 4), [])
    assert harness.restart().load().hard_state == HardState(2, None, 4)


def test_vote_alone_is_durable(harness: Harness) -> None:
    boot(harness)
    harness.storage.save(HardState(term=5, vote=3), [])
    assert harness.restart().load().hard_state == HardState(5, 3, 0)


def test_none_hard_state_keeps_the_previous_one(harness: Harness) -> None:
    boot(harness)
    harness.storage.save(HardState(2, 1, 0), ents(1, 2, 2))
    harness.storage.save(None, ents(3, 4, 2))
    state = harness.restart().load()
    assert state.hard_state == HardState(2, 1, 0)
    assert [e.index for e in state.entries] == [1, 2, 3, 4]


def test_entry_fields_round_trip(harness: Harness) -> None:
    boot(harness)
    written = [
        Entry(1, 1, b"", EntryType.NOOP),
        Entry(2, 1, CONF.encode(), EntryType.CONFIG),
        Entry(3, 7, bytes(range(256)), EntryType.COMMAND),
        Entry(4, 2**40, b"\x00" * 1000),
    ]
    harness.storage.save(None, written)
    assert harness.restart().load().entries == written


def test_overlap_replaces_the_suffix(harness: Harness) -> None:
    boot(harness)
    harness.storage.save(HardState(1, None, 2), ents(1, 6, 1))
    harness.storage.save(HardState(2, None, 2), ents(3, 4, 2))
    assert harness.restart().load().entries == ents(1, 2, 1) + ents(3, 4, 2)


def test_overlap_from_the_first_entry_empties_the_log_first(harness: Harness) -> None:
    boot(harness)
    harness.storage.save(HardState(1, None, 0), ents(1, 6, 1))
    harness.storage.save(HardState(3, None, 0), ents(1, 1, 3))
    assert harness.restart().load().entries == ents(1, 1, 3)


def test_committed_entries_are_never_replaced(harness: Harness) -> None:
    boot(harness)
    harness.storage.save(HardState(1, None, 3), ents(1, 6, 1))
    for first in (1, 3):
        with pytest.raises(StorageError, match="committed"):
            harness.storage.save(None, ents(first, 6, 2))
    # Nor may a snapshot contradict a committed entry.
    with pytest.raises(StorageError, match="committed"):
        harness.storage.compact(SnapshotMeta(2, 2, CONF))
    harness.storage.save(None, ents(4, 4, 2))
    assert harness.restart().load().entries == ents(1, 3, 1) + ents(4, 4, 2)


@pytest.mark.parametrize(
    ("batch", "match"),
    [
        (ents(5, 5, 1), "does not follow"),  # gap: last is 3
        ([Entry(4, 1), Entry(6, 1)], "not consecutive"),
        ([Entry(4, 1), Entry(4, 1)], "not consecutive"),
    ],
)
def test_bad_appends_are_rejected_and_change_nothing(
    harness: Harness, batch: list[Entry], match: str
) -> None:
    boot(harness)
    harness.storage.save(HardState(1, None, 1), ents(1, 3, 1))
    with pytest.raises(StorageError, match=match):
        harness.storage.save(HardState(9, 9, 2), batch)
    state = harness.restart().load()
    assert state.entries == ents(1, 3, 1)
    assert state.hard_state == HardState(1, None, 1)


def test_append_at_or_below_the_snapshot_is_rejected(harness: Harness) -> None:
    boot(harness)
    harness.storage.save(None, ents(1, 5, 1))
    harness.storage.compact(SnapshotMeta(3, 1, CONF))
    for index in (1, 3):
        with pytest.raises(StorageError, match="does not follow"):
            harness.storage.save(None, ents(index, 6, 2))
    harness.storage.save(None, ents(4, 6, 2))
    assert harness.restart().load().entries == ents(4, 6, 2)


def test_commit_beyond_the_log_is_rejected(harness: Harness) -> None:
    boot(harness)
    with pytest.raises(StorageError, match="commit"):
        harness.storage.save(HardState(1, None, 1), [])
    with pytest.raises(StorageError, match="commit"):
        harness.storage.save(HardState(1, None, 4), ents(1, 3, 1))
    assert harness.restart().load().entries == []
    # Up to the last entry of the same call is fine: entries are durable first.
    harness.storage.save(HardState(1, None, 3), ents(1, 3, 1))
    assert harness.restart().load().hard_state.commit == 3


def test_compact_keeps_the_suffix_that_agrees(harness: Harness) -> None:
    boot(harness)
    harness.storage.save(HardState(1, None, 10), ents(1, 10, 1, size=60))
    meta = SnapshotMeta(6, 1, CONF)
    harness.storage.compact(meta)
    state = harness.restart().load()
    assert state.snapshot == meta
    assert state.entries == ents(7, 10, 1, size=60)
    assert state.hard_state.commit == 10
    harness.storage.compact(SnapshotMeta(4, 1, CONF))  # older than what is held: no-op
    assert harness.restart().load().snapshot == meta


def test_compact_drops_a_log_that_disagrees(harness: Harness) -> None:
    boot(harness)
    harness.storage.save(None, ents(1, 10, 1, size=60))
    harness.storage.compact(SnapshotMeta(6, 2, CONF))  # the log has term 1 at index 6
    state = harness.restart().load()
    assert state.entries == []
    harness.storage.save(None, ents(7, 7, 2))
    assert harness.restart().load().entries == ents(7, 7, 2)


def test_compact_beyond_the_log(harness: Harness) -> None:
    boot(harness)
    harness.storage.save(HardState(1, None, 3), ents(1, 3, 1))
    harness.storage.compact(SnapshotMeta(20, 4, CONF))
    # The snapshot covers the commit index and beyond; the next append follows the snapshot.
    harness.storage.save(HardState(4, None, 20), [])
    with pytest.raises(StorageError, match="does not follow"):
        harness.storage.save(None, ents(4, 4, 4))
    harness.storage.save(None, ents(21, 22, 4))
    state = harness.restart().load()
    assert state.snapshot.index == 20
    assert state.entries == ents(21, 22, 4)
    assert state.hard_state == HardState(4, None, 20)


def test_close_then_reopen_keeps_everything(harness: Harness) -> None:
    boot(harness)
    harness.storage.save(HardState(3, 1, 2), ents(1, 4, 3))
    harness.storage.close()
    state = harness.restart().load()
    assert state.entries == ents(1, 4, 3)
    assert state.hard_state == HardState(3, 1, 2)


def test_compact_installs_a_snapshot_beyond_the_commit_and_the_log(harness: Harness) -> None:
    boot(harness)
    harness.storage.save(HardState(1, None, 2), ents(1, 5, 1))
    meta = SnapshotMeta(9, 3, ConfState(frozenset({1, 2})))
    harness.storage.compact(meta)  # a leader's snapshot: commit 2, log to 5, both behind it
    assert (harness.storage.first_index, harness.storage.last_index) == (10, 9)
    assert harness.storage.term(9) == 3
    assert harness.storage.log_bytes == 0
    # The commit index is raised to the snapshot, so a save naming it is valid at once.
    harness.storage.save(HardState(3, None, 9), [])
    harness.storage.save(HardState(3, None, 11), ents(10, 11, 3))
    state = harness.restart().load()
    assert state.snapshot == meta
    assert state.entries == ents(10, 11, 3)
    assert state.hard_state == HardState(3, None, 11)


def test_compact_installing_a_snapshot_raises_the_commit_kept_at_close(harness: Harness) -> None:
    boot(harness)
    harness.storage.save(HardState(1, None, 1), ents(1, 3, 1))
    harness.storage.compact(SnapshotMeta(7, 2, CONF))
    assert harness.restart().load().hard_state == HardState(1, None, 7)


def test_compact_installs_a_snapshot_over_an_uncommitted_suffix_that_disagrees(
    harness: Harness,
) -> None:
    boot(harness)
    harness.storage.save(HardState(1, None, 2), ents(1, 6, 1))
    harness.storage.compact(SnapshotMeta(4, 2, CONF))  # index 4 is uncommitted and of term 1
    assert harness.storage.last_index == 4
    state = harness.restart().load()
    assert (state.snapshot.index, state.entries, state.hard_state.commit) == (4, [], 4)


def test_log_bytes_follow_appends_overwrites_and_compaction(harness: Harness) -> None:
    boot(harness)
    assert harness.storage.log_bytes == 0
    harness.storage.save(HardState(1, None, 0), ents(1, 10, 1, size=100))
    full = harness.storage.log_bytes
    assert full >= 10 * 100
    harness.storage.save(HardState(2, None, 0), ents(6, 6, 2, size=100))
    assert harness.storage.log_bytes < full
    harness.storage.save(HardState(2, None, 6), ents(7, 40, 2, size=100))
    grown = harness.storage.log_bytes
    assert grown >= 40 * 100
    harness.storage.compact(SnapshotMeta(35, 2, CONF))
    assert 5 * 100 <= harness.storage.log_bytes < grown
    assert harness.restart().log_bytes == harness.storage.log_bytes
    harness.storage.compact(SnapshotMeta(38, 2, CONF))
    assert 2 * 100 <= harness.storage.log_bytes < 2 * 100 + 512  # at most one partial segment
    harness.storage.compact(SnapshotMeta(40, 2, CONF))
    assert harness.storage.log_bytes == 0

"""RaftLog: positions, term lookup, slicing limits, merge, truncation, commit and hand-out."""

from __future__ import annotations

import pytest
from core_helpers import entries_of
from hypothesis import given
from hypothesis import strategies as st

from raftly.core import Entry, InvariantError, SnapshotMeta
from raftly.core.log import MemoryLog, RaftLog


def make_log(*terms: int, commit: int = 0, snapshot: tuple[int, int] = (0, 0)) -> RaftLog:
    index, term = snapshot
    return RaftLog(SnapshotMeta(index, term), entries_of(*terms, start=index + 1), commit)


def terms_of(log: RaftLog) -> list[int]:
    return [log.entry(i).term for i in range(log.first_index, log.last_index + 1)]


# -- construction and reading -------------------------------------------------------------------


def test_empty_log_positions() -> None:
    log = make_log()
    assert (log.first_index, log.last_index, log.last_term) == (1, 0, 0)
    assert (log.commit, log.applied, log.stable_index, log.unstable_from) == (0, 0, 0, 1)


def test_recovered_entries_count_as_stable_and_nothing_is_unstable() -> None:
    log = make_log(1, 1, 2, commit=2)
    assert log.stable_index == 3
    assert not log.has_unstable()
    assert log.take_unstable() == []
    assert log.commit == 2


def test_constructor_rejects_a_gap_in_the_entries() -> None:
    with pytest.raises(InvariantError):
        RaftLog(SnapshotMeta(), [Entry(1, 1), Entry(3, 1)], 0)
    with pytest.raises(InvariantError):
        RaftLog(SnapshotMeta(5, 2), [Entry(5, 2)], 0)


def test_constructor_rejects_commit_beyond_last_entry() -> None:
    with pytest.raises(InvariantError):
        make_log(1, 1, commit=3)


def test_snapshot_positions_and_commit_floor() -> None:
    log = make_log(3, 4, snapshot=(10, 3))
    assert (log.first_index, log.last_index, log.last_term) == (11, 12, 4)
    assert log.commit == 10 and log.applied == 10  # the snapshot is committed and applied
    assert make_log(snapshot=(10, 3)).last_term == 3


def test_term_at_covers_snapshot_entries_and_out_of_range() -> None:
    log = make_log(3, 4, snapshot=(10, 3))
    assert log.term_at(10) == 3
    assert log.term_at(11) == 3
    assert log.term_at(12) == 4
    assert log.term_at(9) is None  # compacted
    assert log.term_at(13) is None  # not yet in the log
    assert make_log().term_at(0) == 0


def test_matches_compares_term_at_index() -> None:
    log = make_log(1, 2)
    assert log.matches(0, 0) and log.matches(2, 2)
    assert not log.matches(2, 1) and not log.matches(3, 2)


def test_is_up_to_date_compares_last_term_then_last_index() -> None:
    log = make_log(1, 1, 2)  # last (3, 2)
    assert log.is_up_to_date(3, 2)
    assert log.is_up_to_date(4, 2)
    assert not log.is_up_to_date(2, 2)
    assert log.is_up_to_date(1, 3)  # a higher last term wins even with a shorter log
    assert not log.is_up_to_date(9, 1)  # a lower last term loses even with a longer log


@given(
    st.lists(st.integers(1, 5), max_size=8).map(sorted),
    st.integers(0, 10),
    st.integers(0, 6),
)
def test_is_up_to_date_is_lexicographic_order_on_last_term_then_index(
    terms: list[int], last_index: int, last_term: int
) -> None:
    log = make_log(*terms)
    expected = (last_term, last_index) >= (log.last_term, log.last_index)
    assert log.is_up_to_date(last_index, last_term) is expected


def test_first_index_of_term_finds_start_of_the_run() -> None:
    log = make_log(1, 1, 2, 2, 2, 4)
    assert log.first_index_of_term(5) == 3
    assert log.first_index_of_term(3) == 3
    assert log.first_index_of_term(2) == 1
    assert log.first_index_of_term(6) == 6


def test_last_index_of_term_searches_at_or_below_bound() -> None:
    log = make_log(1, 1, 2, 2, 2, 4)
    assert log.last_index_of_term(2, at_most=6) == 5
    assert log.last_index_of_term(2, at_most=4) == 4
    assert log.last_index_of_term(1, at_most=6) == 2
    assert log.last_index_of_term(3, at_most=6) is None
    assert log.last_index_of_term(4, at_most=5) is None
    assert log.last_index_of_term(5, at_most=99) is None


# -- slicing ------------------------------------------------------------------------------------


def test_slice_is_inclusive_and_limited_by_count() -> None:
    log = make_log(1, 1, 1, 1, 1)
    assert [e.index for e in log.slice(2, 4)] == [2, 3, 4]
    assert [e.index for e in log.slice(2, 5, max_count=2)] == [2, 3]
    assert log.slice(4, 3) == []


def test_slice_limited_by_bytes_but_always_returns_one_entry() -> None:
    entries = [Entry(i, 1, b"x" * 10) for i in range(1, 6)]
    log = RaftLog(SnapshotMeta(), entries, 0)
    assert [e.index for e in log.slice(1, 5, max_bytes=25)] == [1, 2]
    assert [e.index for e in log.slice(1, 5, max_bytes=30)] == [1, 2, 3]
    assert [e.index for e in log.slice(1, 5, max_bytes=1)] == [1]  # one oversized entry moves
    assert [e.index for e in log.slice(1, 5, max_count=2, max_bytes=1000)] == [1, 2]


def test_slice_of_compacted_entries_raises() -> None:
    log = make_log(3, snapshot=(10, 3))
    with pytest.raises(InvariantError):
        log.slice(10, 11)


@given(
    st.lists(st.binary(max_size=20), min_size=1, max_size=15),
    st.integers(1, 20),
    st.integers(1, 100),
)
def test_slice_respects_limits_and_makes_progress(
    payloads: list[bytes], max_count: int, max_bytes: int
) -> None:
    log = RaftLog(SnapshotMeta(), [Entry(i + 1, 1, p) for i, p in enumerate(payloads)], 0)
    got = log.slice(1, log.last_index, max_count, max_bytes)
    assert got == [log.entry(i) for i in range(1, len(got) + 1)]  # a prefix, in order
    assert 1 <= len(got) <= max_count
    assert len(got) == 1 or sum(len(e.data) for e in got) <= max_bytes
    if len(got) < min(max_count, len(payloads)):  # cut by bytes: the next entry would not fit
        assert sum(len(e.data) for e in log.slice(1, len(got) + 1)) > max_bytes


# -- writing ------------------------------------------------------------------------------------


def test_append_must_follow_last_index() -> None:
    log = make_log(1)
    log.append(entries_of(1, start=2))
    assert log.last_index == 2
    with pytest.raises(InvariantError):
        log.append(entries_of(1, start=4))


def test_merge_of_entries_already_held_changes_nothing() -> None:
    log = make_log(1, 1, 1, 1)
    assert log.merge(1, entries_of(1, 1, start=2)) == 3
    assert terms_of(log) == [1, 1, 1, 1]
    assert not log.has_unstable()


def test_merge_appends_new_entries_after_held_ones() -> None:
    log = make_log(1, 1)
    assert log.merge(1, entries_of(1, 2, 2, start=2)) == 4
    assert terms_of(log) == [1, 1, 2, 2]
    assert [e.index for e in log.take_unstable()] == [3, 4]


def test_merge_truncates_only_from_the_first_real_conflict() -> None:
    log = make_log(1, 1, 1, 1, 1)
    assert log.merge(1, entries_of(1, 3, start=2)) == 3
    assert terms_of(log) == [1, 1, 3]
    assert [e.index for e in log.take_unstable()] == [3]


def test_merge_refuses_to_replace_a_committed_entry() -> None:
    log = make_log(1, 1, 1, commit=2)
    with pytest.raises(InvariantError):
        log.merge(1, entries_of(2, start=2))
    assert terms_of(log) == [1, 1, 1]


@st.composite
def leader_and_follower(draw: st.DrawFn) -> tuple[list[int], list[int], int, int, int]:
    """A leader log, a follower log sharing a prefix of it, a matching prev_index, a run length."""
    leader = sorted(draw(st.lists(st.integers(1, 4), max_size=10)))
    shared = draw(st.integers(0, len(leader)))
    # The follower holds the shared prefix, then a divergent suffix of terms the leader lacks.
    own = sorted(draw(st.lists(st.integers(11, 14), max_size=6)))
    follower = leader[:shared] + own
    prev = draw(st.integers(0, shared))
    count = draw(st.integers(0, len(leader) - prev))
    commit = draw(st.integers(0, prev))
    return leader, follower, prev, count, commit


@given(leader_and_follower())
def test_merge_matches_a_list_model(case: tuple[list[int], list[int], int, int, int]) -> None:
    leader, follower, prev, count, commit = case
    log = make_log(*follower, commit=commit)
    sent = entries_of(*leader[prev : prev + count], start=prev + 1)
    model = list(follower)
    for n, entry in enumerate(sent):
        i = entry.index - 1
        if i < len(model) and model[i] == entry.term:
            continue
        model = model[:i] + [e.term for e in sent[n:]]
        break

    assert log.merge(prev, sent) == prev + count
    assert terms_of(log) == model
    assert terms_of(log)[prev : prev + count] == leader[prev : prev + count]
    assert terms_of(log)[:commit] == follower[:commit]  # never below commit
    if all(e.index <= len(follower) and follower[e.index - 1] == e.term for e in sent):
        assert terms_of(log) == follower  # nothing new, nothing conflicting: untouched


def test_truncate_from_refuses_committed_index() -> None:
    log = make_log(1, 1, 1, commit=2)
    with pytest.raises(InvariantError):
        log.truncate_from(2)
    log.truncate_from(3)
    assert log.last_index == 2


def test_truncate_from_pulls_back_stable_and_unstable_positions() -> None:
    log = make_log(1, 1, 1, 1)
    log.truncate_from(3)
    assert (log.stable_index, log.unstable_from, log.last_index) == (2, 3, 2)


def test_commit_to_never_moves_backwards_nor_past_last_index() -> None:
    log = make_log(1, 1, 1)
    assert log.commit_to(2)
    assert not log.commit_to(1)
    assert not log.commit_to(2)
    assert log.commit == 2
    with pytest.raises(InvariantError):
        log.commit_to(4)


# -- handing out --------------------------------------------------------------------------------


def test_take_unstable_hands_each_entry_out_once() -> None:
    log = make_log(1)
    log.append(entries_of(1, 1, start=2))
    assert log.has_unstable()
    assert [e.index for e in log.take_unstable()] == [2, 3]
    assert not log.has_unstable()
    assert log.take_unstable() == []
    log.append(entries_of(2, start=4))
    assert [e.index for e in log.take_unstable()] == [4]


def test_stable_to_ignores_an_entry_replaced_since() -> None:
    log = make_log(1)
    log.append(entries_of(1, 1, start=2))
    log.take_unstable()
    log.merge(2, entries_of(2, start=3))  # 3@1 is replaced by 3@2
    log.stable_to(3, 1)  # the driver made the batch ending at 3@1 durable
    assert log.stable_index < 3
    log.stable_to(3, 2)
    assert log.stable_index == 3


def test_take_committed_hands_out_each_committed_entry_once_in_order() -> None:
    log = make_log(1, 1, 1, 1)
    assert not log.has_committed() and log.take_committed() == []
    log.commit_to(2)
    assert log.has_committed()
    assert [e.index for e in log.take_committed()] == [1, 2]
    assert log.take_committed() == []
    log.commit_to(4)
    assert [e.index for e in log.take_committed()] == [3, 4]
    assert log.applied == 4 and not log.has_committed()


# -- the durable half read through storage ---------------------------------------------------


def log_over(storage: MemoryLog, commit: int = 0) -> RaftLog:
    return RaftLog(storage.snapshot, [], commit, storage)


def test_a_log_over_storage_starts_where_the_storage_ends() -> None:
    storage = MemoryLog(SnapshotMeta(), entries_of(1, 1, 2))
    log = log_over(storage, commit=2)
    assert (log.last_index, log.last_term, log.stable_index, log.commit) == (3, 2, 3, 2)
    assert log.slice(1, 3) == entries_of(1, 1, 2)
    assert log.take_committed() == entries_of(1, 1)


def test_entries_stay_in_memory_until_stable_then_are_read_from_storage() -> None:
    storage = MemoryLog(SnapshotMeta(), entries_of(1))
    log = log_over(storage)
    log.append(entries_of(1, 2, start=2))
    assert log.slice(1, 3) == entries_of(1, 1, 2)  # one from storage, two from memory
    handed_out = log.take_unstable()
    storage.save(handed_out)
    log.stable_to(3, 2)
    assert log.stable_index == 3 and not log.has_unstable()
    storage.save([Entry(2, 9, b"changed behind the log's back")])
    assert log.term_at(2) == 9  # proof that the durable part is read from storage, not memory


def test_a_conflict_below_the_durable_tail_shadows_storage_until_saved() -> None:
    storage = MemoryLog(SnapshotMeta(), entries_of(1, 1, 1, 1, 1))
    log = log_over(storage, commit=2)
    assert log.merge(2, entries_of(2, 2, start=3)) == 4
    assert (log.last_index, log.term_at(3), log.term_at(5)) == (4, 2, None)
    assert log.stable_index == 2
    assert log.slice(1, 5) == entries_of(1, 1) + entries_of(2, 2, start=3)
    handed_out = log.take_unstable()
    assert handed_out == entries_of(2, 2, start=3)
    storage.save(handed_out)
    log.stable_to(4, 2)
    assert (log.stable_index, log.last_index, storage.last_index) == (4, 4, 4)


def test_stable_to_of_an_entry_replaced_meanwhile_keeps_it_unstable() -> None:
    storage = MemoryLog(SnapshotMeta(), entries_of(1))
    log = log_over(storage)
    log.append(entries_of(1, 1, start=2))
    saving = log.take_unstable()  # 2..3 on their way to disk
    log.merge(1, entries_of(2, start=2))  # a new leader replaces them before the save ends
    storage.save(saving)
    log.stable_to(3, 1)
    assert log.stable_index == 1 and log.term_at(2) == 2 and log.last_index == 2


def test_entries_and_storage_together_are_refused() -> None:
    storage = MemoryLog(SnapshotMeta(), entries_of(1))
    with pytest.raises(ValueError, match="either"):
        RaftLog(SnapshotMeta(), entries_of(1), 0, storage)


def test_last_index_and_newest_durable_term_follow_saves_truncations_and_restores() -> None:
    # Both are kept up to date by each change rather than recomputed on every read.
    storage = MemoryLog(SnapshotMeta(), entries_of(1, 1, 2))
    log = log_over(storage)
    assert (log.last_index, log.term_at(3)) == (3, 2)
    log.append(entries_of(3, start=4))
    storage.save(log.take_unstable())
    log.stable_to(4, 3)
    assert (log.last_index, log.stable_index, log.term_at(4), log.term_at(3)) == (4, 4, 3, 2)
    log.merge(2, entries_of(4, start=3))  # a conflict below the durable tail
    assert (log.last_index, log.stable_index) == (3, 2)
    assert (log.term_at(2), log.term_at(3), log.term_at(4)) == (1, 4, None)
    log.restore(SnapshotMeta(10, 5))
    assert (log.last_index, log.stable_index, log.term_at(10), log.term_at(11)) == (10, 10, 5, None)
    log.append(entries_of(5, start=11))
    assert (log.last_index, log.last_term) == (11, 5)

"""``SafetyChecker`` on batches and copies: entries applied as a batch are checked one by one,
and an entry equal to the one first seen passes whether or not it is the same object (the
simulator shares objects between nodes; the checker must not rely on it)."""

from __future__ import annotations

import pytest

from raftly.core.types import Entry, EntryType
from raftly.testing.safety import SafetyChecker, SafetyViolation


def test_a_batch_applied_in_order_passes_and_an_equal_copy_on_another_node_too() -> None:
    checker = SafetyChecker()
    batch = [Entry(1, 1, b"", EntryType.NOOP), Entry(2, 1, b"a"), Entry(3, 1, b"b")]
    checker.on_apply_all(0, batch)
    checker.on_apply_all(1, [Entry(e.index, e.term, e.data, e.type) for e in batch])


def test_a_different_command_at_an_applied_index_is_caught_inside_a_batch() -> None:
    checker = SafetyChecker()
    checker.on_apply_all(0, [Entry(1, 1, b"a"), Entry(2, 1, b"b")])
    with pytest.raises(SafetyViolation, match="state machine safety"):
        checker.on_apply_all(1, [Entry(1, 1, b"a"), Entry(2, 1, b"X")])


def test_a_gap_in_the_middle_of_a_batch_is_caught_and_names_the_last_good_index() -> None:
    checker = SafetyChecker()
    with pytest.raises(SafetyViolation, match="applied index 4 right after 2"):
        checker.on_apply_all(0, [Entry(1, 1, b"a"), Entry(2, 1, b"b"), Entry(4, 1, b"d")])
    checker.on_apply(0, Entry(3, 1, b"c"))  # the node is known to have applied up to 2


def test_log_matching_compares_copies_by_content_and_by_the_term_before_them() -> None:
    checker = SafetyChecker()
    checker.on_persist(0, [Entry(1, 1, b"a"), Entry(2, 1, b"b")], 0)
    checker.on_persist(1, [Entry(2, 1, b"b")], 1)  # an equal copy, same previous term
    checker.on_persist(2, [Entry(2, 1, b"b")], None)  # previous term compacted away: unknown
    with pytest.raises(SafetyViolation, match="log matching"):
        checker.on_persist(3, [Entry(2, 1, b"B")], 1)
    with pytest.raises(SafetyViolation, match="log matching"):
        checker.on_persist(3, [Entry(2, 1, b"b", EntryType.NOOP)], 1)
    with pytest.raises(SafetyViolation, match="log matching"):
        checker.on_persist(3, [Entry(2, 1, b"b")], 7)


def test_the_same_entry_object_persisted_after_different_previous_terms_is_caught() -> None:
    # The same-object fast path skips only comparing the data; the previous term is still checked.
    checker = SafetyChecker()
    e = Entry(2, 1, b"b")
    checker.on_persist(0, [e], 1)
    with pytest.raises(SafetyViolation, match="log matching"):
        checker.on_persist(1, [e], 7)

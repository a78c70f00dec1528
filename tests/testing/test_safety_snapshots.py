"""``SafetyChecker`` on snapshots: a node may jump forward to a snapshot's index, never back, and
a snapshot must hold exactly the commands applied at the indexes it covers."""

from __future__ import annotations

import pytest

from raftly.core.types import Entry, EntryType
from raftly.testing.safety import SafetyChecker, SafetyViolation


def _checker_with_applied() -> SafetyChecker:
    """Node 0 applied a no-op at 1 and commands b"a", b"b" at 2 and 3."""
    checker = SafetyChecker()
    checker.on_apply(0, Entry(1, 1, b"", EntryType.NOOP))
    checker.on_apply(0, Entry(2, 1, b"a"))
    checker.on_apply(0, Entry(3, 1, b"b"))
    return checker


def test_a_node_jumps_to_a_snapshot_and_applies_on_from_it() -> None:
    checker = _checker_with_applied()
    checker.on_snapshot_installed(1, 3, [(2, b"a"), (3, b"b")])
    checker.on_apply(1, Entry(4, 1, b"c"))
    with pytest.raises(SafetyViolation, match="right after 4"):
        checker.on_apply(1, Entry(4, 1, b"c"))


def test_a_snapshot_behind_what_the_node_applied_is_a_violation() -> None:
    checker = _checker_with_applied()
    with pytest.raises(SafetyViolation, match="applied index 2 right after 3"):
        checker.on_snapshot_installed(0, 2, [(2, b"a")])


@pytest.mark.parametrize("commands", [
    [(2, b"a"), (3, b"x")],   # a different command
    [(2, b"a")],              # one missing
    [(1, b"a"), (2, b"a"), (3, b"b")],  # a command where a no-op was applied
    [(2, b"a"), (3, b"b"), (4, b"z")],  # beyond its index
], ids=["different", "missing", "at-a-noop", "beyond"])
def test_a_snapshot_that_disagrees_with_what_was_applied_is_a_violation(
        commands: list[tuple[int, bytes]]) -> None:
    checker = _checker_with_applied()
    with pytest.raises(SafetyViolation, match="state machine safety: node 1's snapshot at 3"):
        checker.on_snapshot_taken(1, 3, commands)


def test_a_snapshot_whose_contents_are_unknown_is_checked_for_position_only() -> None:
    checker = _checker_with_applied()
    checker.on_snapshot_installed(1, 3, None)
    with pytest.raises(SafetyViolation):
        checker.on_snapshot_installed(1, 3, None)

"""Input checks every storage applies before it changes anything, so all storages agree.

The checks reject what no correct core can ask for: an append that leaves a gap or reaches into
the snapshot, entries that are not consecutive, a commit index beyond the log it would describe.
``commit_after_compact`` is the one rule they share for the commit index a compaction leaves.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

from raftly.core.types import Entry, HardState, SnapshotMeta
from raftly.storage.base import StorageError


def check_save(
    hard_state: HardState | None,
    entries: Sequence[Entry],
    *,
    snapshot_index: int,
    last_index: int,
    commit: int,
) -> int:
    """Raise StorageError if ``save(hard_state, entries)`` is invalid; else the new last index.

    ``commit`` is the durable commit index before the call: entries up to it are committed and
    may never be replaced (only a conflict replaces entries, and committed ones cannot conflict).
    """
    if entries:
        first = entries[0].index
        if first > last_index + 1 or first <= snapshot_index:
            raise StorageError(
                f"append at index {first} does not follow the log "
                f"(snapshot {snapshot_index}, last {last_index})"
            )
        if first <= min(commit, last_index):
            raise StorageError(
                f"append at index {first} would replace committed entries (commit {commit})"
            )
        for prev, entry in itertools.pairwise(entries):
            if entry.index != prev.index + 1:
                raise StorageError(f"entries not consecutive at index {entry.index}")
        last_index = entries[-1].index
    if hard_state is not None and hard_state.commit > last_index:
        raise StorageError(f"commit {hard_state.commit} beyond the last durable entry {last_index}")
    return last_index


def check_compact(meta: SnapshotMeta, commit: int, held_term: int | None) -> None:
    """Raise StorageError if a snapshot contradicts a committed entry.

    ``held_term`` is the term of the entry the log holds at ``meta.index``, if any. A snapshot
    may replace an uncommitted suffix that disagrees with it, never a committed entry: that
    would be a safety violation upstream, and would leave a commit index beyond the log.
    """
    if held_term is not None and held_term != meta.term and meta.index <= commit:
        raise StorageError(
            f"snapshot at index {meta.index} of term {meta.term} contradicts the committed "
            f"entry of term {held_term} (commit {commit})"
        )


def commit_after_compact(hard_state: HardState, meta: SnapshotMeta) -> HardState:
    """The hard state once the log starts after ``meta``: a snapshot holds committed entries
    only, so a commit index below it (a snapshot installed from a leader) is raised to it."""
    if hard_state.commit >= meta.index:
        return hard_state
    return dataclasses.replace(hard_state, commit=meta.index)

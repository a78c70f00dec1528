"""Input checks every storage applies before it changes anything, so all storages agree.

The checks reject what no correct core can ask for: an append that leaves a gap or reaches into
the snapshot, entries that are not consecutive, a commit index beyond the log it would describe.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from raftly.core.types import Entry, HardState
from raftly.storage.base import StorageError


def check_save(
    hard_state: HardState | None, entries: Sequence[Entry], snapshot_index: int, last_index: int
) -> int:
    """Raise StorageError if ``save(hard_state, entries)`` is invalid; else the new last index."""
    if entries:
        first = entries[0].index
        if first > last_index + 1 or first <= snapshot_index:
            raise StorageError(
                f"append at index {first} does not follow the log "
                f"(snapshot {snapshot_index}, last {last_index})"
            )
        for prev, entry in itertools.pairwise(entries):
            if entry.index != prev.index + 1:
                raise StorageError(f"entries not consecutive at index {entry.index}")
        last_index = entries[-1].index
    if hard_state is not None and hard_state.commit > last_index:
        raise StorageError(f"commit {hard_state.commit} beyond the last durable entry {last_index}")
    return last_index

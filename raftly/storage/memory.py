"""``MemoryStorage``: the storage interface kept in memory, for tests and the simulator.

It is "durable" for as long as the object lives: the simulator keeps it across a simulated
crash, which is exactly what a real disk keeps across a process crash.
"""

from __future__ import annotations

from collections.abc import Sequence

from raftly.core.types import ConfState, Entry, HardState, InitialState, SnapshotMeta
from raftly.storage.base import StorageError
from raftly.storage.checks import check_compact, check_save


class MemoryStorage:
    """Storage held in Python lists. Validates its inputs like the disk storage does."""

    def __init__(self) -> None:
        self._bootstrapped = False
        self._hard_state = HardState()
        self._durable_hard_state = HardState()
        self._snapshot = SnapshotMeta()
        self._entries: list[Entry] = []

    @property
    def bootstrapped(self) -> bool:
        return self._bootstrapped

    def bootstrap(self, conf: ConfState) -> None:
        if self._bootstrapped:
            raise StorageError("storage already holds state; refusing to bootstrap it again")
        self._snapshot = SnapshotMeta(conf=conf)
        self._bootstrapped = True

    def load(self) -> InitialState:
        if not self._bootstrapped:
            raise StorageError("storage was never bootstrapped")
        return InitialState(self._durable_hard_state, self._snapshot, list(self._entries))

    @property
    def last_index(self) -> int:
        return self._entries[-1].index if self._entries else self._snapshot.index

    def save(self, hard_state: HardState | None, entries: Sequence[Entry]) -> None:
        # Checked before anything changes, so a rejected call leaves the storage as it was.
        check_save(
            hard_state,
            entries,
            snapshot_index=self._snapshot.index,
            last_index=self.last_index,
            commit=self._hard_state.commit,
        )
        if entries:
            del self._entries[entries[0].index - self._snapshot.index - 1 :]
            self._entries.extend(entries)
        if hard_state is not None:
            self._hard_state = hard_state
            if not hard_state.same_election(self._durable_hard_state):
                self._durable_hard_state = hard_state

    def compact(self, meta: SnapshotMeta) -> None:
        if meta.index <= self._snapshot.index:
            return
        keep_from = meta.index - self._snapshot.index
        covered = self._entries[keep_from - 1] if meta.index <= self.last_index else None
        check_compact(meta, self._hard_state.commit, covered.term if covered else None)
        # Entries past the snapshot survive only if the log agrees with it at its last index.
        self._entries = self._entries[keep_from:] if covered and covered.term == meta.term else []
        self._snapshot = meta

    def close(self) -> None:
        self._durable_hard_state = self._hard_state

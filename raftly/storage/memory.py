"""``MemoryStorage``: the storage interface kept in memory, for tests and the simulator.

It is "durable" for as long as the object lives: the simulator keeps it across a simulated
crash, which is exactly what a real disk keeps across a process crash.
"""

from __future__ import annotations

from collections.abc import Sequence

from raftly.core.errors import InvariantError
from raftly.core.log import MemoryLog
from raftly.core.types import ConfState, Entry, HardState, InitialState, SnapshotMeta
from raftly.storage.base import StorageError
from raftly.storage.checks import check_compact, check_save, commit_after_compact


class MemoryStorage:
    """Storage held in a Python list. Validates its inputs like the disk storage does."""

    def __init__(self) -> None:
        self._bootstrapped = False
        self._hard_state = HardState()
        self._durable_hard_state = HardState()
        self._log = MemoryLog(SnapshotMeta())
        self._log_bytes = 0
        """The sum of the held entries' data sizes, kept up to date rather than summed."""

    @property
    def bootstrapped(self) -> bool:
        return self._bootstrapped

    def bootstrap(self, conf: ConfState) -> None:
        if self._bootstrapped:
            raise StorageError("storage already holds state; refusing to bootstrap it again")
        self._log = MemoryLog(SnapshotMeta(conf=conf))
        self._bootstrapped = True

    def load(self) -> InitialState:
        if not self._bootstrapped:
            raise StorageError("storage was never bootstrapped")
        log = self._log
        return InitialState(self._durable_hard_state, log.snapshot,
                            log.entries(log.first_index, log.last_index + 1))

    # -- the read side (LogReader) -----------------------------------------------------------

    @property
    def first_index(self) -> int:
        return self._log.first_index

    @property
    def last_index(self) -> int:
        return self._log.last_index

    def term(self, index: int) -> int:
        try:
            return self._log.term(index)
        except InvariantError as exc:
            raise StorageError(str(exc)) from None

    def entries(self, lo: int, hi: int) -> list[Entry]:
        try:
            return self._log.entries(lo, hi)
        except InvariantError as exc:
            raise StorageError(str(exc)) from None

    def save(self, hard_state: HardState | None, entries: Sequence[Entry]) -> None:
        # Checked before anything changes, so a rejected call leaves the storage as it was.
        check_save(
            hard_state,
            entries,
            snapshot_index=self._log.snapshot.index,
            last_index=self.last_index,
            commit=self._hard_state.commit,
        )
        log = self._log
        if entries and entries[0].index <= log.last_index:
            self._log_bytes -= _data_size(log.entries(entries[0].index, log.last_index + 1))
        log.save(list(entries))
        self._log_bytes += _data_size(entries)
        if hard_state is not None:
            self._hard_state = hard_state
            if not hard_state.same_election(self._durable_hard_state):
                self._durable_hard_state = hard_state

    def compact(self, meta: SnapshotMeta) -> None:
        log = self._log
        if meta.index <= log.snapshot.index:
            return
        held = log.term(meta.index) if meta.index <= log.last_index else None
        check_compact(meta, self._hard_state.commit, held)
        covered = _data_size(log.entries(log.first_index, min(meta.index, log.last_index) + 1))
        log.compact(meta)
        # Empty after meta when the log ended before it or disagreed with it.
        self._log_bytes = 0 if log.last_index == meta.index else self._log_bytes - covered
        self._hard_state = commit_after_compact(self._hard_state, meta)

    @property
    def log_bytes(self) -> int:
        return self._log_bytes

    def close(self) -> None:
        self._durable_hard_state = self._hard_state


def _data_size(entries: Sequence[Entry]) -> int:
    return sum(len(e.data) for e in entries)

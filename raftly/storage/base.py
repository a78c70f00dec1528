"""The storage interface a driver uses to make the core's ``Ready`` durable."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from raftly.core.log import LogReader
from raftly.core.types import ConfState, Entry, HardState, InitialState, SnapshotMeta


class StorageError(Exception):
    """Storage cannot be trusted or written: corruption, I/O error, misuse. Stops the node."""


class Storage(LogReader, Protocol):
    """A node's durable state, and the read side of its log (``LogReader``: ``first_index``,
    ``last_index``, ``term(i)``, ``entries(lo, hi)``) that a ``RaftNode`` may read through.

    The contract every implementation meets (and the conformance suite checks):

    - ``save`` returns only once its entries and the hard state's term and vote are durable
      (unless the user turned fsync off). Entries are made durable before the hard state, so a
      commit index read back never exceeds the last durable entry.
    - The commit index alone is written lazily: with the next change of term or vote, and on
      ``close``. Raft keeps it volatile, so a restarted node merely relearns it from the leader;
      writing it on every commit would cost a file rewrite and two flushes per batch.
    - ``entries[0].index`` may be at most ``last_index + 1``; an entry at an index already held
      replaces it and everything after it (a follower overwriting a deposed leader's suffix).
      Entries within one call are consecutive.
    - ``load`` returns exactly what was durably saved, in order, with no gaps.
    - The read side raises StorageError for an index it does not hold.
    """

    @property
    def bootstrapped(self) -> bool:
        """Whether the storage holds a node's state (so ``bootstrap`` must not be called)."""
        ...

    def bootstrap(self, conf: ConfState) -> None:
        """Initialize an empty storage for a new cluster member; raises if it holds state."""
        ...

    def load(self) -> InitialState:
        """Everything durable: hard state, snapshot metadata, the entries after the snapshot.

        Raises StorageError if the storage was never bootstrapped or is corrupt.
        """
        ...

    def save(self, hard_state: HardState | None, entries: Sequence[Entry]) -> None:
        """Durably append ``entries`` (replacing any suffix they overlap), then ``hard_state``."""
        ...

    def compact(self, meta: SnapshotMeta) -> None:
        """Make ``meta`` the log start: entries up to ``meta.index`` go, and a later entry stays
        only if the log agrees with ``meta`` at ``meta.index``.

        Used for compaction and to install a snapshot received from a leader, when ``meta.index``
        may lie beyond the commit and last index: the log is then empty after ``meta``, and the
        commit index is raised to ``meta.index`` (a snapshot only ever holds committed entries).
        A ``meta`` at or below the current log start changes nothing.
        """
        ...

    @property
    def log_bytes(self) -> int:
        """Bytes the log occupies (on disk for a disk storage)."""
        ...

    def close(self) -> None:
        """Release files and locks. The storage is unusable afterwards."""
        ...

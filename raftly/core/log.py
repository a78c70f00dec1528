"""A node's log: the durable part read through storage, the part not yet durable in memory.

As in etcd's ``raftLog``, the log has two halves. Entries up to ``stable_index`` are durable and
read through a ``LogReader``: the read side of the driver's storage, or a ``MemoryLog`` that the
log keeps itself when the driver gives it none. Entries after it are *unstable*: held in memory
until the driver reports them durable (``stable_to``), when they are dropped from memory. An
unstable suffix that replaces durable entries (a follower overwriting a deposed leader's suffix)
shadows them until the driver's save overwrites them.

The log tracks three positions the driver cares about: ``unstable_from`` (the first entry not yet
handed out to be persisted), ``stable_index`` (the last entry the driver confirmed durable) and
``applied`` (the last entry handed out to be applied). The core never writes storage itself; it
only says what to persist.
"""

from __future__ import annotations

from typing import Protocol

from raftly.core.errors import InvariantError
from raftly.core.types import Entry, SnapshotMeta


class LogReader(Protocol):
    """The read side of a node's durable log: all the core needs of storage.

    ``raftly.storage.Storage`` extends it. Reads only ever ask for held entries: between
    ``first_index`` (the one after the snapshot) and ``last_index``.
    """

    @property
    def first_index(self) -> int:
        """The first index the log can hold: the one after the snapshot."""
        ...

    @property
    def last_index(self) -> int:
        """The last entry's index, or the snapshot's if the log holds no entry."""
        ...

    def term(self, index: int) -> int:
        """The term of entry ``index`` (the snapshot's term at ``first_index - 1``)."""
        ...

    def entries(self, lo: int, hi: int) -> list[Entry]:
        """Entries ``lo`` to ``hi - 1``, all held."""
        ...


class MemoryLog:
    """A durable log kept in a Python list: the entries after a snapshot, consecutive.

    The log's own durable copy when the driver gives it no storage to read, and the list behind
    ``MemoryStorage``.
    """

    __slots__ = ("_base", "_entries", "snapshot")

    def __init__(self, snapshot: SnapshotMeta, entries: list[Entry] | None = None) -> None:
        self.snapshot = snapshot
        self._base = snapshot.index  # read on every lookup: kept out of the dataclass
        expected = snapshot.index + 1
        for entry in entries or ():
            if entry.index != expected:
                raise InvariantError(f"log has a gap: expected index {expected}, got {entry.index}")
            expected += 1
        self._entries = list(entries or ())

    @property
    def first_index(self) -> int:
        return self._base + 1

    @property
    def last_index(self) -> int:
        return self._base + len(self._entries)

    def term(self, index: int) -> int:
        offset = index - self._base - 1
        if 0 <= offset < len(self._entries):
            return self._entries[offset].term
        if offset == -1:
            return self.snapshot.term
        raise self._missing(index)

    def entries(self, lo: int, hi: int) -> list[Entry]:
        if lo >= hi:
            return []
        base = self._base
        if lo <= base or hi - base - 1 > len(self._entries):
            raise self._missing(lo if lo <= base else hi - 1)
        return self._entries[lo - base - 1 : hi - base - 1]

    def save(self, entries: list[Entry]) -> None:
        """Append consecutive ``entries``, replacing any held suffix from ``entries[0]`` on."""
        if not entries:
            return
        start = entries[0].index
        if not self._base < start <= self.last_index + 1:
            raise InvariantError(f"entries from {start} do not follow the log "
                                 f"({self.first_index}..{self.last_index})")
        del self._entries[start - self._base - 1 :]
        self._entries.extend(entries)

    def compact(self, meta: SnapshotMeta) -> None:
        """Drop the entries a snapshot covers; keep those after it only if the log agrees with
        the snapshot at its last index."""
        if meta.index <= self._base:
            return
        agrees = meta.index <= self.last_index and self.term(meta.index) == meta.term
        keep_from = meta.index - self._base
        self._entries = self._entries[keep_from:] if agrees else []
        self.snapshot = meta
        self._base = meta.index

    def _missing(self, index: int) -> InvariantError:
        return InvariantError(f"entry {index} is not in the log "
                              f"({self.first_index}..{self.last_index})")


class RaftLog:
    """The entries after ``snapshot_index``, consecutive, with commit and apply positions."""

    __slots__ = (
        "_offset",
        "_own",
        "_stable",
        "_stable_term",
        "_unstable",
        "applied",
        "commit",
        "last_index",
        "snapshot_index",
        "snapshot_term",
        "unstable_from",
    )

    def __init__(self, snapshot: SnapshotMeta, entries: list[Entry], commit: int,
                 storage: LogReader | None = None) -> None:
        """A log recovered at ``snapshot``. Its durable entries are read through ``storage``
        when the driver gives one (``entries`` must then be empty); otherwise they are
        ``entries``, and the log keeps what becomes durable in a ``MemoryLog`` of its own."""
        self.snapshot_index = snapshot.index
        self.snapshot_term = snapshot.term
        self._own: MemoryLog | None = None
        if storage is None:
            self._own = MemoryLog(snapshot, entries)
            storage = self._own
        elif entries:
            raise ValueError("give the durable entries either as a list or through storage")
        if storage.first_index != snapshot.index + 1:
            raise InvariantError(f"storage starts at {storage.first_index}, "
                                 f"but the snapshot ends at {snapshot.index}")
        self._stable = storage
        last = storage.last_index
        self._offset = last + 1
        """The index of ``_unstable[0]``: every entry before it is durable."""
        self._stable_term = snapshot.term if last == snapshot.index else storage.term(last)
        """The term of the entry at ``_offset - 1``, the newest durable one (the snapshot's term
        when that is the snapshot's index): most lookups are of it (a leader's ``prev_term``),
        and it is kept here rather than read through the storage each time."""
        self._unstable: list[Entry] = []
        self.last_index = last
        """The index of the last entry (``_offset + len(_unstable) - 1``). Read-only for
        everyone else: kept by RaftLog, updated by every change of the log (``term_at``,
        ``slice`` and ``take_unstable`` trust it); a plain attribute only because it is read
        many times per message."""
        if commit > last:
            raise InvariantError(f"commit index {commit} beyond the last log entry {last}")
        self.commit = max(commit, snapshot.index)
        self.applied = snapshot.index
        self.unstable_from = last + 1

    # -- reading -------------------------------------------------------------------------------

    @property
    def first_index(self) -> int:
        return self.snapshot_index + 1

    @property
    def stable_index(self) -> int:
        """The last entry the driver confirmed durable."""
        return self._offset - 1

    @property
    def last_term(self) -> int:
        if self._unstable:
            return self._unstable[-1].term
        term = self.term_at(self._offset - 1)
        assert term is not None  # the durable log always ends at or after the snapshot
        return term

    def term_at(self, index: int) -> int | None:
        """The term of the entry at ``index``; None if compacted away or not yet in the log."""
        offset = index - self._offset
        if offset >= 0:
            return self._unstable[offset].term if offset < len(self._unstable) else None
        if offset == -1:
            return self._stable_term
        if index > self.snapshot_index:
            return self._stable.term(index)
        return self.snapshot_term if index == self.snapshot_index else None

    def matches(self, index: int, term: int) -> bool:
        return self.term_at(index) == term

    def entry(self, index: int) -> Entry:
        if index >= self._offset:
            return self._unstable[index - self._offset]
        return self._stable.entries(index, index + 1)[0]

    def slice(
        self, lo: int, hi: int, max_count: int | None = None, max_bytes: int | None = None
    ) -> list[Entry]:
        """Entries with ``lo <= index <= hi``, at most ``max_count`` and about ``max_bytes``.

        At least one entry is returned when the range is non-empty, whatever its size, so a
        single large entry still moves.
        """
        if lo <= self.snapshot_index:
            raise InvariantError(f"entry {lo} was compacted (snapshot at {self.snapshot_index})")
        hi = min(hi, self.last_index)
        if max_count is not None:
            hi = min(hi, lo + max_count - 1)
        if hi < lo:
            return []
        offset = self._offset
        chosen = self._stable.entries(lo, min(hi + 1, offset)) if lo < offset else []
        if hi >= offset:
            chosen += self._unstable[max(lo, offset) - offset : hi + 1 - offset]
        if max_bytes is not None and len(chosen) > 1:
            size = 0
            for n, entry in enumerate(chosen):
                size += len(entry.data)
                if size > max_bytes and n > 0:
                    return chosen[:n]
        return chosen

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Whether a log ending at (last_index, last_term) is at least as up to date as ours."""
        our_term = self.last_term
        return last_term > our_term or (last_term == our_term and last_index >= self.last_index)

    def first_index_of_term(self, index: int) -> int:
        """The first index, at or below ``index``, of the run of entries with ``index``'s term."""
        term = self.term_at(index)
        while index > self.first_index and self.term_at(index - 1) == term:
            index -= 1
        return index

    def last_index_of_term(self, term: int, at_most: int) -> int | None:
        """The last index at or below ``at_most`` holding ``term``; None if there is none."""
        index = min(at_most, self.last_index)
        while index >= self.first_index:
            entry_term = self.term_at(index)
            assert entry_term is not None
            if entry_term == term:
                return index
            if entry_term < term:
                return None
            index -= 1
        return None

    # -- writing -------------------------------------------------------------------------------

    def append(self, entries: list[Entry]) -> None:
        """Append entries that directly follow the last one (the leader's own proposals)."""
        if entries and entries[0].index != self.last_index + 1:
            raise InvariantError(f"append at {entries[0].index} after last index {self.last_index}")
        self._unstable.extend(entries)
        self.last_index += len(entries)

    def merge(self, prev_index: int, entries: list[Entry]) -> int:
        """Merge entries from a leader that follow a matching ``prev_index``; return the last index.

        Only a real conflict (same index, different term) truncates: a stale or reordered message
        whose entries we already hold changes nothing.
        """
        for n, entry in enumerate(entries):
            existing = self.term_at(entry.index)
            if existing == entry.term:
                continue
            if existing is not None:
                if entry.index <= self.commit:
                    raise InvariantError(
                        f"conflict at committed index {entry.index} (commit {self.commit}): "
                        f"term {existing} vs {entry.term}"
                    )
                self.truncate_from(entry.index)
            self._unstable.extend(entries[n:])
            self.last_index = self._offset + len(self._unstable) - 1
            break
        return prev_index + len(entries)

    def truncate_from(self, index: int) -> None:
        """Drop every entry at or after ``index`` (never a committed one).

        Durable entries are not touched: the unstable suffix that follows shadows them until the
        driver's save of that suffix replaces them.
        """
        if index <= self.commit:
            raise InvariantError(
                f"truncation at {index} would drop committed entries (commit {self.commit})"
            )
        if index >= self._offset:
            del self._unstable[index - self._offset :]
        else:
            self._unstable.clear()
            self._offset = index
            # index > commit >= snapshot_index: the entry before it is durable or the snapshot.
            self._stable_term = (self._stable.term(index - 1) if index - 1 > self.snapshot_index
                                 else self.snapshot_term)
        self.last_index = self._offset + len(self._unstable) - 1
        self.unstable_from = min(self.unstable_from, index)

    def commit_to(self, index: int) -> bool:
        """Raise the commit index (never lower it); return whether it moved."""
        if index <= self.commit:
            return False
        if index > self.last_index:
            raise InvariantError(f"commit {index} beyond last index {self.last_index}")
        self.commit = index
        return True

    # -- snapshots ---------------------------------------------------------------------------------

    def compact(self, meta: SnapshotMeta) -> None:
        """Forget the durable entries up to ``meta.index`` (the log now starts after it).

        The driver compacts its storage alike right after; until then the node never reads the
        entries it forgot, so either order of the two is safe.
        """
        if meta.index <= self.snapshot_index:
            return
        if meta.index > self.stable_index or meta.index > self.applied:
            raise InvariantError(f"compaction to {meta.index} beyond the stable index "
                                 f"{self.stable_index} or the applied index {self.applied}")
        if self.term_at(meta.index) != meta.term:
            raise InvariantError(f"compaction to {meta.term}/{meta.index}, but the log holds "
                                 f"term {self.term_at(meta.index)} there")
        if self._own is not None:
            self._own.compact(meta)
        self.snapshot_index, self.snapshot_term = meta.index, meta.term

    def restore(self, meta: SnapshotMeta) -> None:
        """Start over after a snapshot received from the leader: no entry, all of it applied.

        Only for a snapshot beyond the commit index that the log does not hold. Whatever the
        durable log still holds is of no use any more: the driver's ``storage.compact(meta)``
        drops it before it saves anything else. Until then nothing reads it: every index after
        ``meta.index`` counts as unstable (and there are none yet).
        """
        if meta.index <= self.commit:
            raise InvariantError(f"restore to {meta.index} at or below the commit {self.commit}")
        if self._own is not None:
            self._own = MemoryLog(meta)
            self._stable = self._own
        self.snapshot_index, self.snapshot_term = meta.index, meta.term
        self._unstable.clear()
        self._offset = meta.index + 1
        self._stable_term = meta.term
        self.last_index = meta.index
        self.unstable_from = meta.index + 1
        self.commit = self.applied = meta.index

    def restored_at(self, meta: SnapshotMeta) -> None:
        """The driver restored the state machine from snapshot ``meta`` before starting: it is
        applied (hence committed) up to there."""
        if not self.snapshot_index <= meta.index <= self.last_index:
            raise InvariantError(f"restored snapshot at {meta.index} outside the log "
                                 f"({self.snapshot_index}..{self.last_index})")
        if self.term_at(meta.index) != meta.term:
            raise InvariantError(f"restored snapshot {meta.term}/{meta.index} does not agree "
                                 f"with the log's term {self.term_at(meta.index)} there")
        self.commit = max(self.commit, meta.index)
        self.applied = meta.index

    # -- handing out to the driver ---------------------------------------------------------------

    def take_unstable(self) -> list[Entry]:
        """Entries not yet handed out to be persisted; they count as handed out from now on."""
        entries = self._unstable[self.unstable_from - self._offset :]
        self.unstable_from = self.last_index + 1
        return entries

    def has_unstable(self) -> bool:
        return self.unstable_from <= self.last_index

    def stable_to(self, index: int, term: int) -> None:
        """The driver made entries up to (index, term) durable: they leave memory.

        If the log was truncated past that entry meanwhile, the durable copy is of a replaced
        entry and proves nothing about the current log.
        """
        if index < self._offset or self.term_at(index) != term:
            return
        count = index - self._offset + 1
        if self._own is not None:
            self._own.save(self._unstable[:count])
        del self._unstable[:count]
        self._offset = index + 1
        self._stable_term = term

    def take_committed(self) -> list[Entry]:
        """Committed entries not yet handed out to be applied, in order; each is handed out once."""
        if self.applied >= self.commit:
            return []
        entries = self.slice(self.applied + 1, self.commit)
        self.applied = self.commit
        return entries

    def has_committed(self) -> bool:
        return self.applied < self.commit

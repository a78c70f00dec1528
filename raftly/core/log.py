"""``RaftLog``: a node's log in memory, with what is durable, committed and applied.

The log keeps every entry after the last snapshot. It tracks three positions the driver cares
about: ``unstable_from`` (the first entry not yet handed out to be persisted), ``stable_index``
(the last entry the driver confirmed durable) and ``applied`` (the last entry handed out to be
applied). The core never touches storage itself; it only says what to persist.
"""

from __future__ import annotations

from raftly.core.errors import InvariantError
from raftly.core.types import Entry, SnapshotMeta


class RaftLog:
    """The entries after ``snapshot_index``, consecutive, with commit and apply positions."""

    __slots__ = (
        "_entries",
        "applied",
        "commit",
        "snapshot_index",
        "snapshot_term",
        "stable_index",
        "unstable_from",
    )

    def __init__(self, snapshot: SnapshotMeta, entries: list[Entry], commit: int) -> None:
        self.snapshot_index = snapshot.index
        self.snapshot_term = snapshot.term
        expected = snapshot.index + 1
        for entry in entries:
            if entry.index != expected:
                raise InvariantError(f"log has a gap: expected index {expected}, got {entry.index}")
            expected += 1
        self._entries = list(entries)
        last = self.last_index
        if commit > last:
            raise InvariantError(f"commit index {commit} beyond the last log entry {last}")
        self.commit = max(commit, snapshot.index)
        self.applied = snapshot.index
        self.stable_index = last
        self.unstable_from = last + 1

    # -- reading -------------------------------------------------------------------------------

    @property
    def first_index(self) -> int:
        return self.snapshot_index + 1

    @property
    def last_index(self) -> int:
        return self.snapshot_index + len(self._entries)

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self.snapshot_term

    def term_at(self, index: int) -> int | None:
        """The term of the entry at ``index``; None if compacted away or not yet in the log."""
        offset = index - self.snapshot_index
        if offset == 0:
            return self.snapshot_term
        if 0 < offset <= len(self._entries):
            return self._entries[offset - 1].term
        return None

    def matches(self, index: int, term: int) -> bool:
        return self.term_at(index) == term

    def entry(self, index: int) -> Entry:
        return self._entries[index - self.snapshot_index - 1]

    def slice(
        self, lo: int, hi: int, max_count: int | None = None, max_bytes: int | None = None
    ) -> list[Entry]:
        """Entries with ``lo <= index <= hi``, at most ``max_count`` and about ``max_bytes``.

        At least one entry is returned when the range is non-empty, whatever its size, so a
        single large entry still moves.
        """
        start = lo - self.snapshot_index - 1
        stop = hi - self.snapshot_index
        if max_count is not None:
            stop = min(stop, start + max_count)
        if start < 0:
            raise InvariantError(f"entry {lo} was compacted (snapshot at {self.snapshot_index})")
        chosen = self._entries[start:stop]
        if max_bytes is not None and len(chosen) > 1:
            size = 0
            for n, entry in enumerate(chosen):
                size += len(entry.data)
                if size > max_bytes and n > 0:
                    return chosen[:n]
        return chosen

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Whether a log ending at (last_index, last_term) is at least as up to date as ours."""
        return last_term > self.last_term or (
            last_term == self.last_term and last_index >= self.last_index
        )

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
            entry_term = self.entry(index).term
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
        self._entries.extend(entries)

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
            self._entries.extend(entries[n:])
            break
        return prev_index + len(entries)

    def truncate_from(self, index: int) -> None:
        """Drop every entry at or after ``index`` (never a committed one)."""
        if index <= self.commit:
            raise InvariantError(
                f"truncation at {index} would drop committed entries (commit {self.commit})"
            )
        del self._entries[index - self.snapshot_index - 1 :]
        self.unstable_from = min(self.unstable_from, index)
        self.stable_index = min(self.stable_index, index - 1)

    def commit_to(self, index: int) -> bool:
        """Raise the commit index (never lower it); return whether it moved."""
        if index <= self.commit:
            return False
        if index > self.last_index:
            raise InvariantError(f"commit {index} beyond last index {self.last_index}")
        self.commit = index
        return True

    # -- handing out to the driver ---------------------------------------------------------------

    def take_unstable(self) -> list[Entry]:
        """Entries not yet handed out to be persisted; they count as handed out from now on."""
        entries = self._entries[self.unstable_from - self.snapshot_index - 1 :]
        self.unstable_from = self.last_index + 1
        return entries

    def has_unstable(self) -> bool:
        return self.unstable_from <= self.last_index

    def stable_to(self, index: int, term: int) -> None:
        """The driver made entries up to (index, term) durable.

        If the log was truncated past that entry meanwhile, the durable copy is of a replaced
        entry and proves nothing about the current log.
        """
        if index > self.stable_index and self.term_at(index) == term:
            self.stable_index = index

    def take_committed(self) -> list[Entry]:
        """Committed entries not yet handed out to be applied, in order; each is handed out once."""
        if self.applied >= self.commit:
            return []
        entries = self.slice(self.applied + 1, self.commit)
        self.applied = self.commit
        return entries

    def has_committed(self) -> bool:
        return self.applied < self.commit

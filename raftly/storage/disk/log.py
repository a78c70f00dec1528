"""The segmented write-ahead log: which segments exist, where each entry lives, and crash recovery.

This module owns the directory of segment files. It keeps, per segment, the byte offset of every
record and the term of every entry, so ``term(i)`` and finding entry ``i`` cost a bisect over the
(few) segments plus an array lookup. It appends batches with one flush, truncates a conflicting
suffix, deletes whole segments below a compaction point, and on open checks every record.

Ordering rules that make a crash at any instant recoverable:

- a segment is flushed before the next one is created, so only the last segment can end in a
  torn record, and that tail was never acknowledged;
- a truncation (deleted segments, shortened file) is made durable before new entries are written
  over it, so old and new entries can never mix after a crash;
- compaction deletes oldest-first when the log agrees with the snapshot (what survives is always
  a contiguous suffix reaching the snapshot), newest-first when it is dropped whole (what
  survives still shows the disagreement and is dropped again on the next open).

``OSError`` escapes from here untouched; ``DiskStorage`` turns it into a poisoned storage.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field

from raftly.core.types import Entry, SnapshotMeta
from raftly.storage.disk import segment
from raftly.storage.disk.fsio import Syncer, pwrite_all, read_all
from raftly.storage.errors import StorageError, corrupt

logger = logging.getLogger("raftly.storage.disk")


@dataclass(slots=True)
class _Segment:
    first: int
    path: str
    fd: int
    offsets: array[int] = field(default_factory=lambda: array("Q", [segment.HEADER_SIZE]))
    """Start of each record, then the end of the last one (so ``offsets[-1]`` is the size)."""
    terms: array[int] = field(default_factory=lambda: array("Q"))

    @property
    def last(self) -> int:
        return self.first + len(self.terms) - 1

    @property
    def size(self) -> int:
        return self.offsets[-1]


@dataclass(frozen=True, slots=True)
class _TornTail:
    """Where recovery cuts the last segment: a record that a crash left half-written."""

    segment: _Segment
    offset: int
    reason: str


class SegmentedLog:
    """The entries after the snapshot, in segment files under one directory."""

    def __init__(self, directory: str, syncer: Syncer, segment_size: int, base: int) -> None:
        self.directory = directory
        self._syncer = syncer
        self._segment_size = segment_size
        self._segments: list[_Segment] = []
        self._firsts: list[int] = []  # parallel to _segments, for bisect
        self._base = base
        # The snapshot index: entries at or below it are ignored even if a file still holds them.

    # -- queries ---------------------------------------------------------------------------

    @property
    def last_index(self) -> int:
        if self._segments and self._segments[-1].last > self._base:
            return self._segments[-1].last
        return self._base

    @property
    def size_bytes(self) -> int:
        """Bytes the segment files hold (their headers and records)."""
        return sum(seg.size for seg in self._segments)

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    def term(self, index: int) -> int:
        """The term of a held entry (``base < index <= last_index``)."""
        seg = self._find(index)
        return seg.terms[index - seg.first]

    def entries(self, lo: int, hi: int) -> list[Entry]:
        """Entries ``lo`` to ``hi - 1``, all held: one read per segment touched."""
        out: list[Entry] = []
        index = lo
        while index < hi:
            seg = self._find(index)
            stop = min(hi, seg.last + 1)
            start_off = seg.offsets[index - seg.first]
            end_off = seg.offsets[stop - seg.first]
            buf = read_all(seg.fd, start_off, end_off - start_off)
            rel = [o - start_off for o in seg.offsets[index - seg.first : stop - seg.first]]
            out.extend(segment.decode_records(buf, rel))
            index = stop
        return out

    def _find(self, index: int) -> _Segment:
        if not self._base < index <= self.last_index:
            raise StorageError(
                f"index {index} is not in the log ({self._base + 1}..{self.last_index})"
            )
        return self._segments[bisect.bisect_right(self._firsts, index) - 1]

    # -- writes ----------------------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> None:
        """Write consecutive ``entries``, replacing any suffix from ``entries[0].index`` on.

        The caller has checked ``base < entries[0].index <= last_index + 1``. Returns once
        everything is flushed (per the fsync policy).
        """
        records = [segment.encode_record(e) for e in entries]  # fails before any I/O
        if entries[0].index <= self.last_index:
            self._truncate_from(entries[0].index)
        created = False
        seg = self._segments[-1] if self._segments else None
        if seg is not None and seg.last + 1 != entries[0].index:
            # Cannot happen through DiskStorage; writing on would make a segment that fails its
            # index check on the next open, so refuse before touching the file.
            raise StorageError(
                f"{seg.path}: internal error: entry {entries[0].index} does not follow {seg.last}"
            )
        buf = bytearray()
        offsets: list[int] = []
        terms: list[int] = []
        for entry, record in zip(entries, records, strict=True):
            pending = len(buf)
            full = seg is not None and (
                seg.size + pending + len(record) > self._segment_size and (terms or seg.terms)
            )
            if seg is None or full:
                if seg is not None:
                    # Seal: flush the old segment before the new one exists (see module doc),
                    # even under fsync never: only the last segment may ever be torn. Under
                    # never it may hold unflushed appends of earlier batches even if this
                    # batch wrote nothing to it.
                    if buf:
                        self._write(seg, buf, offsets, terms)
                        buf, offsets, terms = bytearray(), [], []
                    self._syncer.rare_file(seg.fd)
                seg = self._create(entry.index)
                created = True
            offsets.append(seg.size + len(buf))
            buf += record
            terms.append(entry.term)
        assert seg is not None
        self._write(seg, buf, offsets, terms)
        self._syncer.file(seg.fd)
        if created:
            self._syncer.directory(self.directory)

    def flush_tail(self) -> None:
        """Make the last segment durable even under fsync never (where appends leave it
        unflushed); with fsync always it already is."""
        if self._segments and not self._syncer.enabled:
            self._syncer.rare_file(self._segments[-1].fd)

    def _write(self, seg: _Segment, buf: bytearray, offsets: list[int], terms: list[int]) -> None:
        at = seg.size
        try:
            pwrite_all(seg.fd, buf, at)
        except OSError:
            # Best effort: leave no partial record behind. Whatever stays is a torn tail of the
            # last segment, cut on the next open, and the storage is poisoned meanwhile.
            with contextlib.suppress(OSError):
                os.ftruncate(seg.fd, at)
            raise
        seg.offsets.pop()
        seg.offsets.extend(offsets)
        seg.offsets.append(at + len(buf))
        seg.terms.extend(terms)

    def _create(self, first: int) -> _Segment:
        path = os.path.join(self.directory, segment.segment_name(first))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            # Not flushed here: the flush that ends the batch covers the header too.
            pwrite_all(fd, segment.encode_header(first), 0)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        seg = _Segment(first, path, fd)
        self._segments.append(seg)
        self._firsts.append(first)
        return seg

    def _truncate_from(self, index: int) -> None:
        """Durably drop entries ``index..last``."""
        removed = False
        while self._segments and self._segments[-1].first > index:
            self._drop(-1)
            removed = True
        if removed:
            self._syncer.directory(self.directory)
        seg = self._segments[-1]
        keep = index - seg.first
        os.ftruncate(seg.fd, seg.offsets[keep])
        # Whatever the policy: new entries are written over the cut, and a crash that kept
        # those but not the truncation would leave old records after new ones (corruption).
        self._syncer.rare_file(seg.fd)
        del seg.offsets[keep + 1 :]
        del seg.terms[keep:]

    def compact(self, meta: SnapshotMeta) -> None:
        """Forget entries up to ``meta.index`` (already durable in the snapshot metadata).

        Entries after it survive only if the log agrees with the snapshot at ``meta.index``.
        """
        agrees = meta.index < self.last_index and self.term(meta.index) == meta.term
        self._base = meta.index
        self._discard(keep_suffix=agrees)

    def _discard(self, *, keep_suffix: bool) -> None:
        dropped = False
        if keep_suffix:
            while self._segments and self._segments[0].last <= self._base:
                self._drop(0)
                dropped = True
        else:
            while self._segments:
                self._drop(-1)
                dropped = True
        if dropped:
            self._syncer.directory(self.directory)

    def _drop(self, position: int) -> None:
        seg = self._segments.pop(position)
        del self._firsts[position]
        os.close(seg.fd)
        os.unlink(seg.path)

    def close(self) -> None:
        for seg in self._segments:
            with contextlib.suppress(OSError):
                os.close(seg.fd)
        self._segments.clear()
        self._firsts.clear()

    # -- recovery --------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: str,
        syncer: Syncer,
        segment_size: int,
        snapshot: SnapshotMeta,
        commit: int,
        commit_source: str,
    ) -> SegmentedLog:
        """Check every segment and rebuild the index; repair only what a crash can leave.

        Nothing is changed on disk until everything has been checked, so a corrupt directory is
        left exactly as found for the operator.
        """
        log = cls(directory, syncer, segment_size, snapshot.index)
        try:
            log._recover(snapshot, commit, commit_source)
        except BaseException:
            log.close()
            raise
        return log

    def _recover(self, snapshot: SnapshotMeta, commit: int, commit_source: str) -> None:
        cut, torn = self._load_segments()
        drop_all = self._snapshot_supersedes_log(snapshot)
        self._check_commit_survives(snapshot, commit, commit_source, cut, drop_all)
        # Everything checked: now repair.
        if torn is not None:
            logger.warning(
                "%s: removing a segment whose header was cut short by a crash", torn.path
            )
            os.unlink(torn.path)
            self._syncer.directory(self.directory)
        if cut is not None:
            logger.warning(
                "%s: cutting a torn tail at byte offset %d (%s)", cut.segment.path, cut.offset,
                cut.reason,
            )
            os.ftruncate(cut.segment.fd, cut.offset)
            self._syncer.rare_file(cut.segment.fd)  # new appends follow the cut: as above
        self._discard(keep_suffix=not drop_all)

    def _load_segments(self) -> tuple[_TornTail | None, _Segment | None]:
        """Open, scan and index every segment, checking that they follow on from each other.

        Returns what a crash may have left, for repair once everything is checked: the torn tail
        of the last segment, and the last segment itself if not even its header was written
        (that one is already taken out of the index). Anything else wrong is corruption.
        """
        found = sorted(
            (first, name)
            for name in os.listdir(self.directory)
            if (first := segment.parse_segment_name(name)) is not None
        )
        cut: _TornTail | None = None
        drop_torn_header = False
        for position, (first, name) in enumerate(found):
            path = os.path.join(self.directory, name)
            fd = os.open(path, os.O_RDWR)
            seg = _Segment(first, path, fd)
            self._segments.append(seg)
            self._firsts.append(first)
            buf = read_all(fd, 0, os.fstat(fd).st_size)
            result = segment.scan(buf, first)
            if result.offsets:
                seg.offsets = result.offsets
                seg.terms = result.terms
            if result.error is not None:
                at = result.offsets[-1] if result.offsets else 0
                if not (result.torn and position == len(found) - 1):
                    raise corrupt(path, at, result.error)
                if result.offsets:
                    cut = _TornTail(seg, at, f"{result.error}; {len(buf) - at} bytes dropped")
                else:
                    drop_torn_header = True
            if position:
                prev = self._segments[-2]
                if first != prev.last + 1:
                    raise corrupt(
                        path, 0, f"starts at index {first} but {prev.path} ends at {prev.last}"
                    )
        if not drop_torn_header:
            return cut, None
        # A segment created just before a crash, before its header reached the disk.
        torn = self._segments.pop()
        self._firsts.pop()
        os.close(torn.fd)
        return cut, torn

    def _snapshot_supersedes_log(self, snapshot: SnapshotMeta) -> bool:
        """Whether the whole log is to be dropped, as ``compact`` would have finished doing:
        it ends before the snapshot, or disagrees with the snapshot's term at its index."""
        if not self._segments:
            return False
        oldest = self._segments[0]
        last = self._segments[-1].last
        if oldest.first > snapshot.index + 1:
            raise corrupt(
                oldest.path,
                0,
                f"log starts at index {oldest.first} but the snapshot ends at {snapshot.index}",
            )
        if last < snapshot.index:
            return True
        if snapshot.index >= oldest.first:
            seg = self._segments[bisect.bisect_right(self._firsts, snapshot.index) - 1]
            return seg.terms[snapshot.index - seg.first] != snapshot.term
        return False

    def _check_commit_survives(
        self,
        snapshot: SnapshotMeta,
        commit: int,
        commit_source: str,
        cut: _TornTail | None,
        drop_all: bool,
    ) -> None:
        """Raise if the recovered log ends before the commit index: entries were acknowledged."""
        recovered_last = (
            snapshot.index
            if drop_all or not self._segments
            else max(snapshot.index, self._segments[-1].last)
        )
        if commit > recovered_last:
            # What looked like a torn tail cuts into committed entries: it is corruption.
            why = (
                f"{cut.segment.path}: bad record at byte offset {cut.offset} ({cut.reason})"
                if cut is not None
                else f"the log in {self.directory} ends there"
            )
            raise StorageError(
                f"{commit_source}: commit index {commit} is beyond the last intact log entry "
                f"{recovered_last}; {why}: acknowledged entries are missing"
            )

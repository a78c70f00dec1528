"""``DiskStorage``: the ``Storage`` protocol on a data directory, and its error policy.

This module owns the order of durable writes across files (entries, then hard state; snapshot
metadata, then segment deletion), input validation shared with ``MemoryStorage``, and what
happens on failure: a problem found when opening is kept and raised by ``load`` and every other
call; an ``OSError`` while writing poisons the storage, so a node never acknowledges anything
after its disk has failed it once (after a failed fsync the kernel may have dropped the dirty
pages, and a retried fsync can succeed without them ever reaching the disk).

Layout of the data directory::

    LOCK                          flock'ed while open
    hardstate                     term, vote, commit
    snapshot                      index, term, configuration the log starts after
    wal/00000000000000000001.wal  segments, named after their first index
    snapshots/                    state-machine snapshots (``raftly.storage.snapshots``, not here)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from raftly.core.types import ConfState, Entry, HardState, InitialState, SnapshotMeta
from raftly.storage.base import StorageError
from raftly.storage.checks import check_compact, check_save, commit_after_compact
from raftly.storage.disk import state
from raftly.storage.disk.fsio import FsyncPolicy, Syncer, make_dirs
from raftly.storage.disk.lock import DirectoryLock
from raftly.storage.disk.log import SegmentedLog

logger = logging.getLogger("raftly.storage.disk")

DEFAULT_SEGMENT_SIZE = 64 * 1024 * 1024
WAL_DIR = "wal"


class DiskStorage:
    """A node's durable state in one data directory (see the module docstring for the layout).

    ``fsync="never"`` skips the flush of appended entries: a power loss or OS crash then loses
    recent (acknowledged) entries, never a process crash. The rare writes a directory needs to
    open again (state files, directory entries, sealed segments, a log truncation) are still
    flushed, and the log is flushed before a hard state is written, so the directory always
    opens again.
    ``segment_size`` is where a segment is rolled (a record larger than it gets a segment of
    its own).

    Opening takes the directory's lock (a second open raises ``StorageError`` at once) and
    checks everything on disk; corruption found then is raised by ``load``.

    Calls block on disk I/O and are not thread-safe: one caller at a time (an asyncio driver
    runs them in one worker thread, off the event loop).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fsync: FsyncPolicy = "always",
        segment_size: int = DEFAULT_SEGMENT_SIZE,
    ) -> None:
        if segment_size < 1:
            raise ValueError(f"segment_size must be positive, not {segment_size}")
        self.path = os.fspath(path)
        self._syncer = Syncer(fsync)
        self._segment_size = segment_size
        self._wal_dir = os.path.join(self.path, WAL_DIR)
        try:
            make_dirs(self._wal_dir)
        except OSError as exc:
            raise StorageError(f"cannot create data directory {self.path}: {exc}") from exc
        self._lock = DirectoryLock(self.path)
        self._closed = False
        self._error: StorageError | None = None
        self._log: SegmentedLog | None = None
        self._hard_state = HardState()
        """The newest hard state; its commit may be ahead of the file's (see ``save``)."""
        self._durable_hard_state = HardState()
        self._snapshot = SnapshotMeta()
        try:
            self._open()
        except StorageError as exc:
            self._error = exc
        except OSError as exc:
            self._error = StorageError(f"cannot read {self.path}: {exc}")
        if self._error is not None:
            logger.error("disk storage %s cannot start: %s", self.path, self._error)
            return
        logger.info(
            "disk storage %s: fsync=%s, segment_size=%d, %s",
            self.path,
            self._syncer.policy,
            segment_size,
            "not bootstrapped"
            if self._log is None
            else f"entries {self.first_index}..{self.last_index} in "
            f"{self._log.segment_count} segments, term {self._hard_state.term}, "
            f"commit {self._hard_state.commit}",
        )

    def _open(self) -> None:
        if not state.is_bootstrapped(self.path):
            if any(name.endswith(".wal") for name in os.listdir(self._wal_dir)):
                path = os.path.join(self.path, state.SNAPSHOT_NAME)
                raise StorageError(f"{path}: missing, but {self._wal_dir} holds log segments")
            return
        self._snapshot = state.read_snapshot_meta(self.path)
        self._hard_state = self._durable_hard_state = state.read_hard_state(self.path)
        self._log = SegmentedLog.open(
            self._wal_dir,
            self._syncer,
            self._segment_size,
            self._snapshot,
            self._hard_state.commit,
            os.path.join(self.path, state.HARD_STATE_NAME),
        )

    # -- the Storage protocol --------------------------------------------------------------

    @property
    def bootstrapped(self) -> bool:
        """True once bootstrapped, and for a directory whose state is corrupt (load raises)."""
        return self._log is not None or state.is_bootstrapped(self.path)

    def bootstrap(self, conf: ConfState) -> None:
        self._check()
        if self._log is not None:
            raise StorageError(f"{self.path} already holds state; refusing to bootstrap it again")
        try:
            # The snapshot file marks the directory as bootstrapped, so it goes last.
            state.write_hard_state(self.path, HardState(), self._syncer)
            state.write_snapshot_meta(self.path, SnapshotMeta(conf=conf), self._syncer)
        except OSError as exc:
            raise self._poison("bootstrap", exc) from exc
        self._hard_state = self._durable_hard_state = HardState()
        self._snapshot = SnapshotMeta(conf=conf)
        self._log = SegmentedLog(self._wal_dir, self._syncer, self._segment_size, 0)

    def seed(self, meta: SnapshotMeta, hard_state: HardState) -> None:
        """Initialize an empty storage at ``meta`` rather than at the beginning: the log starts
        after ``meta`` (empty), with ``hard_state``. For a node restored from a backup, whose
        state-machine snapshot at ``meta`` the caller makes durable next.

        The snapshot metadata goes first (it marks the directory as bootstrapped), then the hard
        state: a crash in between leaves a directory that refuses to open (no hard state),
        never one that opens as an empty node, nor one whose term is below its log's.
        """
        self._check()
        if self._log is not None:
            raise StorageError(f"{self.path} already holds state; refusing to seed it")
        if meta.index < 1 or hard_state.commit != meta.index or hard_state.term < meta.term:
            raise ValueError(f"seed at {meta.index}/{meta.term} needs a hard state committed "
                             f"there and of a term at least {meta.term}, not {hard_state}")
        try:
            state.write_snapshot_meta(self.path, meta, self._syncer)
            state.write_hard_state(self.path, hard_state, self._syncer)
        except OSError as exc:
            raise self._poison("seed", exc) from exc
        self._hard_state = self._durable_hard_state = hard_state
        self._snapshot = meta
        self._log = SegmentedLog(self._wal_dir, self._syncer, self._segment_size, meta.index)

    def load(self) -> InitialState:
        log = self._ready()
        try:
            entries = log.entries(self._snapshot.index + 1, log.last_index + 1)
        except OSError as exc:
            raise self._poison("reading the log", exc) from exc
        return InitialState(self._durable_hard_state, self._snapshot, entries)

    def save(self, hard_state: HardState | None, entries: Sequence[Entry]) -> None:
        log = self._ready()
        check_save(
            hard_state,
            entries,
            snapshot_index=self._snapshot.index,
            last_index=log.last_index,
            commit=self._hard_state.commit,
        )
        try:
            if entries:
                log.append(entries)
            # After the entries, so a commit read back never exceeds the durable log. A rewrite
            # costs two flushes, so a change of the commit index alone waits for the next change
            # of term or vote, or for close(): Raft's commit index is volatile anyway.
            if hard_state is not None:
                if not hard_state.same_election(self._durable_hard_state):
                    self._write_hard_state(log, hard_state)
                    self._durable_hard_state = hard_state
                self._hard_state = hard_state
        except ValueError as exc:  # an entry too large to frame, found before any write
            raise StorageError(str(exc)) from exc
        except OSError as exc:
            raise self._poison("save", exc) from exc

    def _write_hard_state(self, log: SegmentedLog, hard_state: HardState) -> None:
        # The commit index written must not exceed the durable log (recovery refuses that), and
        # under fsync never the log's tail may not be durable yet.
        log.flush_tail()
        state.write_hard_state(self.path, hard_state, self._syncer)

    def compact(self, meta: SnapshotMeta) -> None:
        log = self._ready()
        if meta.index <= self._snapshot.index:
            return
        held = log.term(meta.index) if meta.index <= log.last_index else None
        check_compact(meta, self._hard_state.commit, held)
        try:
            # Metadata first: until it is durable, the segments about to go are still needed.
            state.write_snapshot_meta(self.path, meta, self._syncer)
            self._snapshot = meta
            # Like any change of the commit index alone, the raised one is written lazily.
            self._hard_state = commit_after_compact(self._hard_state, meta)
            log.compact(meta)
        except OSError as exc:
            raise self._poison("compact", exc) from exc

    def abandon(self) -> None:
        """Let go of files and lock without writing anything, as a process crash would.

        For crash tests in one process: a new ``DiskStorage`` on the same directory then finds
        exactly what a restarted process would.
        """
        if self._closed:
            return
        self._closed = True
        if self._log is not None:
            self._log.close()
        self._lock.release()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._error is None and self._hard_state != self._durable_hard_state:
            try:
                assert self._log is not None  # a hard state changes only once bootstrapped
                self._write_hard_state(self._log, self._hard_state)
            except OSError as exc:
                logger.error("could not save the commit index at close: %s", exc)
        if self._log is not None:
            self._log.close()
        self._lock.release()

    # -- extras for the server -------------------------------------------------------------

    @property
    def fsync(self) -> FsyncPolicy:
        return self._syncer.policy

    @property
    def first_index(self) -> int:
        """The first index the log can hold (the one after the snapshot)."""
        return self._snapshot.index + 1

    @property
    def last_index(self) -> int:
        """The last entry's index, or the snapshot's if the log is empty."""
        return self._ready().last_index

    @property
    def log_bytes(self) -> int:
        """Bytes the log's segment files occupy."""
        return self._ready().size_bytes

    @property
    def hard_state(self) -> HardState:
        self._ready()
        return self._hard_state

    @property
    def snapshot(self) -> SnapshotMeta:
        self._ready()
        return self._snapshot

    def entries(self, lo: int, hi: int) -> list[Entry]:
        """Entries ``lo`` to ``hi - 1``; raises StorageError if any of them is not held."""
        log = self._ready()
        if lo >= hi:
            return []
        if lo <= self._snapshot.index or hi > log.last_index + 1:
            raise StorageError(
                f"entries {lo}..{hi - 1} are not all in the log "
                f"({self._snapshot.index + 1}..{log.last_index})"
            )
        try:
            return log.entries(lo, hi)
        except OSError as exc:
            raise self._poison("reading the log", exc) from exc

    def term(self, index: int) -> int:
        """The term of entry ``index``; the snapshot's term at the snapshot's index."""
        log = self._ready()
        if index == self._snapshot.index:
            return self._snapshot.term
        return log.term(index)

    # -- failure handling ------------------------------------------------------------------

    def _check(self) -> None:
        if self._closed:
            raise StorageError(f"storage {self.path} is closed")
        if self._error is not None:
            raise StorageError(str(self._error))

    def _ready(self) -> SegmentedLog:
        self._check()
        if self._log is None:
            raise StorageError(f"storage {self.path} was never bootstrapped")
        return self._log

    def _poison(self, what: str, exc: OSError) -> StorageError:
        self._error = StorageError(
            f"{what} failed in {self.path}: {exc}; the storage refuses all further use"
        )
        logger.error("%s", self._error)
        return self._error

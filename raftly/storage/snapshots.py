"""Snapshot files: a node's state-machine images, written, verified, listed, received and pruned.

``SnapshotStore`` owns ``DIR/snapshots/``. A complete snapshot is named after its index and term
(``00000000000000000042-00000000000000000003.snap``) and holds::

    header  = the state files' frame (``disk.state``): magic b"RFTLSNP2" | length | crc32 |
              the snapshot metadata as the ``snapshot`` state file holds it: index (u64) |
              term (u64) | conf length (u32) | ``ConfState.encode()``
    frame*  = the log's record framing (``disk.segment``): length (u32, 1..MAX_FRAME) |
              crc32 of the length field and the payload (u32) | payload
    trailer = magic b"RFTLSEND" | payload bytes (u64) | frame count (u64) |
              crc32 (u32) of the trailer's fields and of the header's checksum

The payload is whatever the state machine wrote, cut into frames of ``FRAME_SIZE`` bytes so a
flipped bit is located within one frame (reported as ``<file>: corrupt at byte offset N: ...``)
and both writing and reading stream at disk speed: the only per-byte work is zlib's CRC-32.
The trailer proves the file complete: a file cut short has none at its end. Files of format 1
(magic b"RFTLSNP1", voter count (u32) | voters (u64 each) after index and term) are still read,
whether found on disk or received from a leader that wrote them.

A snapshot is written to a temporary file (``*.tmp``), flushed, renamed into place and the
directory flushed, whatever the fsync policy (snapshots are rare, and the log entries they
replace are deleted once they are durable); only then are the oldest beyond ``keep`` deleted. A
crash at any step leaves the previous snapshots intact and at most a temporary file, which never
counts as a snapshot and is removed when the store is next opened. A file received from a
leader goes the same way: written raw under a temporary name, verified whole, then renamed.

Writers may run in a worker thread while the driver's thread lists, opens or installs: the
renames and deletions are serialised by one lock, and a reader keeps its file open, so a
snapshot pruned meanwhile stays readable to it.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import re
import struct
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Self

from raftly.core.types import SnapshotMeta
from raftly.storage.disk import state
from raftly.storage.disk.fsio import FsyncPolicy, Syncer, make_dirs, pwrite_all, read_all
from raftly.storage.disk.segment import RECORD_HEADER, record_crc
from raftly.storage.errors import StorageError, corrupt

logger = logging.getLogger("raftly.storage.snapshots")

SNAPSHOT_DIR = "snapshots"
FRAME_SIZE = 1 << 20
"""Payload bytes per frame the writer produces."""
MAX_FRAME = 64 << 20
"""The largest frame a reader accepts: a larger length field is garbage, not an allocation."""
MAX_HEADER = state.FRAME.size + state.MAX_META_SIZE
"""The largest header a reader accepts."""
_HEADER_READ = 64 << 10
"""Bytes read at once to get the header: all of it but for a configuration of hundreds of
members."""

_MAGIC = b"RFTLSNP2"
_MAGIC_V1 = b"RFTLSNP1"
_TRAILER_MAGIC = b"RFTLSEND"
_TRAILER = struct.Struct("<8sQQI")
_TRAILER_FIELDS = struct.Struct("<8sQQ")
_NAME = re.compile(r"^(\d{20})-(\d{20})\.snap$")
_TMP_SUFFIX = ".tmp"


def snapshot_name(meta: SnapshotMeta) -> str:
    return f"{meta.index:020d}-{meta.term:020d}.snap"


def _syncer(fsync: bool | FsyncPolicy) -> Syncer:
    if isinstance(fsync, bool):
        return Syncer("always" if fsync else "never")
    return Syncer(fsync)


def _trailer(payload_bytes: int, frames: int, header_crc: int) -> bytes:
    fields = _TRAILER_FIELDS.pack(_TRAILER_MAGIC, payload_bytes, frames)
    return fields + struct.pack("<I", zlib.crc32(struct.pack("<I", header_crc), zlib.crc32(fields)))


class SnapshotStore:
    """The snapshots of one node, in ``directory/snapshots/`` (see the module docstring).

    ``fsync`` is True/False or a policy (``"always"``/``"never"``); ``keep`` is how many
    complete snapshots survive a commit or an install, newest first by (index, term).
    """

    def __init__(self, directory: str | os.PathLike[str], *, fsync: bool | FsyncPolicy = True,
                 keep: int = 2) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, not {keep}")
        self.directory = os.path.join(os.fspath(directory), SNAPSHOT_DIR)
        self.keep = keep
        self._syncer = _syncer(fsync)
        self._lock = threading.Lock()
        self._held: collections.Counter[str] = collections.Counter()
        """Names of files in use (a transfer reading one): never pruned meanwhile."""
        try:
            make_dirs(self.directory)
            self._remove_temporaries()
        except OSError as exc:
            raise StorageError(f"cannot open snapshot directory {self.directory}: {exc}") from exc

    def _remove_temporaries(self) -> None:
        removed = False
        for name in os.listdir(self.directory):
            if name.endswith(_TMP_SUFFIX):
                logger.warning("%s: removing an unfinished snapshot file",
                               os.path.join(self.directory, name))
                os.unlink(os.path.join(self.directory, name))
                removed = True
            elif _NAME.match(name) is None:
                logger.warning("%s: not a snapshot file; ignored",
                               os.path.join(self.directory, name))
        if removed:
            self._syncer.directory(self.directory)

    # -- writing ---------------------------------------------------------------------------

    def create(self, meta: SnapshotMeta, *, frame_size: int = FRAME_SIZE) -> SnapshotWriter:
        """A sink for the snapshot ``meta``: ``write`` its payload, then ``commit`` or ``abort``."""
        if not 0 < frame_size <= MAX_FRAME:
            raise ValueError(f"frame_size must be in 1..{MAX_FRAME}, not {frame_size}")
        fd, path = self._temporary(f"{meta.index}-")
        return SnapshotWriter(self, meta, fd, path, frame_size)

    def receive(self) -> IncomingSnapshot:
        """A sink for the raw bytes of a snapshot file arriving from a leader."""
        fd, path = self._temporary("incoming-")
        return IncomingSnapshot(self, fd, path)

    def install(self, incoming: IncomingSnapshot) -> SnapshotMeta:
        """Make a finished, verified incoming snapshot one of this store's (durably)."""
        if incoming.meta is None or incoming.closed:
            raise StorageError(f"{incoming.path}: install of an unfinished or closed transfer")
        incoming.closed = True
        self._publish(incoming.path, incoming.meta)
        return incoming.meta

    def discard(self, incoming: IncomingSnapshot) -> None:
        """Drop an incoming snapshot (finished or not) without installing it."""
        incoming.abort()

    def _temporary(self, prefix: str) -> tuple[int, str]:
        try:
            return tempfile.mkstemp(prefix=prefix, suffix=_TMP_SUFFIX, dir=self.directory)
        except OSError as exc:
            raise StorageError(f"cannot create a snapshot file in {self.directory}: {exc}") from exc

    def _publish(self, tmp: str, meta: SnapshotMeta) -> None:
        """Rename a complete, flushed temporary file into place, then prune."""
        with self._lock:
            try:
                os.replace(tmp, self.path(meta))
                self._syncer.directory(self.directory)
                # Only now is the new snapshot durable, so older ones may go.
                pruned = [(key, name) for key, name in self._names()[self.keep :]
                          if not self._held[name]]
                for _, name in pruned:
                    os.unlink(os.path.join(self.directory, name))
                if pruned:
                    self._syncer.directory(self.directory)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise StorageError(f"{self.path(meta)}: cannot put the snapshot in place: "
                                   f"{exc}") from exc

    @contextlib.contextmanager
    def hold(self, meta: SnapshotMeta) -> Iterator[str]:
        """Keep snapshot ``meta``'s file from being pruned while the block runs (a transfer
        reading it); yields its path. A file held when a newer one arrives is pruned by the
        first commit or install after it is let go."""
        name = snapshot_name(meta)
        with self._lock:
            self._held[name] += 1
        try:
            yield os.path.join(self.directory, name)
        finally:
            with self._lock:
                self._held[name] -= 1
                if not self._held[name]:
                    del self._held[name]

    # -- reading ---------------------------------------------------------------------------

    def path(self, meta: SnapshotMeta) -> str:
        """The complete file of snapshot ``meta`` (whether it exists or not)."""
        return os.path.join(self.directory, snapshot_name(meta))

    def size(self, meta: SnapshotMeta) -> int:
        try:
            return os.path.getsize(self.path(meta))
        except OSError as exc:
            raise StorageError(f"{self.path(meta)}: {exc}") from exc

    def open(self, meta: SnapshotMeta) -> SnapshotReader:
        """A stream over the payload of snapshot ``meta``, checked frame by frame as it is read."""
        try:
            reader = SnapshotReader(self.path(meta))
        except FileNotFoundError:
            raise StorageError(f"{self.path(meta)}: no such snapshot") from None
        if reader.meta != meta:
            reader.close()
            raise corrupt(reader.path, 0, f"header holds {reader.meta}, expected {meta}")
        return reader

    def metas(self) -> list[SnapshotMeta]:
        """The complete snapshots, newest first, from their headers (payloads not verified).

        A file whose header or trailer is damaged is logged and left out.
        """
        out: list[SnapshotMeta] = []
        for key, name in self._names():
            try:
                with SnapshotReader(os.path.join(self.directory, name)) as reader:
                    out.append(_named(reader, key))
            except FileNotFoundError:
                continue  # pruned since listed
            except StorageError as exc:
                logger.error("%s", exc)
        return out

    def total_bytes(self) -> int:
        """Bytes the directory's files occupy: snapshots, and transfers or writes in progress."""
        total = 0
        for name in os.listdir(self.directory):
            with contextlib.suppress(FileNotFoundError):
                total += os.path.getsize(os.path.join(self.directory, name))
        return total

    def newest(self, covered: Callable[[SnapshotMeta], bool] = lambda m: True
               ) -> SnapshotMeta | None:
        """The newest snapshot whose every byte verifies, or None if there is none at all.

        A damaged newest snapshot is logged (``<file>: corrupt ...``); an older intact one is
        used only if ``covered(older)``, i.e. the log still holds every entry after it, and
        with no older one left, starting from nothing only if ``covered(SnapshotMeta())``.
        Otherwise StorageError with the damage found: the node must not start on a state
        that lacks entries.
        """
        damage: StorageError | None = None
        for key, name in self._names():
            path = os.path.join(self.directory, name)
            try:
                with SnapshotReader(path) as reader:
                    meta = _named(reader, key)
                    reader.verify_rest()
            except FileNotFoundError:
                continue
            except StorageError as exc:
                logger.error("%s", exc)
                damage = damage or exc
                continue
            if damage is None:
                return meta
            if covered(meta):
                logger.warning("falling back to the older snapshot %s", path)
                return meta
            raise StorageError(f"{damage}; the older snapshot {path} is intact but the log no "
                               f"longer holds the entries after its index {meta.index}")
        if damage is not None and not covered(SnapshotMeta()):
            raise StorageError(f"{damage}; no older snapshot to fall back on and the log does "
                               "not start at the beginning")
        return None

    def _names(self) -> list[tuple[tuple[int, int], str]]:
        """The complete snapshot files' (index, term) and names, newest first."""
        found = []
        for name in os.listdir(self.directory):
            match = _NAME.match(name)
            if match is not None:
                found.append(((int(match.group(1)), int(match.group(2))), name))
        found.sort(reverse=True)
        return found


class SnapshotWriter:
    """Frames a payload into a temporary file; ``commit`` makes it a snapshot.

    Used by one thread at a time (a worker thread typically). Any failure removes the
    temporary file and raises StorageError; the store's older snapshots are never touched.
    """

    def __init__(self, store: SnapshotStore, meta: SnapshotMeta, fd: int, path: str,
                 frame_size: int) -> None:
        self.meta = meta
        self.path = path
        self._store = store
        self._fd: int | None = fd
        self._frame_size = frame_size
        self._buf = bytearray()
        self._frames = 0
        self._payload = 0
        try:
            header = state.frame(_MAGIC, state.encode_meta(path, meta))
        except StorageError:
            self.abort()
            raise
        self._header_crc = state.FRAME.unpack_from(header)[2]
        self._offset = 0
        self._guarded(self._put, header)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append ``data`` to the payload; returns its length (a binary file's ``write``)."""
        view = memoryview(data).cast("B")
        size = len(view)
        self._guarded(self._frame_out, view)
        return size

    def _frame_out(self, view: memoryview) -> None:
        frame_size = self._frame_size
        if self._buf:
            take = frame_size - len(self._buf)
            self._buf += view[:take]
            view = view[take:]
            if len(self._buf) < frame_size:
                return
            self._emit(self._buf)
            self._buf = bytearray()
        # Whole frames straight from the caller's buffer: no copy into ours.
        while len(view) >= frame_size:
            self._emit(view[:frame_size])
            view = view[frame_size:]
        self._buf += view

    def _emit(self, payload: bytes | bytearray | memoryview) -> None:
        length_field = struct.pack("<I", len(payload))
        self._put(RECORD_HEADER.pack(len(payload), record_crc(length_field, payload)))
        self._put(payload)
        self._frames += 1
        self._payload += len(payload)

    def _put(self, data: bytes | bytearray | memoryview) -> None:
        assert self._fd is not None
        pwrite_all(self._fd, data, self._offset)
        self._offset += len(data)

    @property
    def size(self) -> int:
        """The bytes written to the file so far (all of it after ``commit``)."""
        return self._offset

    def commit(self) -> None:
        """Finish the file, flush it, rename it into place, flush the directory, then prune."""
        self._guarded(self._seal)
        self._store._publish(self.path, self.meta)

    def _seal(self) -> None:
        if self._buf:
            self._emit(self._buf)
            self._buf = bytearray()
        self._put(_trailer(self._payload, self._frames, self._header_crc))
        assert self._fd is not None
        self._store._syncer.rare_file(self._fd)
        fd, self._fd = self._fd, None
        os.close(fd)

    def abort(self) -> None:
        """Give up: the temporary file goes. Harmless after a commit or another abort."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    def _guarded(self, step: Callable[..., None], *args: object) -> None:
        if self._fd is None:
            raise StorageError(f"{self.path}: snapshot {self.meta.index} already committed or "
                               "aborted")
        try:
            step(*args)
        except OSError as exc:
            self.abort()
            raise StorageError(f"{self.path}: writing snapshot {self.meta.index} failed: "
                               f"{exc}") from exc

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.abort()


class IncomingSnapshot:
    """A snapshot file arriving from a leader: raw bytes, verified whole by ``finish``.

    The transport writes from a worker thread while its node may abort the transfer from
    another (closing): a lock keeps the file descriptor from being closed under a write, or a
    reused descriptor number from being written to.
    """

    def __init__(self, store: SnapshotStore, fd: int, path: str) -> None:
        self.path = path
        self.meta: SnapshotMeta | None = None
        """Set by a successful ``finish``."""
        self.closed = False
        self._store = store
        self._fd: int | None = fd
        self._offset = 0
        self._lock = threading.RLock()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        with self._lock:
            return self._write(data)

    def _write(self, data: bytes | bytearray | memoryview) -> int:
        if self._fd is None:
            raise StorageError(f"{self.path}: write to a finished or aborted transfer")
        try:
            pwrite_all(self._fd, data, self._offset)
        except OSError as exc:
            self.abort()
            raise StorageError(f"{self.path}: receiving a snapshot failed: {exc}") from exc
        self._offset += len(data)
        return len(data)

    def finish(self) -> SnapshotMeta:
        """Flush the file and verify all of it; returns its metadata. Raises StorageError (and
        removes the file) if it is incomplete or damaged."""
        with self._lock:
            return self._finish()

    def _finish(self) -> SnapshotMeta:
        if self._fd is None:
            raise StorageError(f"{self.path}: finish of a finished or aborted transfer")
        try:
            self._store._syncer.rare_file(self._fd)
            fd, self._fd = self._fd, None
            os.close(fd)
            self.meta = verify(self.path)
        except (OSError, StorageError) as exc:
            self.abort()
            if isinstance(exc, StorageError):
                raise
            raise StorageError(f"{self.path}: receiving a snapshot failed: {exc}") from exc
        return self.meta

    def abort(self) -> None:
        """Drop the transfer and its file. Harmless once installed or aborted."""
        with self._lock:
            self._abort()

    def _abort(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.meta = None
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(self.path)


class SnapshotReader:
    """The payload of one snapshot file as a binary stream, each frame checked as it is reached.

    Opening checks the header and the trailer (so an incomplete file is refused at once); any
    mismatch found while reading raises StorageError naming the file and byte offset. A
    FileNotFoundError escapes as is (a snapshot pruned since it was listed).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        try:
            self._fd = os.open(path, os.O_RDONLY)
            if hasattr(os, "posix_fadvise"):  # read front to back: a larger read-ahead
                os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            self.meta, self._pos, self._end, self._expect = self._check_ends()
        except FileNotFoundError:
            raise
        except OSError as exc:
            self.close()
            raise StorageError(f"{path}: unreadable: {exc}") from exc
        except BaseException:
            self.close()
            raise
        self._data = b""
        """The current frame's payload; ``_at`` is how much of it was read."""
        self._at = 0
        self._frames = 0
        self._payload = 0

    def _check_ends(self) -> tuple[SnapshotMeta, int, int, tuple[int, int]]:
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        head = read_all(self._fd, 0, min(size, _HEADER_READ))
        if len(head) >= state.FRAME.size:
            want = state.FRAME.size + state.FRAME.unpack_from(head)[1]
            if want > MAX_HEADER:
                raise corrupt(self.path, 8, f"header of {want} bytes exceeds the limit of "
                              f"{MAX_HEADER}")
            if want > len(head):
                head = read_all(self._fd, 0, min(size, want))
        found, payload = state.unframe(self.path, head, (_MAGIC, _MAGIC_V1), whole=False)
        meta = state.decode_meta(self.path, payload, state.FRAME.size, legacy=found == _MAGIC_V1)
        header_crc = state.FRAME.unpack_from(head)[2]
        end = state.FRAME.size + len(payload)
        if size < end + _TRAILER.size:
            raise corrupt(self.path, size, "file cut short: no trailer")
        at = size - _TRAILER.size
        trailer = read_all(self._fd, at, _TRAILER.size)
        _, payload_bytes, frames, _ = _TRAILER.unpack(trailer)
        if trailer != _trailer(payload_bytes, frames, header_crc):
            raise corrupt(self.path, at, "no intact trailer: the file is incomplete or damaged")
        return meta, end, at, (payload_bytes, frames)

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` payload bytes (all the rest if ``n < 0``); b"" at the end."""
        parts: list[bytes] = []
        want = n if n >= 0 else -1
        while want and (self._at < len(self._data) or self._next_frame()):
            data, at = self._data, self._at
            take = len(data) - at if want < 0 else min(want, len(data) - at)
            # A whole frame is handed out as is: no copy on the usual path.
            parts.append(data if take == len(data) else data[at : at + take])
            self._at = at + take
            if want > 0:
                want -= take
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _next_frame(self) -> bool:
        """Load the next frame into ``_data``; False at the (checked) end of the payload."""
        if self._fd is None:
            raise StorageError(f"{self.path}: read of a closed snapshot")
        pos, end = self._pos, self._end
        try:
            if pos == end:
                if (self._payload, self._frames) != self._expect:
                    raise corrupt(self.path, end, f"trailer says {self._expect[0]} bytes in "
                                  f"{self._expect[1]} frames, the file holds {self._payload} "
                                  f"in {self._frames}")
                return False
            if end - pos < RECORD_HEADER.size:
                raise corrupt(self.path, pos, "frame header cut short")
            head = read_all(self._fd, pos, RECORD_HEADER.size)
            length, crc = RECORD_HEADER.unpack(head)
            start = pos + RECORD_HEADER.size
            if not 0 < length <= MAX_FRAME or start + length > end:
                raise corrupt(self.path, pos, f"frame length {length} runs past the data")
            payload = read_all(self._fd, start, length)
        except OSError as exc:
            raise StorageError(f"{self.path}: unreadable at byte offset {pos}: {exc}") from exc
        if record_crc(head[:4], payload) != crc:
            raise corrupt(self.path, pos, "frame checksum mismatch")
        self._pos = start + length
        self._frames += 1
        self._payload += length
        self._data, self._at = payload, 0
        return True

    def verify_rest(self) -> None:
        """Check every frame not yet read (and the totals), discarding the payload."""
        self._data, self._at = b"", 0
        while self._next_frame():
            pass

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _named(reader: SnapshotReader, key: tuple[int, int]) -> SnapshotMeta:
    """The reader's metadata, checked against the (index, term) its file name gives."""
    if (reader.meta.index, reader.meta.term) != key:
        raise corrupt(reader.path, state.FRAME.size, f"header says index {reader.meta.index} "
                      f"term {reader.meta.term}, the file name index {key[0]} term {key[1]}")
    return reader.meta


def verify(path: str) -> SnapshotMeta:
    """Check every byte of the snapshot file at ``path``; returns its metadata."""
    with SnapshotReader(path) as reader:
        reader.verify_rest()
        return reader.meta

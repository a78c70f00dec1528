"""The backup file of ``raftly snapshot save``: its format, writing one durably, and reading
one back with every field checked.

A backup is the KV state machine's snapshot stream (raftly.kv.kv_snapshot) at one applied
index of one cluster, behind a small header and followed by a checksum::

    magic         8 bytes  b"RAFTLYBK"
    version       u16      format version (1)
    index         u64      the applied index the state was captured at (>= 1)
    term          u64      the term of the entry at that index (>= 1)
    created       u64      when it was captured: milliseconds since the Unix epoch
    payload size  u64      bytes of the payload
    keys          u64      number of keys in the payload
    id length     u16      1..1020 (255 characters of at most 4 UTF-8 bytes each)
    cluster id    bytes    the cluster's id, UTF-8
    header crc    u32      CRC-32 of every header byte before it
    payload       the state machine's snapshot stream
    sha256        32 bytes SHA-256 of the payload

Integers are little-endian. The header is fixed but for the cluster id, so a writer that learns
the payload size only at the end rewrites the header in place. The SHA-256 is the one the
serving node computed over the stream it sent (``STREAM_TRAILER``): the file carries the
leader's own checksum from end to end.

``GET /v1/snapshot`` sends the payload followed by ``STREAM_TRAILER`` (magic, payload size,
SHA-256) and the metadata in response headers (``INDEX_HEADER`` ...); ``BackupWriter`` turns
that into a file.

Reading (``verify``) checks everything and says what is wrong in words an operator can act on:
"not a raftly backup", "version N is newer than this raftly", "header damaged", "cut short",
"checksum mismatch: file damaged", and finally decodes the whole payload with the state
machine's own checks (raftly.kv.kv_snapshot.SnapshotReader) and compares it with the header.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Final
from urllib.parse import quote, unquote

from raftly.kv.kv_snapshot import SnapshotReader
from raftly.kv.state_machine import (
    DEFAULT_MAX_KEY_BYTES,
    DEFAULT_MAX_LEASES,
    DEFAULT_MAX_SESSIONS,
    DEFAULT_SESSION_WINDOW,
)
from raftly.storage.disk.fsio import Syncer

MAGIC: Final = b"RAFTLYBK"
FORMAT_VERSION: Final = 1
MAX_CLUSTER_ID_CHARS: Final = 255
"""A cluster file's cluster_id is at most 255 characters (raftly.kv.cluster_file), ..."""
MAX_CLUSTER_ID_BYTES: Final = 4 * MAX_CLUSTER_ID_CHARS
"""... so up to this many bytes in UTF-8, which the header's u16 length holds."""
_NO_LINKS: Final = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS})
"""``os.link`` errors of a file system without hard links."""
MAX_U64: Final = (1 << 64) - 1
MAX_INDEX: Final = (1 << 63) - 1
SHA256_SIZE: Final = 32

_PREFIX: Final = struct.Struct("<8sH")
_FIELDS: Final = struct.Struct("<QQQQQH")
_CRC: Final = struct.Struct("<I")
_CHUNK: Final = 1 << 20

STREAM_MAGIC: Final = b"RAFTLYSE"
STREAM_TRAILER: Final = struct.Struct("<8sQ32s")
"""What ends the body of ``GET /v1/snapshot``: magic, payload bytes, SHA-256 of the payload."""
STREAM_CONTENT_TYPE: Final = "application/vnd.raftly.snapshot"
CLUSTER_ID_HEADER: Final = "X-Raftly-Cluster-Id"
"""Percent-encoded UTF-8 (``quote_cluster_id``): a header value is ASCII to be safe."""
INDEX_HEADER: Final = "X-Raftly-Snapshot-Index"
TERM_HEADER: Final = "X-Raftly-Snapshot-Term"
KEYS_HEADER: Final = "X-Raftly-Snapshot-Keys"
CREATED_HEADER: Final = "X-Raftly-Snapshot-Created"
"""Milliseconds since the Unix epoch, when the leader captured the state."""


class BackupError(Exception):
    """A backup file that is not one, is damaged, or cannot be written; the message says which."""


@dataclass(frozen=True, slots=True)
class BackupHeader:
    """What a backup's header says (see the module docstring)."""

    cluster_id: str
    index: int
    term: int
    created_ms: int
    keys: int
    payload_size: int = 0

    def __post_init__(self) -> None:
        check_metadata(self.cluster_id, self.index, self.term, self.created_ms, self.keys)
        if not 0 <= self.payload_size <= MAX_U64:
            raise BackupError(f"payload size {self.payload_size} is out of range")

    def encode(self) -> bytes:
        cluster_id = self.cluster_id.encode("utf-8")
        head = (_PREFIX.pack(MAGIC, FORMAT_VERSION)
                + _FIELDS.pack(self.index, self.term, self.created_ms, self.payload_size,
                               self.keys, len(cluster_id))
                + cluster_id)
        return head + _CRC.pack(zlib.crc32(head))

    @property
    def size(self) -> int:
        """The header's bytes in the file."""
        return _PREFIX.size + _FIELDS.size + len(self.cluster_id.encode("utf-8")) + _CRC.size


def check_metadata(cluster_id: object, index: object, term: object, created_ms: object,
                   keys: object) -> None:
    """BackupError unless every field is of its type and range (the header's and the stream's
    response headers' rules)."""
    try:
        size = len(cluster_id.encode("utf-8")) if isinstance(cluster_id, str) else 0
    except UnicodeEncodeError:  # a lone surrogate: no UTF-8 for it
        size = 0
    if not isinstance(cluster_id, str) or not size or len(cluster_id) > MAX_CLUSTER_ID_CHARS:
        # Characters, as the cluster file counts them (its limit; UTF-8 bytes follow from it).
        raise BackupError(f"cluster id {cluster_id!r} is not a non-empty string of at most "
                          f"{MAX_CLUSTER_ID_CHARS} characters")
    for name, value, low, high in (("index", index, 1, MAX_INDEX), ("term", term, 1, MAX_INDEX),
                                   ("created time", created_ms, 0, MAX_INDEX),
                                   ("key count", keys, 0, MAX_INDEX)):
        if type(value) is not int or not low <= value <= high:
            raise BackupError(f"{name} {value!r} is not an integer from {low} to {high}")


@dataclass(frozen=True, slots=True)
class BackupInfo:
    """A verified backup: its header, checksum, and what its payload holds."""

    path: str
    header: BackupHeader
    sha256: str
    """Hex."""
    file_size: int
    revision: int
    leases: int
    sessions: int

    def as_dict(self) -> dict[str, object]:
        h = self.header
        return {"file": self.path, "format_version": FORMAT_VERSION, "cluster_id": h.cluster_id,
                "index": h.index, "term": h.term, "created_ms": h.created_ms,
                "keys": h.keys, "revision": self.revision, "leases": self.leases,
                "sessions": self.sessions, "payload_bytes": h.payload_size,
                "file_bytes": self.file_size, "sha256": self.sha256}


# -- reading ---------------------------------------------------------------------------------------


def _read_exactly(f: BinaryIO, n: int, path: str, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise BackupError(f"{path}: file cut short: {what} is incomplete")
    return data


def read_header(f: BinaryIO, path: str) -> BackupHeader:
    """The header at the start of ``f``, checked; ``f`` is left at the payload."""
    prefix = f.read(_PREFIX.size)
    if len(prefix) < len(MAGIC) or prefix[:len(MAGIC)] != MAGIC:
        raise BackupError(f"{path}: not a raftly backup (no {MAGIC.decode()} magic at its start)")
    if len(prefix) != _PREFIX.size:
        raise BackupError(f"{path}: file cut short: the header is incomplete")
    _, version = _PREFIX.unpack(prefix)
    if version > FORMAT_VERSION:
        raise BackupError(f"{path}: backup format version {version} is newer than this raftly "
                          f"(it reads version {FORMAT_VERSION}): use a newer raftly")
    if version != FORMAT_VERSION:
        raise BackupError(f"{path}: backup format version {version} is not a valid version")
    fields = _read_exactly(f, _FIELDS.size, path, "the header")
    index, term, created_ms, payload_size, keys, id_len = _FIELDS.unpack(fields)
    if not 1 <= id_len <= MAX_CLUSTER_ID_BYTES:
        # Checked before the CRC: a damaged length must not make us read 64 KiB as an id.
        raise BackupError(f"{path}: header damaged: cluster id length {id_len} is not from 1 "
                          f"to {MAX_CLUSTER_ID_BYTES}")
    raw_id = _read_exactly(f, id_len, path, "the header")
    (crc,) = _CRC.unpack(_read_exactly(f, _CRC.size, path, "the header"))
    if crc != zlib.crc32(prefix + fields + raw_id):
        raise BackupError(f"{path}: header damaged (checksum mismatch): the file is corrupt")
    try:
        cluster_id = raw_id.decode("utf-8")
    except UnicodeDecodeError:
        raise BackupError(f"{path}: header damaged: the cluster id is not UTF-8") from None
    try:
        return BackupHeader(cluster_id, index, term, created_ms, keys, payload_size)
    except BackupError as exc:
        raise BackupError(f"{path}: header damaged: {exc}") from None


class PayloadReader:
    """The payload of an open backup as a binary stream (``read(n)``), hashed as it is read:
    ``check()`` at the end says whether it was all there and matched the trailer's SHA-256."""

    def __init__(self, f: BinaryIO, path: str, header: BackupHeader) -> None:
        self._f = f
        self._path = path
        self._left = header.payload_size
        self._sha = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        want = self._left if n < 0 else min(n, self._left)
        data = self._f.read(want) if want else b""
        if len(data) != want:
            raise BackupError(f"{self._path}: file cut short inside the payload")
        self._left -= len(data)
        self._sha.update(data)
        return data

    def check(self) -> str:
        """Read what is left, then compare with the trailer; the checksum in hex."""
        while self._left:
            self.read(_CHUNK)
        trailer = self._f.read(SHA256_SIZE)
        if len(trailer) != SHA256_SIZE:
            raise BackupError(f"{self._path}: file cut short: the checksum at its end is "
                              "missing")
        if self._f.read(1):
            raise BackupError(f"{self._path}: data after the checksum: the file is damaged or "
                              "not a raftly backup")
        if trailer != self._sha.digest():
            raise BackupError(f"{self._path}: checksum mismatch: file damaged (SHA-256 of the "
                              "payload differs from the one recorded at the end)")
        return trailer.hex()


@contextlib.contextmanager
def open_backup(path: str | os.PathLike[str]) -> Iterator[tuple[BackupHeader, PayloadReader]]:
    """The checked header of the backup at ``path`` and a reader of its payload; the size
    the header promises is checked against the file's before anything else is read."""
    name = os.fspath(path)
    try:
        f = open(name, "rb")  # noqa: SIM115 (closed below, after the caller's block)
    except OSError as exc:
        raise BackupError(f"cannot read {name}: {exc.strerror or exc}") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        header = read_header(f, name)
        expected = header.size + header.payload_size + SHA256_SIZE
        if size < expected:
            raise BackupError(f"{name}: file cut short: {size} bytes, the header promises "
                              f"{expected}")
        if size > expected:
            raise BackupError(f"{name}: {size - expected} bytes more than the header promises: "
                              "the file is damaged")
        yield header, PayloadReader(f, name, header)


def verify(path: str | os.PathLike[str]) -> BackupInfo:
    """Check every byte of the backup at ``path`` (header, checksum, then the payload decoded
    with the state machine's checks and compared with the header); BackupError says what is
    wrong. The payload is read twice (checksum first, so damage is named as damage)."""
    name = os.fspath(path)
    with open_backup(name) as (header, payload):
        digest = payload.check()
    with open_backup(name) as (header, payload):
        try:
            state = SnapshotReader(payload, max_key_bytes=DEFAULT_MAX_KEY_BYTES,
                                   max_sessions=DEFAULT_MAX_SESSIONS,
                                   session_window=DEFAULT_SESSION_WINDOW,
                                   max_leases=DEFAULT_MAX_LEASES).read(keep_values=False)
        except ValueError as exc:
            raise BackupError(f"{name}: {exc}") from None
        payload.check()
    if len(state.data) != header.keys:
        raise BackupError(f"{name}: the header says {header.keys} keys, the payload holds "
                          f"{len(state.data)}")
    if state.last_index > header.index:
        raise BackupError(f"{name}: the payload was applied up to index {state.last_index}, "
                          f"past the header's index {header.index}")
    return BackupInfo(name, header, digest, header.size + header.payload_size + SHA256_SIZE,
                      state.revision, len(state.leases), len(state.sessions))


# -- writing ---------------------------------------------------------------------------------------


def exists_error(path: str | os.PathLike[str]) -> BackupError:
    """The refusal to replace an existing backup without --force."""
    return BackupError(f"{os.path.abspath(path)} exists: give another file name, or --force to "
                       "replace it")


class BackupWriter:
    """Writes a backup to a temporary file beside ``path``: ``write`` the payload, then
    ``commit`` (checksum compared, header completed, flushed, verified, moved into place, the
    directory flushed), or ``abort``. Without ``force`` an existing ``path`` is never replaced,
    not even one that appears meanwhile."""

    def __init__(self, path: str | os.PathLike[str], header: BackupHeader, *,
                 force: bool = False) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self._header = header
        self._force = force
        self._directory = os.path.dirname(self.path)
        if not force and os.path.lexists(self.path):
            raise exists_error(self.path)
        try:
            fd, self.temporary = tempfile.mkstemp(
                dir=self._directory, prefix=f".{os.path.basename(self.path)}.", suffix=".tmp")
        except OSError as exc:
            raise BackupError(f"cannot write in {self._directory}: {exc.strerror or exc}"
                              ) from None
        self._file: BinaryIO | None = os.fdopen(fd, "wb")
        self._sha = hashlib.sha256()
        self._size = 0
        self._guard(self._file.write, header.encode())  # rewritten with the size at commit

    def _guard(self, step: Callable[..., object], *args: object) -> None:
        try:
            step(*args)
        except OSError as exc:
            self.abort()
            raise BackupError(f"writing {self.temporary} failed: {exc.strerror or exc}"
                              ) from None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._file is None:
            raise BackupError(f"{self.path}: write after commit or abort")
        self._sha.update(data)
        self._size += len(data)
        self._guard(self._file.write, data)

    @property
    def payload_size(self) -> int:
        return self._size

    def commit(self, expected_sha256: bytes | None = None) -> BackupInfo:
        """Finish the file and make it ``path`` (see the class docstring). ``expected_sha256``:
        the payload's checksum as its sender computed it; a mismatch is refused."""
        f = self._file
        if f is None:
            raise BackupError(f"{self.path}: commit after commit or abort")
        digest = self._sha.digest()
        if expected_sha256 is not None and digest != expected_sha256:
            self.abort()
            raise BackupError("checksum mismatch: the snapshot was damaged on its way (the "
                              "SHA-256 of what arrived differs from the sender's)")
        header = BackupHeader(self._header.cluster_id, self._header.index, self._header.term,
                              self._header.created_ms, self._header.keys, self._size)

        def finish() -> None:
            f.write(digest)
            f.seek(0)
            f.write(header.encode())
            f.flush()
            os.fsync(f.fileno())
            f.close()

        self._guard(finish)
        self._file = None
        try:
            info = verify(self.temporary)
        except BackupError:
            self._remove_temporary()
            raise
        self._publish()
        return BackupInfo(self.path, info.header, info.sha256, info.file_size, info.revision,
                          info.leases, info.sessions)

    def _publish(self) -> None:
        try:
            if self._force:
                os.replace(self.temporary, self.path)
            else:
                self._publish_new()
            Syncer("always").directory(self._directory)
        except FileExistsError:
            self._remove_temporary()
            raise exists_error(self.path) from None
        except OSError as exc:
            self._remove_temporary()
            raise BackupError(f"cannot move the backup into place at {self.path}: "
                              f"{exc.strerror or exc}") from None

    def _publish_new(self) -> None:
        try:
            # A hard link fails if the name exists: nothing that appeared meanwhile is lost.
            os.link(self.temporary, self.path)
        except OSError as exc:
            if exc.errno not in _NO_LINKS:
                raise
            # vfat, some SMB/CIFS and FUSE mounts (common backup targets) have no hard links:
            # a check and a rename, which only a file appearing in between could lose.
            if os.path.lexists(self.path):
                raise FileExistsError(errno.EEXIST, "exists", self.path) from None
            os.rename(self.temporary, self.path)
        else:
            os.unlink(self.temporary)

    def abort(self) -> None:
        """Give up: the temporary file goes. Harmless after a commit or another abort."""
        f, self._file = self._file, None
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()
        self._remove_temporary()

    def _remove_temporary(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.temporary)


def stream_trailer(payload_size: int, sha256: bytes) -> bytes:
    return STREAM_TRAILER.pack(STREAM_MAGIC, payload_size, sha256)


def check_stream_trailer(trailer: bytes, received: int) -> bytes:
    """The SHA-256 a snapshot stream's trailer names, once it is whole and its size matches
    ``received`` payload bytes; BackupError otherwise (a stream cut short)."""
    if len(trailer) != STREAM_TRAILER.size:
        raise BackupError("the snapshot stream was cut short (no trailer)")
    magic, size, digest = STREAM_TRAILER.unpack(trailer)
    if magic != STREAM_MAGIC or size != received:
        raise BackupError(f"the snapshot stream was cut short or damaged ({received} payload "
                          "bytes, no matching trailer)")
    assert isinstance(digest, bytes)
    return digest


def quote_cluster_id(cluster_id: str) -> str:
    """The cluster id as ``CLUSTER_ID_HEADER`` carries it."""
    return quote(cluster_id, safe="")


_DIGITS = re.compile(r"[0-9]{1,19}")


def parse_stream_headers(headers: dict[str, str]) -> BackupHeader:
    """The metadata of a ``GET /v1/snapshot`` answer (header names lower-case), checked."""
    def number(name: str) -> int:
        text = headers.get(name.lower(), "")
        if _DIGITS.fullmatch(text) is None:
            raise BackupError(f"the node's {name} header {text!r} is not a number")
        return int(text)

    try:
        cluster_id = unquote(headers.get(CLUSTER_ID_HEADER.lower(), ""), errors="strict")
    except UnicodeDecodeError:
        raise BackupError("the node's cluster id header is not percent-encoded UTF-8") from None
    try:
        return BackupHeader(cluster_id, number(INDEX_HEADER),
                            number(TERM_HEADER), number(CREATED_HEADER), number(KEYS_HEADER))
    except BackupError as exc:
        raise BackupError(f"the node's snapshot metadata is invalid: {exc}") from None


__all__ = ["CLUSTER_ID_HEADER", "CREATED_HEADER", "FORMAT_VERSION", "INDEX_HEADER",
           "KEYS_HEADER", "MAGIC", "STREAM_CONTENT_TYPE", "STREAM_TRAILER", "TERM_HEADER",
           "BackupError", "BackupHeader", "BackupInfo", "BackupWriter", "PayloadReader",
           "check_metadata", "check_stream_trailer", "exists_error", "open_backup",
           "parse_stream_headers", "quote_cluster_id", "read_header", "stream_trailer", "verify"]

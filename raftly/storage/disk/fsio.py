"""Low-level file operations the disk storage relies on for durability.

This module owns the fsync policy's effect, full writes that survive short ``pwrite`` returns,
the atomic replacement of a small file (temporary file, fsync, rename, fsync of the directory)
and the durable creation of directories. Everything here raises ``OSError``; the callers turn
it into ``StorageError`` and poison the storage.

The policy ``never`` skips the flush of bulk data only (``Syncer.file``: log appends). Rare
writes without which a directory would not open again after a power loss are flushed whatever
the policy (``Syncer.rare_file`` and ``Syncer.directory``): the state files, snapshot files,
sealed segments, a log truncation, and every directory entry created, renamed or removed. They
happen on a term or vote change, a snapshot, a segment roll, a log conflict or a compaction, so
``never`` stays nearly free.
"""

from __future__ import annotations

import fcntl
import os
import sys
from typing import Literal

FsyncPolicy = Literal["always", "never"]
FSYNC_POLICIES: tuple[FsyncPolicy, ...] = ("always", "never")


def _flush_file(fd: int) -> None:
    if sys.platform == "darwin":  # pragma: no cover - fsync on macOS does not reach the platter
        fcntl.fcntl(fd, fcntl.F_FULLFSYNC)
    elif hasattr(os, "fdatasync"):
        # fdatasync also flushes the file size, which is all the metadata an append needs.
        os.fdatasync(fd)
    else:  # pragma: no cover
        os.fsync(fd)


class Syncer:
    """Makes writes durable; under the policy ``never``, only the rare ones (module docstring)."""

    def __init__(self, policy: FsyncPolicy) -> None:
        if policy not in FSYNC_POLICIES:
            raise ValueError(f"fsync policy must be one of {FSYNC_POLICIES}, not {policy!r}")
        self.policy: FsyncPolicy = policy
        self.enabled = policy == "always"

    def file(self, fd: int) -> None:
        """Flush bulk data (log appends), unless the policy is ``never``."""
        if self.enabled:
            _flush_file(fd)

    def rare_file(self, fd: int) -> None:
        """Flush a file whatever the policy: one a directory cannot open again without."""
        _flush_file(fd)

    def directory(self, path: str) -> None:
        """Make creations, renames and deletions of entries in ``path`` durable (whatever the
        policy: they are rare, and a lost one can leave a directory that does not open)."""
        _flush_directory(path)


def _flush_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset``; ``pwrite`` may write less than asked (disk full)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if written <= 0:  # pragma: no cover - the kernel reports ENOSPC as an error instead
            raise OSError(f"pwrite wrote {written} bytes")
        view = view[written:]
        offset += written


def read_all(fd: int, offset: int, size: int) -> bytes:
    """Read exactly ``size`` bytes at ``offset`` (short reads are retried, EOF is an error)."""
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        chunk = os.pread(fd, remaining, offset)
        if not chunk:
            raise OSError(f"unexpected end of file at byte {offset}")
        chunks.append(chunk)
        offset += len(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def replace_file(directory: str, name: str, data: bytes, syncer: Syncer) -> None:
    """Atomically make ``directory/name`` hold ``data``: after a crash it holds old or new."""
    final = os.path.join(directory, name)
    tmp = final + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        pwrite_all(fd, data, 0)
        syncer.rare_file(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    syncer.directory(directory)


def make_dirs(path: str) -> None:
    """``os.makedirs(path, exist_ok=True)``, each directory created made durable in its parent
    (else a power loss can take a directory away with everything durably written inside).

    The parent of ``path`` is flushed even if ``path`` exists: it may have been made by a run
    that crashed before flushing it, or by someone else (``mkdir -p``)."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    if not os.path.isdir(path):
        if parent != path:
            make_dirs(parent)
        try:
            os.mkdir(path)
        except FileExistsError:
            if not os.path.isdir(path):
                raise
    _flush_directory(parent)

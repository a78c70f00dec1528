"""The FUSE operations of the lazy file system: a passthrough that forgets what was not fsynced.

``LazyOperations`` serves a backing directory at a mount point. File data written through it
stays in a ``PendingFile`` per inode (the page cache) until an fsync of that file writes it to
the backing file; ``power_loss`` throws every ``PendingFile`` away (given a seed, after writing
back a random part of each, as a kernel may have before the power went). In mode ``strict`` it also
keeps, per directory, the listing as of that directory's last fsync (the state at mount counts
as durable), and ``power_loss`` rebuilds the tree from those listings: namespace changes no
directory fsync covered are undone. Files unlinked or replaced while a durable listing still
names them, or while they are open, are kept as hard links in the hidden ``.lazyfs`` directory
of the backing directory so they can come back (and so their inode numbers, the keys of the
page cache, are never reused meanwhile).

Every operation runs under one lock, so the multithreaded FUSE loop and the control channel's
``power_loss`` see one consistent state. Writers must be stopped (killed) before a power loss:
a descriptor kept open across it points to the old, forgotten inode.
"""

from __future__ import annotations

import collections
import errno
import functools
import logging
import os
import random
import shutil
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import mfusepy  # type: ignore[import-untyped]

from raftly.testing.lazyfs.cache import PendingFile
from raftly.testing.lazyfs.mount import MODES, Mode

logger = logging.getLogger("raftly.testing.lazyfs")

HIDDEN = ".lazyfs"
"""The backing directory's entry the file system keeps its attic in; never shown."""
ASIDE = "before-power-loss"
"""Where a strict power loss moves the tree while it rebuilds it (in the attic)."""

_F = TypeVar("_F", bound=Callable[..., Any])
_STAT_FIELDS = ("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size", "st_atime_ns",
                "st_mtime_ns", "st_ctime_ns", "st_blocks", "st_blksize")


def _locked(method: _F) -> _F:
    @functools.wraps(method)
    def wrapper(self: LazyOperations, *args: Any) -> Any:
        with self.mutex:
            return method(self, *args)
    return wrapper  # type: ignore[return-value]


@dataclass(slots=True)
class _Handle:
    fd: int
    ino: int
    append: bool


@dataclass(frozen=True, slots=True)
class _Entry:
    ino: int
    is_dir: bool


class LazyOperations(mfusepy.Operations):  # type: ignore[misc]
    """See the module docstring. ``backing`` must not be used directly while mounted."""

    use_ns = True

    def __init__(self, backing: str, mode: Mode) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.root = os.path.realpath(backing)
        self.mode = mode
        self.mutex = threading.RLock()
        self._attic = os.path.join(self.root, HIDDEN)
        if os.path.lexists(os.path.join(self._attic, ASIDE)):
            # A power loss died half-way (killed, or the rebuild and its undo both failed):
            # the only copy of some of the data may be there.
            raise RuntimeError(
                f"{os.path.join(self._attic, ASIDE)} holds the tree of an unfinished power "
                f"loss: move its entries back into {self.root} and remove {self._attic}")
        shutil.rmtree(self._attic, ignore_errors=True)
        os.mkdir(self._attic)
        self._pending: dict[int, PendingFile] = {}
        self._handles: dict[int, _Handle] = {}
        self._open: collections.Counter[int] = collections.Counter()
        self._retired: dict[int, str] = {}
        """Inodes kept in the attic: inode -> their path there."""
        self._durable: dict[int, dict[str, _Entry]] = {}
        self._root_ino = os.lstat(self.root).st_ino
        if mode == "strict":
            self._record_tree()

    # -- paths and the durable namespace ---------------------------------------------------

    def _full(self, path: str) -> str:
        relative = path.strip("/")
        if not relative:
            return self.root
        if relative.split("/", 1)[0] == HIDDEN:
            raise mfusepy.FuseOSError(errno.ENOENT)
        return os.path.join(self.root, relative)

    def _listing(self, directory: str) -> dict[str, _Entry]:
        out = {}
        for name in os.listdir(directory):
            if directory == self.root and name == HIDDEN:
                continue
            st = os.lstat(os.path.join(directory, name))
            out[name] = _Entry(st.st_ino, stat.S_ISDIR(st.st_mode))
        return out

    def _record_tree(self) -> None:
        """Take the whole tree as it is now as durable (at mount, and after a power loss)."""
        self._durable.clear()
        for directory, _, _ in os.walk(self.root):
            if directory == self._attic or directory.startswith(self._attic + os.sep):
                continue
            self._durable[os.lstat(directory).st_ino] = self._listing(directory)

    def _referenced(self) -> set[int]:
        return {e.ino for listing in self._durable.values() for e in listing.values()}

    def _retire(self, full: str) -> None:
        """Remove ``full`` from the visible tree, keeping its inode if it may come back."""
        st = os.lstat(full)
        keep = self._open[st.st_ino] > 0 or (
            self.mode == "strict" and st.st_ino in self._referenced())
        is_dir = stat.S_ISDIR(st.st_mode)
        if not keep:
            if is_dir:
                os.rmdir(full)
            else:
                os.unlink(full)
                if st.st_nlink <= 1:
                    self._pending.pop(st.st_ino, None)
            return
        kept = os.path.join(self._attic, f"{st.st_ino}")
        if st.st_ino in self._retired or os.path.lexists(kept):
            os.rmdir(full) if is_dir else os.unlink(full)
        else:
            os.rename(full, kept)
        self._retired[st.st_ino] = kept

    def _collect(self) -> None:
        """Let go of attic entries nothing can bring back any more."""
        referenced = self._referenced() if self.mode == "strict" else set()
        for ino, kept in list(self._retired.items()):
            if self._open[ino] or ino in referenced:
                continue
            del self._retired[ino]
            self._pending.pop(ino, None)
            if os.path.isdir(kept) and not os.path.islink(kept):
                shutil.rmtree(kept, ignore_errors=True)
            else:
                os.unlink(kept)

    # -- power loss ------------------------------------------------------------------------

    def power_loss(self, seed: int | None = None) -> None:
        """Forget every unsynced write (and in strict mode every unsynced namespace change).

        With a ``seed``, first write back a random part of each file's unsynced writes
        (``PendingFile.write_back_some``), chosen by ``Random(f"{seed}:{path}")`` so a failure
        replays with the same seed and the same operations.
        """
        with self.mutex:
            dropped = sum(1 for p in self._pending.values() if p.dirty)
            if seed is not None:
                self._write_back_some(seed)
            self._pending.clear()
            if self.mode == "strict":
                self._restore_namespace()
            else:
                self._collect()
            logger.info("power loss: unsynced data of %d files dropped", dropped)

    def _write_back_some(self, seed: int) -> None:
        logger.info("power loss with partial write-back, seed %d", seed)
        paths: dict[int, str] = {}
        for directory, _, names in sorted(os.walk(self.root)):
            for name in sorted(names):
                path = os.path.join(directory, name)
                ino = os.lstat(path).st_ino
                if ino in self._pending and self._pending[ino].dirty:
                    paths.setdefault(ino, path)
        for ino, path in paths.items():
            relative = os.path.relpath(path, self.root)
            fd = os.open(path, os.O_RDWR)
            try:
                done = self._pending[ino].write_back_some(fd, random.Random(f"{seed}:{relative}"))
            finally:
                os.close(fd)
            logger.info("power loss: %s: wrote back %s", relative, done)

    def _restore_namespace(self) -> None:
        aside = os.path.join(self._attic, ASIDE)
        os.mkdir(aside)
        moved: list[str] = []
        rebuilding = False
        try:
            for name in os.listdir(self.root):
                if name != HIDDEN:
                    os.rename(os.path.join(self.root, name), os.path.join(aside, name))
                    moved.append(name)
            rebuilding = True
            self._rebuild()
        except BaseException:
            self._undo_rebuild(aside, moved, rebuilding)
            raise
        shutil.rmtree(self._attic)
        os.mkdir(self._attic)
        self._retired.clear()
        self._record_tree()

    def _rebuild(self) -> None:
        """Rebuild the durable tree from hard links to the files in the attic."""
        files: dict[int, str] = {}
        for directory, _, names in os.walk(self._attic):
            for name in names:
                path = os.path.join(directory, name)
                files.setdefault(os.lstat(path).st_ino, path)

        def build(ino: int, target: str) -> None:
            for name, entry in self._durable.get(ino, {}).items():
                path = os.path.join(target, name)
                if entry.is_dir:
                    os.mkdir(path)
                    build(entry.ino, path)
                elif entry.ino in files:
                    os.link(files[entry.ino], path)
                else:  # pragma: no cover - every durable inode is kept; a bug if not
                    logger.error("power loss: inode %d of %s is gone", entry.ino, path)

        build(self._root_ino, self.root)

    def _undo_rebuild(self, aside: str, moved: list[str], rebuilding: bool) -> None:
        """Put the entries ``moved`` into ``aside`` back, first removing what was rebuilt (only
        new directories and links to files in the attic), so a failed power loss loses
        nothing."""
        logger.error("power loss failed: putting the tree back as it was")
        if rebuilding:  # everything had been moved aside: the root holds only rebuilt entries
            for name in os.listdir(self.root):
                path = os.path.join(self.root, name)
                if name != HIDDEN:
                    shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
        for name in moved:
            os.rename(os.path.join(aside, name), os.path.join(self.root, name))
        os.rmdir(aside)

    # -- attributes and directories --------------------------------------------------------

    def _attrs(self, st: os.stat_result) -> dict[str, Any]:
        attrs = {name: getattr(st, name) for name in _STAT_FIELDS}
        pending = self._pending.get(st.st_ino) if stat.S_ISREG(st.st_mode) else None
        if pending is not None:
            attrs["st_size"] = pending.size
            attrs["st_blocks"] = -(-pending.size // 512)
        for kind in ("atime", "mtime", "ctime"):
            attrs[f"st_{kind}"] = attrs.pop(f"st_{kind}_ns")
        return attrs

    @_locked
    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        if fh is not None and fh in self._handles:
            return self._attrs(os.fstat(self._handles[fh].fd))
        return self._attrs(os.lstat(self._full(path)))

    @_locked
    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *self._listing(self._full(path))]

    @_locked
    def mkdir(self, path: str, mode: int) -> int:
        full = self._full(path)
        os.mkdir(full, mode)
        if self.mode == "strict":
            self._durable[os.lstat(full).st_ino] = {}  # a new directory: nothing in it is durable
        return 0

    @_locked
    def rmdir(self, path: str) -> int:
        full = self._full(path)
        if os.listdir(full):
            raise mfusepy.FuseOSError(errno.ENOTEMPTY)
        self._retire(full)
        return 0

    @_locked
    def unlink(self, path: str) -> int:
        self._retire(self._full(path))
        return 0

    @_locked
    def rename(self, old: str, new: str) -> int:
        source, target = self._full(old), self._full(new)
        if os.path.lexists(target) and not os.path.isdir(target):
            self._retire(target)
        os.rename(source, target)
        return 0

    @_locked
    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        full = self._full(path)
        if self.mode == "strict":
            self._durable[os.lstat(full).st_ino] = self._listing(full)
            self._collect()
        return 0

    @_locked
    def chmod(self, path: str, mode: int) -> int:
        os.chmod(self._full(path), mode)
        return 0

    @_locked
    def chown(self, path: str, uid: int, gid: int) -> int:
        os.chown(self._full(path), uid, gid)
        return 0

    @_locked
    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        if times is None:
            os.utime(self._full(path))
        else:
            os.utime(self._full(path), ns=times)
        return 0

    @_locked
    def statfs(self, path: str) -> dict[str, int]:
        sv = os.statvfs(self.root)
        return {name: getattr(sv, name) for name in (
            "f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree",
            "f_favail", "f_flag", "f_namemax")}

    # -- files -----------------------------------------------------------------------------

    def _register(self, fd: int, flags: int) -> int:
        ino = os.fstat(fd).st_ino
        self._handles[fd] = _Handle(fd, ino, bool(flags & os.O_APPEND))
        self._open[ino] += 1
        if flags & os.O_TRUNC:
            self._cache(self._handles[fd]).truncate(fd, 0)
        return fd

    def _cache(self, handle: _Handle) -> PendingFile:
        pending = self._pending.get(handle.ino)
        if pending is None:
            pending = self._pending[handle.ino] = PendingFile(os.fstat(handle.fd).st_size)
        return pending

    @_locked
    def open(self, path: str, flags: int) -> int:
        # Read-write whatever was asked: pending pages are filled from the backing file.
        return self._register(os.open(self._full(path), os.O_RDWR), flags)

    @_locked
    def create(self, path: str, mode: int, flags: int) -> int:
        fd = os.open(self._full(path), os.O_RDWR | os.O_CREAT | (flags & os.O_EXCL), mode)
        return self._register(fd, flags)

    @_locked
    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        handle = self._handles[fh]
        pending = self._pending.get(handle.ino)
        if pending is None:
            return os.pread(handle.fd, size, offset)
        return pending.read(handle.fd, offset, size)

    @_locked
    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        handle = self._handles[fh]
        pending = self._cache(handle)
        pending.write(handle.fd, pending.size if handle.append else offset, data)
        return len(data)

    @_locked
    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        if fh is not None and fh in self._handles:
            handle = self._handles[fh]
            self._cache(handle).truncate(handle.fd, length)
            return 0
        fd = os.open(self._full(path), os.O_RDWR)
        try:
            self._cache(_Handle(fd, os.fstat(fd).st_ino, False)).truncate(fd, length)
        finally:
            os.close(fd)
        return 0

    @_locked
    def fsync(self, path: str, datasync: int, fh: int) -> int:
        handle = self._handles[fh]
        pending = self._pending.pop(handle.ino, None)
        if pending is None:
            os.fsync(handle.fd)
        else:
            pending.flush(handle.fd)
        return 0

    @_locked
    def flush(self, path: str, fh: int) -> int:
        return 0

    @_locked
    def release(self, path: str, fh: int) -> int:
        handle = self._handles.pop(fh)
        os.close(handle.fd)
        self._open[handle.ino] -= 1
        if not self._open[handle.ino]:
            del self._open[handle.ino]
            if handle.ino in self._retired:
                self._collect()
        return 0

"""The exclusive lock on a node's data directory.

Two processes appending to one log would interleave records and corrupt it, and two nodes
sharing one vote file would break election safety. ``flock`` on a ``LOCK`` file is released by
the kernel when the holder dies, even by SIGKILL, so a crashed node never leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import os

from raftly.storage.base import StorageError

LOCK_NAME = "LOCK"


class DirectoryLock:
    """Holds ``flock(LOCK_EX)`` on ``directory/LOCK`` until ``release``."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, LOCK_NAME)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageError(f"cannot open lock file {self.path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            by = f" (held by pid {holder})" if holder else ""
            raise StorageError(
                f"data directory {directory} is locked by another open storage{by}"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise StorageError(f"cannot lock {self.path}: {exc}") from exc
        self._fd: int | None = fd
        # The pid is only a hint for the error message above; the lock itself is the flock.
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor drops the flock


def _read_pid(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""

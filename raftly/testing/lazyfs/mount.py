"""Mounting a lazy file system in a child process, commanding it, and unmounting it for sure.

``LazyMount`` starts ``python -m raftly.testing.lazyfs`` on a backing directory and a mount
point, waits until the mount answers, sends it ``power_loss`` over the control socket, and
unmounts it (``fusermount3 -u``, then a lazy ``-uz`` if something still holds it busy, then
the child is killed), so a failing test never leaves a stale mount behind. ``unavailable()``
says why this machine cannot mount one (tests skip with that reason).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from types import TracebackType
from typing import Literal, Self

from raftly.testing.lazyfs import control

Mode = Literal["lazy", "strict"]
MODES: tuple[Mode, ...] = ("lazy", "strict")
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


def unavailable() -> str | None:
    """Why a lazy file system cannot be mounted here, or None if it can."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is missing (Debian: apt-get install fuse3)"
    if importlib.util.find_spec("mfusepy") is None:
        return "mfusepy is not installed (pip install 'raftly[check]')"
    return None


class LazyMount:
    """A lazy file system serving ``backing`` at ``mountpoint`` (both created if missing).

    The control socket and the child's log go into ``workdir`` (default: the mount point's
    parent directory). Use as a context manager, or call ``start`` and ``stop``.
    """

    def __init__(self, backing: str | os.PathLike[str], mountpoint: str | os.PathLike[str], *,
                 mode: Mode = "lazy", workdir: str | os.PathLike[str] | None = None) -> None:
        self.backing = os.fspath(backing)
        self.mountpoint = os.path.abspath(os.fspath(mountpoint))
        self.mode = mode
        work = os.fspath(workdir) if workdir is not None else os.path.dirname(self.mountpoint)
        name = os.path.basename(self.mountpoint)
        self.control = os.path.join(work, f"{name}.lazyfs.sock")
        self.log_path = os.path.join(work, f"{name}.lazyfs.log")
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        os.makedirs(self.backing, exist_ok=True)
        os.makedirs(self.mountpoint, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "raftly.testing.lazyfs", self.backing, self.mountpoint,
                 "--mode", self.mode, "--control", self.control],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                # Out of the terminal's process group: a Ctrl-C meant for the parent must not
                # unmount the file system under processes the parent still has to stop.
                start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._process.poll() is not None:
                self.stop()
                raise RuntimeError(f"lazyfs exited with {self._process.returncode}:\n"
                                   f"{self.log_tail()}")
            if os.path.ismount(self.mountpoint):
                with contextlib.suppress(OSError):
                    control.send(self.control, "ping")
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"lazyfs did not mount {self.mountpoint} within "
                                   f"{START_TIMEOUT} s:\n{self.log_tail()}")
            time.sleep(0.02)

    def power_loss(self) -> None:
        """Forget everything not fsynced (stop every writer on the mount first)."""
        control.send(self.control, "powerloss")

    def stop(self) -> None:
        """Unmount (lazily if busy) and end the child; safe to call more than once."""
        if os.path.ismount(self.mountpoint):
            done = subprocess.run(["fusermount3", "-u", self.mountpoint], capture_output=True,
                                  check=False)
            if done.returncode != 0:
                subprocess.run(["fusermount3", "-uz", self.mountpoint], capture_output=True,
                               check=False)
        process, self._process = self._process, None
        if process is None:
            return
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError), open(self.log_path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
        return ""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

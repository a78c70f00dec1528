"""Mounting a lazy file system in a child process, commanding it, and unmounting it for sure.

``LazyMount`` starts ``python -m raftly.testing.lazyfs`` on a backing directory and a mount
point, waits until the mount answers, sends it ``power_loss`` over the control socket, and
unmounts it (``fusermount3 -u``, then a lazy ``-uz`` if something still holds it busy, then
the child is ended), so a failing test never leaves a stale mount behind, not even when the
child died first. ``unavailable()`` says why this machine cannot mount one (tests skip with
that reason).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from types import TracebackType
from typing import Literal, Self

from raftly.testing.lazyfs import control

Mode = Literal["lazy", "strict"]
MODES: tuple[Mode, ...] = ("lazy", "strict")
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
SOCKET_PATH_MAX = 107
"""Longest AF_UNIX socket path Linux accepts (``sun_path`` is 108 bytes with its NUL)."""


def mounted(path: str) -> bool:
    """Whether ``path`` is a mount point, including a FUSE mount whose daemon died (on which
    ``os.path.ismount`` says False: its ``lstat`` fails with ENOTCONN)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            # Field 5 is the mount point, with space, tab, newline and backslash octal-escaped.
            points = {line.split()[4] for line in f if len(line.split()) > 4}
    except OSError:  # pragma: no cover - not Linux
        return os.path.ismount(path)
    escaped = path
    for char in "\\ \t\n":
        escaped = escaped.replace(char, f"\\{ord(char):03o}")
    return escaped in points


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
        self._wanted_control = self.control = os.path.join(work, f"{name}.lazyfs.sock")
        """The control socket; moved into a short temporary directory by ``start`` if this
        path is too long for AF_UNIX (deep working directories)."""
        self.log_path = os.path.join(work, f"{name}.lazyfs.log")
        self._process: subprocess.Popen[bytes] | None = None
        self._socket_dir: str | None = None

    def start(self) -> None:
        os.makedirs(self.backing, exist_ok=True)
        os.makedirs(self.mountpoint, exist_ok=True)
        self.control = self._wanted_control
        if len(os.fsencode(os.path.abspath(self.control))) > SOCKET_PATH_MAX:
            self._socket_dir = tempfile.mkdtemp(prefix="lazyfs-")
            self.control = os.path.join(self._socket_dir, "control.sock")
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
            code = self._process.poll()
            if code is not None:
                self.stop()
                raise RuntimeError(f"lazyfs exited with {code}:\n{self.log_tail()}")
            if os.path.ismount(self.mountpoint):
                with contextlib.suppress(OSError):
                    control.send(self.control, "ping")
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"lazyfs did not mount {self.mountpoint} within "
                                   f"{START_TIMEOUT} s:\n{self.log_tail()}")
            time.sleep(0.02)

    def power_loss(self, seed: int | None = None) -> None:
        """Forget everything not fsynced (stop every writer on the mount first).

        With a ``seed``, a random part of the unsynced writes (chosen by the seed, and logged
        with it) is written back first, as a kernel may have done before the power went: a
        prefix of each file's dirty pages, perhaps torn at a random byte, with or without its
        size change. Without one, every unsynced write is dropped.
        """
        control.send(self.control, "powerloss" if seed is None else f"powerloss {int(seed)}")

    def stop(self) -> None:
        """Unmount (lazily if busy) and end the child; safe to call more than once."""
        process, self._process = self._process, None
        busy = False
        if mounted(self.mountpoint):
            done = subprocess.run(["fusermount3", "-u", self.mountpoint], capture_output=True,
                                  check=False)
            if done.returncode != 0:
                subprocess.run(["fusermount3", "-uz", self.mountpoint], capture_output=True,
                               check=False)
                busy = True
        if process is not None:
            if busy and process.poll() is None:
                # Detached but still serving an open descriptor: its SIGTERM handler ends the
                # FUSE loop now rather than after STOP_TIMEOUT.
                process.terminate()
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT)
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None

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

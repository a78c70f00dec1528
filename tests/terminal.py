"""Running a command with its stderr on a pseudo-terminal, for tests of what it draws there.

``run_on_terminal`` gives the child a real terminal (a pty of a known width) as stderr and a
file as stdout, reads everything the terminal shows until the child exits (with a generous
deadline, never a sleep), and returns both: what a person at that terminal would have seen.
``run_on_pipe`` runs the same with stderr on a pipe, as in CI or ``2>log``.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Sequence
from dataclasses import dataclass

CONTROL = ("\r", "\x1b[")
"""What a progress line writes and plain output never holds."""


@dataclass(slots=True)
class Terminal:
    code: int
    stdout: str
    """What went to stdout (a file, not the terminal)."""
    screen: str
    """Every byte the child wrote to the terminal (its stderr), decoded."""


def run_on_terminal(args: Sequence[str], *, columns: int = 200, timeout: float = 120.0,
                    env: dict[str, str] | None = None) -> Terminal:
    """Run ``python args...`` with stderr on a pty ``columns`` wide and stdout into a file."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.Popen([sys.executable, *args], stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=slave, env=_env(env))
        finally:
            os.close(slave)
        screen = _read_until_exit(master, proc, timeout)
        out.seek(0)
        return Terminal(proc.returncode, out.read().decode(), screen.decode(errors="replace"))


def run_on_pipe(args: Sequence[str], *, timeout: float = 120.0,
                env: dict[str, str] | None = None) -> Terminal:
    """The same command with stderr on a pipe (``screen`` is then what the pipe got)."""
    proc = subprocess.run([sys.executable, *args], stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=timeout, env=_env(env), check=False)
    return Terminal(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    """This environment, a capable terminal type, and no COLUMNS / LINES from the shell that
    runs the tests: the pty's own size is the one to use (``extra`` may still set them)."""
    inherited = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    return {**inherited, "TERM": "xterm", **(extra or {})}


def _read_until_exit(master: int, proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    """All the terminal shows until the child closes it (EOF, or EIO on Linux) and exits."""
    deadline = time.monotonic() + timeout
    data = b""
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                proc.kill()
                raise AssertionError(f"{proc.args} still running after {timeout} s; "
                                     f"the terminal showed {data[-2000:]!r}")
            ready, _, _ = select.select([master], [], [], min(left, 1.0))
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer of the terminal has closed it
                break
            if not chunk:
                break
            data += chunk
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
    return data

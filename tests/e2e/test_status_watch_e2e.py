"""``raftly status --watch`` under a pseudo-terminal, against a real cluster: it draws the table,
redraws it, shows the new leader after the leader is killed, and Ctrl-C ends it with exit status
0, the cursor shown again and no traceback."""

from __future__ import annotations

import fcntl
import os
import re
import signal
import struct
import subprocess
import sys
import termios
import threading

from polling import wait_until

from raftly.cli.status_watch import BOLD, HIDE_CURSOR, HOME, REVERSE, SHOW_CURSOR
from raftly.localcluster import ProcessCluster


class _Pty:
    """A child process on a pseudo-terminal, everything it writes gathered by a thread."""

    def __init__(self, argv: list[str]) -> None:
        master, slave = os.openpty()
        # A real terminal's size: a fresh pty reports 0x0.
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave,
                                     env={**env, "PYTHONUNBUFFERED": "1"})
        os.close(slave)
        self._master = master
        self._chunks: list[bytes] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self._master, 65536)
            except OSError:  # EIO: the child closed its side
                return
            if not data:
                return
            with self._lock:
                self._chunks.append(data)

    @property
    def text(self) -> str:
        with self._lock:
            return b"".join(self._chunks).decode(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=10)
        os.close(self._master)


def test_watch_redraws_shows_a_leader_change_and_leaves_cleanly_on_ctrl_c(
        cluster: ProcessCluster) -> None:
    leader, _ = cluster.wait_for_leader(timeout=30.0)
    term = wait_until("a term", lambda: cluster.status(leader))["term"]
    pty = _Pty([sys.executable, "-m", "raftly.cli", "status", "--watch", "--interval", "0.3",
                "--endpoints", ",".join(cluster.endpoints)])
    try:
        wait_until("two frames", lambda: pty.text.count("raftly status every 0.3s") >= 2)
        first = pty.text
        assert first.startswith(HIDE_CURSOR)
        assert first.count(HOME) >= 3  # the clear, then a frame drawn over the last one
        assert f"leader {leader} (term {term})" in first
        assert BOLD + leader in first  # the leader's row

        cluster.kill(leader)
        change = wait_until("the leader change on screen", lambda: re.search(
            rf"leader changed: {leader} -> (n\d) \(term (\d+)\)", pty.text), timeout=30.0)
        new_leader, new_term = change.group(1), int(change.group(2))
        assert new_leader != leader and new_term > term
        text = pty.text
        assert BOLD + REVERSE + new_leader in text[text.index(change.group(0)) - 2000:]
        wait_until("the killed leader shown unreachable", lambda: re.search(
            rf"{leader}\s+unreachable", pty.text.rpartition(HOME)[2]))

        pty.proc.send_signal(signal.SIGINT)
        assert pty.proc.wait(timeout=30) == 0
        pty._reader.join(timeout=10)
        text = pty.text
        assert "Traceback" not in text and "interrupted" not in text
        assert text.rstrip().endswith(SHOW_CURSOR)
    finally:
        pty.close()

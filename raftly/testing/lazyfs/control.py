"""The control channel of a mounted lazy file system: a Unix socket speaking one-line commands.

A client connects, sends one command line and reads one reply line, then the connection ends:

    ping             -> ok
    powerloss        -> ok   (every unsynced write, in strict mode every unsynced namespace
                              change too, is forgotten; see ``fs.LazyOperations.power_loss``)
    powerloss SEED   -> ok   (the same, after writing back a random part of the unsynced
                              writes, chosen by the integer SEED)

A command's words after the first are passed to it as strings. Anything else gets
``error <reason>``. A command line is at most ``MAX_LINE`` bytes; the server
answers one connection at a time, each with a deadline, so a stuck client cannot hold it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable

logger = logging.getLogger("raftly.testing.lazyfs")

MAX_LINE = 64
TIMEOUT = 10.0


class ControlServer:
    """Serves the commands above on ``path`` in a daemon thread."""

    def __init__(self, path: str, commands: dict[str, Callable[..., None]]) -> None:
        if len(os.fsencode(path)) > 107:
            raise ValueError(f"control socket path longer than 107 bytes (AF_UNIX): {path}")
        self.path = path
        self._commands = commands
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(path)
        self._sock.listen(4)
        self._thread = threading.Thread(target=self._serve, name="lazyfs-control", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            with conn:
                conn.settimeout(TIMEOUT)
                try:
                    conn.sendall(self._answer(_read_line(conn)).encode() + b"\n")
                except OSError as exc:
                    logger.warning("control connection failed: %s", exc)

    def _answer(self, line: str) -> str:
        name, *args = line.split() or [""]
        command = self._commands.get(name)
        if command is None:
            return f"error unknown command {line[:MAX_LINE]!r}"
        try:
            command(*args)
        except Exception as exc:  # reported to the client, which fails its test with it
            logger.exception("command %s failed", line)
            return f"error {exc}"
        return "ok"

    def close(self) -> None:
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def _read_line(conn: socket.socket) -> str:
    data = b""
    while b"\n" not in data and len(data) <= MAX_LINE:
        chunk = conn.recv(MAX_LINE + 1)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0].decode("ascii", "replace").strip()


def send(path: str, command: str, timeout: float = TIMEOUT) -> None:
    """Send ``command`` to the server on ``path``; raises OSError unless it answers ``ok``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(command.encode("ascii") + b"\n")
        reply = _read_line(sock)
    if reply != "ok":
        raise OSError(f"lazyfs {command}: {reply or 'no answer'}")

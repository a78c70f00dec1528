"""A progress line for long commands: drawn on a terminal, silent everywhere else.

Owns how ``raftly check``, ``raftly bench`` and ``raftly fuzz`` show that they are working: one
line on stderr, redrawn in place (carriage return, erase to the end of the line), at most once per
``interval`` seconds, cut to the terminal's width (a line that wraps can no longer be redrawn in
place), erased before anything else is written and at the end. When stderr is not a terminal (a
pipe, a file, CI) nothing is drawn, so logs hold no control characters; ``--progress`` /
``--no-progress`` override that guess. The one-line summary a command ends with is the command's
own to print, on a terminal or not.

Also the pieces every such line is made of: a bar, ``m:ss`` times and an estimated time left.

Standard library only: the commands that use it import nothing else for it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import TextIO

_CLEAR = "\r\x1b[K"
"""Back to the start of the line and erase it (ANSI: every terminal raftly runs on has it)."""

DEFAULT_WIDTH = 80
"""The line's width when neither ``COLUMNS`` nor the stream can say (a stream forced on with
--progress)."""

HELP = ("a progress line on stderr while it runs (default: only when stderr is a terminal; "
        "--no-progress never draws it; the summary at the end is printed either way)")
"""The help of ``--progress``, shared by every command that has it."""


def add_progress_option(parser: argparse.ArgumentParser) -> None:
    """``--progress`` / ``--no-progress`` on ``parser`` (dest ``progress``: True, False, or
    None when neither is given: draw only on a terminal)."""
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help=HELP)


def draws_on(stream: TextIO) -> bool:
    """Whether a progress line belongs on ``stream`` by default: a terminal that understands
    cursor control (not ``TERM=dumb``, as in Emacs shells)."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False
    return tty and os.environ.get("TERM") != "dumb"


def _terminal_width(stream: TextIO) -> int:
    """``COLUMNS`` if set (as ``shutil.get_terminal_size`` does), else the terminal's width."""
    with contextlib.suppress(KeyError, ValueError):
        if (columns := int(os.environ["COLUMNS"])) > 0:
            return columns
    try:
        return os.get_terminal_size(stream.fileno()).columns or DEFAULT_WIDTH
    except (AttributeError, OSError, ValueError):  # not a terminal, no fileno (a StringIO)
        return DEFAULT_WIDTH


class ProgressLine:
    """One self-redrawing status line on ``stream`` (default stderr).

    ``update(text)`` shows ``text``: at once when the line is blank (first draw, or after
    ``clear``), otherwise only if ``interval`` seconds have passed since the last draw: updates
    in between are dropped (a newer one follows; ``force`` draws regardless). ``echo`` prints
    other output without tearing the line; ``close`` (or leaving the ``with`` block) erases it
    for good. Thread safe: logging from worker threads may erase it while the main thread
    updates it.
    """

    __slots__ = ("_clock", "_closed", "_drawn", "_guarded", "_last_draw", "_lock", "_width",
                 "enabled", "interval", "stream")

    def __init__(self, stream: TextIO | None = None, *, enabled: bool | None = None,
                 interval: float = 0.2, clock: Callable[[], float] = time.monotonic,
                 width: Callable[[], int] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = draws_on(self.stream) if enabled is None else enabled
        self.interval = interval
        self._clock = clock
        self._width = width if width is not None else lambda: _terminal_width(self.stream)
        # Reentrant: a logging call made while drawing (an encoding error reported) must not
        # deadlock on its own erase.
        self._lock = threading.RLock()
        self._drawn = False
        self._last_draw: float | None = None
        self._closed = False
        self._guarded: list[tuple[logging.Handler, logging.Filter]] = []

    def update(self, text: str, *, force: bool = False) -> None:
        """Show ``text`` (rate-limited, see the class); a no-op when disabled or closed.

        ``force``: draw now whatever the rate limit says, for a text that must not be dropped
        (a new phase that may last long with no update after it).
        """
        if not self.enabled or self._closed:
            return
        with self._lock:
            now = self._clock()
            if (not force and self._drawn and self._last_draw is not None
                    and now - self._last_draw < self.interval):
                return
            # One column spare: some terminals wrap when the last column is written.
            line = text.replace("\n", " ")[:max(1, self._width() - 1)]
            self._write("\r" + line + "\x1b[K")
            self._drawn = True
            self._last_draw = now

    def clear(self) -> None:
        """Erase the line (if drawn); the next ``update`` draws again at once."""
        with self._lock:
            if self._drawn:
                self._drawn = False
                self._write(_CLEAR)

    def echo(self, text: str = "", file: TextIO | None = None) -> None:
        """Print ``text`` (a line, to ``file``, default stdout) with the line out of its way."""
        with self._lock:
            self.clear()
            print(text, file=file if file is not None else sys.stdout, flush=True)

    def close(self) -> None:
        """Erase the line and draw no more (nor erase it before log records)."""
        with self._lock:
            self.clear()
            self._closed = True
        guarded, self._guarded = self._guarded, []
        for handler, guard in guarded:
            handler.removeFilter(guard)

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # the terminal went away: progress is not worth a crash
            self.enabled = False

    def clear_before_logging(self) -> None:
        """Until ``close``: every log record erases the line before its handler writes it.

        Covers the root logger's handlers now (configure logging first) and
        ``logging.lastResort`` (what prints warnings when logging was never configured): where
        every raftly log line ends up. A no-op when the line is off.
        """
        if not self.enabled or self._closed:
            return
        guarded = {id(handler) for handler, _ in self._guarded}
        for handler in [*logging.getLogger().handlers, logging.lastResort]:
            if handler is not None and id(handler) not in guarded:
                guard = _ClearBeforeLogging(self)
                handler.addFilter(guard)
                self._guarded.append((handler, guard))

    def __enter__(self) -> ProgressLine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _ClearBeforeLogging(logging.Filter):
    """A handler filter that lets every record through, erasing the progress line first (a
    handler runs its filters just before it writes)."""

    def __init__(self, line: ProgressLine) -> None:
        super().__init__()
        self.line = line

    def filter(self, record: logging.LogRecord) -> bool:
        self.line.clear()
        return True


# -- what a line is made of ----------------------------------------------------------------------

def bar(done: float, total: float, width: int = 16) -> str:
    """``[######..........]``: the share of ``total`` that is ``done`` (clamped to 0..1)."""
    share = min(1.0, max(0.0, done / total)) if total > 0 else 0.0
    filled = int(share * width)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def clock_time(seconds: float) -> str:
    """``m:ss`` (``h:mm:ss`` from an hour on) of a non-negative number of seconds."""
    whole = max(0, int(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def time_left(elapsed: float, done: float, total: float) -> float | None:
    """Seconds left if the rest goes at the pace so far; None before anything is done."""
    if done <= 0:
        return None
    return elapsed / done * max(0.0, total - done)


def counting_line(label: str, done: int, total: int, unit: str, *, elapsed: float,
                  fields: Sequence[str] = ()) -> str:
    """``label [####....] 12/20 unit | field | ... | 0:07 elapsed, ETA 0:05``.

    What changes on every line (the item under way) belongs after it: a narrow terminal cuts
    the end of the line.
    """
    times = f"{clock_time(elapsed)} elapsed"
    left = time_left(elapsed, done, total)
    if left is not None and done < total:
        times += f", ETA {clock_time(left)}"
    return " | ".join([f"{label} {bar(done, total)} {done}/{total} {unit}", *fields, times])


__all__ = ["DEFAULT_WIDTH", "HELP", "ProgressLine", "add_progress_option", "bar", "clock_time",
           "counting_line", "draws_on", "time_left"]

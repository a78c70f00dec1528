"""``raftly status --watch``: the status table again every interval, until Ctrl-C.

On a terminal the table is redrawn in place (the cursor homed, each line cleared behind it, the
cursor hidden meanwhile and shown again on the way out), the leader's row is bold, and for a few
seconds after a leader change its new row is in reverse video. Every leader change is also a
line under the table, ``HH:MM:SS leader changed: n1 -> n2 (term 5)``, the last few kept. When the
output is not a terminal (a pipe, a file) the same frames are written one after the other, with
no escape sequences. Ctrl-C (or SIGTERM) ends it with exit status 0.
"""

from __future__ import annotations

import shutil
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, TextIO

from raftly.cli.status import StatusPoll
from raftly.cli.status_table import format_table

HIGHLIGHT_SECONDS = 5.0
"""How long a new leader's row stays in reverse video."""
CHANGES_SHOWN = 5
"""Leader changes listed under the table, the newest last."""

BOLD, REVERSE, RESET = "\x1b[1m", "\x1b[7m", "\x1b[0m"
HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"
HOME, CLEAR_LINE, CLEAR_BELOW = "\x1b[H", "\x1b[K", "\x1b[J"


def leader_of(rows: Mapping[str, dict[str, Any] | None]) -> tuple[str, int] | None:
    """The row name and term of the node that says it leads, in the highest term; None when no
    answering node leads."""
    leaders = [(name, s) for name, s in rows.items() if s is not None and s["role"] == "leader"]
    if not leaders:
        return None
    name, status = max(leaders, key=lambda item: item[1]["term"])
    return name, int(status["term"])


@dataclass(slots=True)
class LeaderWatch:
    """The leader across rounds, and the recent changes of it."""

    leader: str | None = None
    """The last leader seen (kept while there is none: an election is a gap, not a change)."""
    changed_at: float | None = None
    changes: deque[str] = field(default_factory=lambda: deque(maxlen=CHANGES_SHOWN))

    def update(self, rows: Mapping[str, dict[str, Any] | None], now: float, clock: str
               ) -> str | None:
        """Note this round's leader; the change line when it is another than before."""
        found = leader_of(rows)
        if found is None:
            return None
        name, term = found
        change = None
        if self.leader is not None and name != self.leader:
            change = f"leader changed: {self.leader} -> {name} (term {term})"
            self.changes.append(f"{clock} {change}")
            self.changed_at = now
        self.leader = name
        return change

    def fresh(self, now: float) -> bool:
        """Whether the last change is recent enough to highlight."""
        return self.changed_at is not None and now - self.changed_at < HIGHLIGHT_SECONDS


def frame(result: StatusPoll, leaders: LeaderWatch, *, interval: float, clock: str,
          now: float, width: int | None = None) -> list[str]:
    """The lines of one round. ``width``: a terminal that wide, so lines are cut to fit and the
    leader's row is styled; None: plain text."""
    current = leader_of(result.rows)
    lines = [f"raftly status every {interval:g}s, {clock}, leader "
             f"{f'{current[0]} (term {current[1]})' if current else 'none'} (Ctrl-C to quit)"]
    table = list(format_table(result.rows))
    lines.append(table[0])
    for name, line in zip(result.rows, table[1:], strict=True):
        if width is not None and current is not None and name == current[0]:
            style = BOLD + (REVERSE if leaders.fresh(now) else "")
            lines.append(style + line[:width - 1] + RESET)
        else:
            lines.append(line)
    lines += [f"! {problem}" for problem in result.problems]
    lines += list(leaders.changes)
    if width is not None:
        lines = [line if line.endswith(RESET) else line[:width - 1] for line in lines]
    return lines


class _Stop(Exception):
    """SIGTERM: leave like Ctrl-C."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def watch(poll: Callable[[], StatusPoll], interval: float, out: TextIO | None = None) -> int:
    """Draw ``poll()``'s table every ``interval`` seconds on ``out`` (stdout) until Ctrl-C or
    SIGTERM; returns 0."""
    out = out if out is not None else sys.stdout
    tty = out.isatty()
    leaders = LeaderWatch()
    on_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if on_main else None
    try:
        if tty:
            out.write(HIDE_CURSOR + HOME + CLEAR_BELOW)
        due = time.monotonic()
        while True:
            result = poll()
            now = time.monotonic()
            clock = time.strftime("%H:%M:%S")
            leaders.update(result.rows, now, clock)
            if tty:
                size = shutil.get_terminal_size()
                lines = frame(result, leaders, interval=interval, clock=clock, now=now,
                              width=size.columns)[:max(size.lines - 1, 1)]
                out.write(HOME + "".join(line + CLEAR_LINE + "\n" for line in lines)
                          + CLEAR_BELOW)
            else:
                lines = frame(result, leaders, interval=interval, clock=clock, now=now)
                out.write("\n".join(lines) + "\n\n")
            out.flush()
            # The next round on the interval's beat; one that ran late does not cause a burst.
            due = max(due + interval, time.monotonic())
            time.sleep(max(0.0, due - time.monotonic()))
    except (KeyboardInterrupt, _Stop):
        return 0
    finally:
        if tty:
            out.write(RESET + SHOW_CURSOR)
            out.flush()
        if on_main:
            signal.signal(signal.SIGTERM, previous)


__all__ = ["LeaderWatch", "frame", "leader_of", "watch"]

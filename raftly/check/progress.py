"""What ``raftly check`` shows on its progress line while a run goes on.

The phase the run is in (starting the nodes, under faults, recovering, checking), and throughout:
the ops done so far by outcome (read from the history as it grows), the faults injected so far
(from the nemesis log) and the time elapsed; under faults, a bar of the time done out of
``--time``. The line itself, and whether it is drawn at all, is ``raftly.progress``'s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from raftly.check.history import HistoryWriter, NemesisLog
from raftly.progress import ProgressLine, bar, clock_time

TICK = 0.25
"""Seconds between redraws while the run waits on the network (the line rate-limits anyway)."""

UNDER_FAULTS = "under faults"


class RunProgress:
    """The progress line of one run: ``enter`` a phase as the run reaches it; a ticker redraws
    meanwhile, so that the counts and the clock move while the run waits."""

    __slots__ = ("_clock", "_counted", "_faults_began", "_outcomes", "_ticker", "began",
                 "duration", "history", "line", "nlog", "phase")

    def __init__(self, line: ProgressLine, history: HistoryWriter, nlog: NemesisLog,
                 duration: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.line = line
        self.history = history
        self.nlog = nlog
        self.duration = duration
        self._clock = clock
        self.began = clock()
        self.phase = "starting the nodes"
        self._faults_began: float | None = None
        self._outcomes = {"ok": 0, "fail": 0, "info": 0}
        self._counted = 0
        self._ticker: asyncio.Task[None] | None = None

    def enter(self, phase: str) -> None:
        """The run has reached ``phase``: say so now (never dropped by the rate limit)."""
        self.phase = phase
        if phase == UNDER_FAULTS:
            self._faults_began = self._clock()
        self.line.update(self.render(), force=True)

    def outcomes(self) -> dict[str, int]:
        """Completed ops by outcome so far; counts only the ops recorded since last asked."""
        ops = self.history.ops
        for op in ops[self._counted:]:
            if op["type"] in self._outcomes:
                self._outcomes[op["type"]] += 1
        self._counted = len(ops)
        return self._outcomes

    def render(self) -> str:
        now = self._clock()
        if self.phase == UNDER_FAULTS and self._faults_began is not None:
            done = min(now - self._faults_began, self.duration)
            head = (f"check {bar(done, self.duration)} {done:.0f}/{self.duration:g} s "
                    f"{UNDER_FAULTS}")
        else:
            head = f"check: {self.phase}"
        o = self.outcomes()
        faults = sum(1 for e in self.nlog.events if e.get("phase") == "start")
        # The detail last: a narrow terminal cuts the end of the line.
        return (f"{head} | {sum(o.values())} ops, {faults} faults | "
                f"{clock_time(now - self.began)} elapsed | {o['ok']} ok, {o['fail']} fail, "
                f"{o['info']} info")

    def start_ticking(self) -> None:
        """Draw the line now and every ``TICK`` seconds from now on, on the running event
        loop, until ``stop_ticking`` (nothing at all when the line is off)."""
        self.line.update(self.render(), force=True)
        if self.line.enabled and self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick())

    def stop_ticking(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    async def _tick(self) -> None:
        while True:
            self.line.update(self.render())
            await asyncio.sleep(TICK)


__all__ = ["TICK", "UNDER_FAULTS", "RunProgress"]

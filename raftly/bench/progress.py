"""What ``raftly bench`` shows while it measures, and the line it ends with.

A benchmark is a plan of measurements known in advance: for each kind of run (HTTP, HTTP over
TLS, library) and each of ``--runs`` fresh clusters, one measurement per concurrency level, in
the order of ``--clients``. The progress line counts the measurements done out of that total,
with the time elapsed and left (at the pace so far: cluster starts included), and names the one
under way. The line itself, and whether it is drawn at all, is ``raftly.progress``'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from raftly.bench.stats import Sample
from raftly.progress import ProgressLine, clock_time, counting_line


class BenchProgress:
    """Counts the measurements of a benchmark as they end (``measured``, the callback that
    ``bench_http`` and ``bench_library`` take) within the run ``begin`` announced."""

    __slots__ = ("_clock", "_in_run", "_run", "began", "done", "kinds", "levels", "line",
                 "runs", "total")

    def __init__(self, line: ProgressLine, kinds: Sequence[str], runs: int,
                 levels: Sequence[int], clock: Callable[[], float] = time.monotonic) -> None:
        self.line = line
        self.kinds = list(kinds)
        self.runs = runs
        self.levels = list(levels)
        self.total = len(self.kinds) * runs * len(self.levels)
        self.done = 0
        self._clock = clock
        self.began = clock()
        self._run = ""
        self._in_run = 0

    def begin(self, kind: str, run: int) -> None:
        """Run ``run`` (from 1) of ``kind`` starts: a fresh cluster, then every level."""
        self._run = f"{kind} run {run}/{self.runs}"
        self._in_run = 0
        self.line.update(self.render(), force=True)

    def measured(self, sample: Sample) -> None:
        """One level's measurement has ended."""
        self.done += 1
        self._in_run += 1
        self.line.update(self.render(), force=True)

    def render(self) -> str:
        text = counting_line("bench", self.done, self.total, "measured",
                             elapsed=self._clock() - self.began)
        if self._in_run < len(self.levels):
            return text + f" | {self._run}, {self.levels[self._in_run]} clients"
        return text + f" | {self._run} measured, stopping its cluster"

    def summary(self) -> str:
        """The line ``raftly bench`` ends with, on a terminal or not."""
        return (f"raftly bench: {self.done} measurements ({', '.join(self.kinds)}: "
                f"{self.runs} run(s) x {len(self.levels)} levels) in "
                f"{clock_time(self._clock() - self.began)}")


__all__ = ["BenchProgress"]

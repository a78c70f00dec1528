"""This node's recent history for the cluster page: who led when, and what each second looked like.

``ActivityLog`` is a ``ServerObserver`` (raftly.server.observer) and a sampler. As an observer it
keeps a bounded timeline of the role, term and leader changes this node saw, each with its wall
clock time, and counts the proposals that finished in the current second with a histogram of
their latency. Once a second the sampler (``run_sampler``, one asyncio task per node) closes
that second into a ring of samples: the commit and applied index at its end, the proposals that
finished OK (and not OK) in it, and the p50/p99 latency of the OK ones.

Memory is bounded by construction: ``timeline`` and ``seconds`` entries at most, and one
fixed-size histogram for the second under way. The commit path pays one counter increment and
one bisect over ``LATENCY_BOUNDS`` per proposal; everything else happens once a second.

The latency percentiles come from a log-scale histogram (``LATENCY_BOUNDS``, 8 buckets per
doubling), so each is the upper bound of the bucket it falls in: at most ~9% above the true
value, never below it. That is plenty for a sparkline and keeps the cost constant.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from raftly.core.node import Role
from raftly.core.types import NodeId
from raftly.server.observer import ProposalOutcome
from raftly.server.server import RaftServer

logger = logging.getLogger("raftly.kv.activity")

DEFAULT_TIMELINE = 256
"""Role, term and leader changes kept."""
DEFAULT_SECONDS = 180
"""Per-second samples kept: the last three minutes."""

LATENCY_BOUNDS: tuple[float, ...] = tuple(
    25e-6 * 2 ** (i / 8) for i in range(int(8 * math.log2(120 / 25e-6)) + 1))
"""Upper bounds (seconds) of the latency buckets: 25 us to ~114 s, 8 per doubling. A latency
above the last bound (far past any proposal timeout) counts in one more bucket, reported as the
last bound."""


@dataclass(frozen=True, slots=True)
class RoleChange:
    """One change of role, term or known leader this node saw."""

    time: float
    """Wall-clock seconds since the epoch."""
    role: str
    term: int
    leader: NodeId | None


@dataclass(frozen=True, slots=True)
class Sample:
    """One second of this node's life, closed at ``time``."""

    time: float
    commit_index: int
    applied_index: int
    ok: int
    """Proposals that finished OK in this second (only a leader has any)."""
    failed: int
    """Proposals that finished dropped or timed out in this second."""
    p50: float | None
    """Seconds; None when no proposal finished OK."""
    p99: float | None


class ActivityLog:
    """A bounded record of this node's role changes and per-second samples (see the module)."""

    __slots__ = ("_counts", "_failed", "_ok", "_wall", "samples", "timeline")

    def __init__(self, *, timeline: int = DEFAULT_TIMELINE, seconds: int = DEFAULT_SECONDS,
                 wall: Callable[[], float] = time.time) -> None:
        if timeline < 1 or seconds < 1:
            raise ValueError("timeline and seconds must be at least 1")
        self._wall = wall
        self.timeline: deque[RoleChange] = deque(maxlen=timeline)
        self.samples: deque[Sample] = deque(maxlen=seconds)
        self._ok = 0
        self._failed = 0
        # Allocated lazily: a follower, which never finishes a proposal, never holds one.
        self._counts: list[int] | None = None

    wants_saves = False
    """The page shows proposals, not fsyncs (those are in the metrics): the server need not time
    its saves for this log, so with metrics off it does not."""

    # -- ServerObserver -------------------------------------------------------------------------

    def proposal_finished(self, seconds: float, outcome: ProposalOutcome) -> None:
        if outcome is not ProposalOutcome.OK:
            self._failed += 1
            return
        self._ok += 1
        counts = self._counts
        if counts is None:
            counts = self._counts = [0] * (len(LATENCY_BOUNDS) + 1)
        counts[bisect.bisect_left(LATENCY_BOUNDS, seconds)] += 1

    def saved(self, seconds: float, entries: int) -> None:
        pass  # never called: see wants_saves

    def role_changed(self, role: Role, term: int, leader: NodeId | None) -> None:
        self.timeline.append(RoleChange(self._wall(), role.value, term, leader))

    def snapshot_taken(self, seconds: float, size: int, index: int) -> None:
        pass  # the snapshot index is in every status the page polls

    # -- sampling -------------------------------------------------------------------------------

    def sample(self, commit_index: int, applied_index: int, now: float | None = None) -> Sample:
        """Close the second under way: record it with these indexes and start a new one."""
        counts = self._counts
        p50 = p99 = None
        if counts is not None and self._ok:
            p50 = _percentile(counts, self._ok, 0.50)
            p99 = _percentile(counts, self._ok, 0.99)
        sample = Sample(self._wall() if now is None else now, commit_index, applied_index,
                        self._ok, self._failed, p50, p99)
        self.samples.append(sample)
        self._ok = self._failed = 0
        self._counts = None
        return sample

    async def run_sampler(self, indexes: Callable[[], tuple[int, int]],
                          interval: float = 1.0) -> None:
        """Take a sample every ``interval`` seconds, with ``indexes()`` giving (commit, applied),
        until cancelled. Ticks are kept on a fixed grid so samples do not drift apart."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due += interval
            await asyncio.sleep(max(0.0, due - loop.time()))
            if loop.time() - due > interval:
                due = loop.time()  # the loop was stalled: skip the missed ticks, do not burst
            try:
                commit, applied = indexes()
            except Exception:  # a stopping server: its status is gone, so is the sampler's use
                logger.debug("activity sampler: no indexes", exc_info=True)
                continue
            self.sample(commit, applied)

    def start_sampler(self, indexes: Callable[[], tuple[int, int]], *, name: str,
                      interval: float = 1.0) -> asyncio.Task[None]:
        """``run_sampler`` as a task whose failure is logged (with its traceback) when it ends:
        the page then shows no new seconds, and the log says why. The node runs on regardless."""
        task = asyncio.create_task(self.run_sampler(indexes, interval), name=name)
        task.add_done_callback(_log_failure)
        return task

    # -- JSON -----------------------------------------------------------------------------------

    def to_json(self, name_of: Callable[[NodeId], str | None]) -> dict[str, object]:
        """The ``GET /v1/activity`` answer: the timeline with leaders by name, and the samples
        as columns (one list per field, oldest first; latencies in milliseconds)."""
        samples = list(self.samples)
        return {
            "time": self._wall(),
            "timeline": [{"time": c.time, "role": c.role, "term": c.term,
                          "leader": name_of(c.leader) if c.leader is not None else None}
                         for c in self.timeline],
            "samples": {
                "time": [s.time for s in samples],
                "commit_index": [s.commit_index for s in samples],
                "applied_index": [s.applied_index for s in samples],
                "ok": [s.ok for s in samples],
                "failed": [s.failed for s in samples],
                "p50_ms": [_ms(s.p50) for s in samples],
                "p99_ms": [_ms(s.p99) for s in samples],
            },
        }


def indexes_of(server: RaftServer) -> Callable[[], tuple[int, int]]:
    """What ``run_sampler`` reads from a running server: its commit and applied index."""
    def indexes() -> tuple[int, int]:
        status = server.status()
        return status.commit_index, status.applied_index
    return indexes


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.error("%s failed; the cluster page gets no new samples", task.get_name(),
                     exc_info=exc)


def _percentile(counts: list[int], total: int, q: float) -> float:
    """The upper bound of the bucket holding the ``q`` quantile of ``total`` latencies."""
    rank = max(1, math.ceil(q * total))
    seen = 0
    for i, n in enumerate(counts):
        seen += n
        if seen >= rank:
            return LATENCY_BOUNDS[min(i, len(LATENCY_BOUNDS) - 1)]
    raise AssertionError("counts sum to less than total")


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


__all__ = ["DEFAULT_SECONDS", "DEFAULT_TIMELINE", "LATENCY_BOUNDS", "ActivityLog", "RoleChange",
           "Sample", "indexes_of"]

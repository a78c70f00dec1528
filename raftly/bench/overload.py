"""The overload benchmark: writes at ``factor`` times the clients of peak, against the peak.

One cluster of three real ``raftly serve`` processes. First the peak: ``peak_clients``
closed-loop clients PUT to the leader for ``seconds`` (puts/s). Then ``factor`` times as many
clients do the same for ``seconds``: polite clients, each of which, answered ``503``, waits what
``Retry-After`` says (capped at ``RETRY_CAP``, with jitter) and tries again, as a good client
does. A write counts when it starts and ends inside the measured window (after ``warmup``):
the steady state, not the first requests of a thousand clients connecting at once. The
leader's write admission (raftly.kv.admission) refuses what it cannot take at once instead of
queueing it.

``OverloadResult`` holds the goodput under overload (successful puts/s) and its ratio to the
peak, the p50/p99 latency of the successful writes (one attempt, request to answer), the 503s
the clients got (with Retry-After or without) and the node's own count of refused writes, other
errors, and whether the leader held: the leader and term of every node before and after (any
election raises the term). ``event_loop`` is the client's loop and, unless "auto", the nodes'
``--event-loop`` too; ``extra_serve_options`` reach every node (``--max-inflight-writes N``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raftly.bench.http import on_fresh_cluster
from raftly.bench.load import LEADER_TIMEOUT, WARMUP
from raftly.bench.stats import Sample
from raftly.kv.connections import raise_fd_limit
from raftly.localcluster import ProcessCluster
from raftly.storage.disk.fsio import FsyncPolicy

RETRY_CAP = 1.0
"""The longest Retry-After a client honours (seconds)."""
RETRY_JITTER = 1.5
"""A client waits Retry-After times a random factor from 1 to this."""
ERROR_PAUSE = 0.02
"""A client's pause after a failure that gave no Retry-After (no hot loop without a leader)."""


@dataclass(slots=True)
class OverloadResult:
    """The peak, the same cluster at ``overload_clients``, and whether the leader held."""

    peak_clients: int
    overload_clients: int
    peak_rate: float
    """Successful puts/s at ``peak_clients``."""
    goodput: float
    """Successful puts/s at ``overload_clients``."""
    p50_ms: float
    """Successful writes under overload (one attempt)."""
    p99_ms: float
    rejected_503: int
    """503 answers the clients got under overload."""
    retry_after_503: int
    """Of those, the ones that said Retry-After."""
    errors: int
    """Other failures under overload: timeouts, lost connections, other statuses."""
    node_rejected: int
    """Writes the leader's admission refused over both phases (its /v1/status)."""
    admission_limit: int
    """The leader's ``--max-inflight-writes``."""
    leader_before: str | None
    leader_after: str | None
    term_before: int
    term_after: int
    peak_p99_ms: float = float("nan")
    """Successful writes at the peak."""
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """Goodput under overload over the peak rate (the target: >= 0.9)."""
        return self.goodput / self.peak_rate if self.peak_rate > 0 else float("nan")

    @property
    def leader_changes(self) -> int:
        """Elections between before and after (terms started; 0: the leader held)."""
        changed = self.leader_after != self.leader_before
        return max(self.term_after - self.term_before, 1 if changed else 0)

    def as_json(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.__slots__}
        out.update(ratio=self.ratio, leader_changes=self.leader_changes)
        return out


@dataclass(slots=True)
class _Tally:
    ok: int = 0
    rejected: int = 0
    retry_after: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delay-seconds form), capped; None if absent or bad."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return min(max(seconds, 0.0), RETRY_CAP)


async def _polite_load(url: str, clients: int, seconds: float, warmup: float, value: bytes,
                       timeout: float) -> _Tally:
    """``clients`` closed-loop writers that honour Retry-After; counts the writes that start
    and end in the ``seconds`` after the warm-up: ``warmup``, and at least until every client
    has had an answer (at most ``timeout`` more). Writes still open at the end are awaited (with
    their timeout), not counted."""
    import aiohttp

    tally = _Tally()
    window = [math.inf, math.inf]
    """[t0, t1]: set once every client has had its first answer and ``warmup`` has passed."""
    first_answers = 0
    everyone_answered = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=timeout)) as session:

        async def client(n: int) -> None:
            nonlocal first_answers
            first = True
            while (start := time.perf_counter()) < window[1]:
                status, retry_after = 0, None
                try:
                    async with session.put(f"{url}/v1/kv/bench-{n}", data=value,
                                           allow_redirects=False) as resp:
                        await resp.read()
                        status = resp.status
                        retry_after = retry_after_seconds(resp.headers.get("Retry-After"))
                except (aiohttp.ClientError, TimeoutError):
                    pass
                end = time.perf_counter()
                if first:
                    first = False
                    first_answers += 1
                    if first_answers == clients:
                        everyone_answered.set()
                # Started and ended in the window: the steady state, not the storm of
                # connections every client opens at once during the warm-up.
                counted = window[0] <= start and end <= window[1]
                if status == 200:
                    if counted:
                        tally.ok += 1
                        tally.latencies.append(end - start)
                    continue
                if counted:
                    if status == 503:
                        tally.rejected += 1
                        tally.retry_after += retry_after is not None
                    else:
                        tally.errors += 1
                # Jittered, as a polite client does: refused together, not back together.
                await asyncio.sleep(retry_after * random.uniform(1.0, RETRY_JITTER)
                                    if retry_after is not None else ERROR_PAUSE)

        tasks = [asyncio.create_task(client(n)) for n in range(clients)]
        try:
            # The warm-up lasts until every client is connected and answered (on a starved
            # machine a thousand connections take longer than ``warmup``), within a bound.
            await asyncio.sleep(warmup)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(everyone_answered.wait(), timeout)
            window[0] = time.perf_counter()
            window[1] = window[0] + seconds
            done, pending = await asyncio.wait(tasks, timeout=seconds + timeout + 5.0)
            if pending:
                raise TimeoutError(f"{len(pending)} clients did not finish after the window")
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return tally


def _cluster_view(nodes: ProcessCluster) -> tuple[str | None, int, dict[str, Any]]:
    """(the leader most nodes name, the highest term any node is in, the leader's status)."""
    statuses = {n: s for n, s in nodes.statuses().items() if s is not None}
    term = max((int(s["term"]) for s in statuses.values()), default=0)
    named = [s.get("leader") for s in statuses.values()]
    leader = max(set(named), key=named.count) if named else None
    return leader, term, statuses.get(leader or "", {})


def _refused(status: dict[str, Any]) -> int:
    """The leader's count of refused writes (0 when no node could name a leader)."""
    return int(status["admission"]["rejected"]) if status else 0


async def _drive(nodes: ProcessCluster, peak_clients: int, seconds: float, factor: int,
                 warmup: float, value: bytes, timeout: float) -> OverloadResult:
    leader, _ = await asyncio.to_thread(nodes.wait_for_leader, LEADER_TIMEOUT, nodes.names)
    url = nodes.url(leader)
    leader_before, term_before, status = await asyncio.to_thread(_cluster_view, nodes)
    refused_before, limit = _refused(status), int(status["admission"]["limit"])
    peak = await _polite_load(url, peak_clients, seconds, warmup, value, timeout)
    over = await _polite_load(url, peak_clients * factor, seconds, warmup, value, timeout)
    nodes.check_alive()
    leader_after, term_after, status = await asyncio.to_thread(_cluster_view, nodes)
    refused_after = _refused(status)
    peak_sample = Sample(peak_clients, peak.ok, seconds, peak.latencies, peak.errors)
    over_sample = Sample(peak_clients * factor, over.ok, seconds, over.latencies, over.errors)
    notes = []
    if peak.rejected:
        notes.append(f"{peak.rejected} writes refused (503) at the peak already")
    return OverloadResult(
        peak_clients=peak_clients, overload_clients=peak_clients * factor,
        peak_rate=peak_sample.rate, goodput=over_sample.rate, p50_ms=over_sample.p50,
        p99_ms=over_sample.p99, rejected_503=over.rejected, retry_after_503=over.retry_after,
        errors=over.errors,
        node_rejected=refused_after - refused_before if leader_after == leader_before else 0,
        admission_limit=limit, leader_before=leader_before, leader_after=leader_after,
        term_before=term_before, term_after=term_after, peak_p99_ms=peak_sample.p99, notes=notes)


def bench_overload(peak_clients: int, seconds: float, *, factor: int = 4,
                   fsync: FsyncPolicy = "always", base_dir: str | Path | None = None,
                   event_loop: str = "auto", warmup: float = WARMUP, value_size: int = 256,
                   timeout: float = 10.0, extra_serve_options: Sequence[str] = ()
                   ) -> OverloadResult:
    """One run on three fresh node processes: puts/s at ``peak_clients``, then at ``factor``
    times as many polite clients (see the module docstring)."""
    if peak_clients < 1 or factor < 1:
        raise ValueError("peak_clients and factor must be at least 1")
    raise_fd_limit()  # one socket per client
    return on_fresh_cluster(
        "overload", lambda nodes: _drive(nodes, peak_clients, seconds, factor, warmup,
                                         b"o" * value_size, timeout),
        fsync=fsync, base_dir=base_dir, event_loop=event_loop,
        extra_serve_options=extra_serve_options)


__all__ = ["RETRY_CAP", "RETRY_JITTER", "OverloadResult", "bench_overload", "retry_after_seconds"]

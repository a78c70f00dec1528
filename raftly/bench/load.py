"""Load generation: C closed-loop clients of one write operation, measured after a warm-up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from raftly.bench.stats import Sample

VALUE = b"0123456789abcdef"
"""The 16-byte value every client writes."""
WARMUP = 0.5
"""Seconds of load before each measured window (connections open, leader settles)."""
LEADER_TIMEOUT = 30.0
"""Seconds a fresh cluster gets to elect a leader all its nodes agree on."""

Stats = dict[str, tuple[int, int]]
"""Per node name: (fsyncs, entries_persisted) from the server's ``stats``."""

Op = Callable[[int, int], Awaitable[bool]]
"""``op(client, seq)`` performs one write; True when it succeeded."""
Probe = Callable[[], Awaitable[tuple[int, int, int, int]]]
"""Returns (leader fsyncs, leader entries, follower fsyncs, follower entries) now."""


async def closed_loop(op: Op, clients: int, seconds: float, *, warmup: float = WARMUP,
                      probe: Probe | None = None, error_pause: float = 0.02) -> Sample:
    """Run ``clients`` closed loops of ``op``; measure the ``seconds`` after ``warmup``.

    A write counts when it completes inside the window. After the window no new write starts;
    the writes still open are awaited (with a deadline) and not counted.
    """
    begin = time.perf_counter()
    t0 = begin + warmup
    t1 = t0 + seconds
    latencies: list[float] = []
    counts = {"ops": 0, "errors": 0}

    async def client(n: int) -> None:
        seq = 0
        while True:
            start = time.perf_counter()
            if start >= t1:
                return
            ok = await op(n, seq)
            seq += 1
            end = time.perf_counter()
            if t0 <= end <= t1:
                if ok:
                    counts["ops"] += 1
                    latencies.append(end - start)
                else:
                    counts["errors"] += 1
            if not ok:
                await asyncio.sleep(error_pause)  # no hot loop while there is no leader

    async def probes() -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]] | None:
        if probe is None:
            return None
        await asyncio.sleep(max(0.0, t0 - time.perf_counter()))
        first = await probe()
        await asyncio.sleep(max(0.0, t1 - time.perf_counter()))
        return first, await probe()

    tasks = [asyncio.create_task(client(n)) for n in range(clients)]
    probe_task = asyncio.create_task(probes())
    try:
        # Each op carries its own timeout; this bound only guards against a stuck one.
        done, pending = await asyncio.wait([*tasks, probe_task], timeout=t1 - begin + 30.0)
        if pending:
            raise TimeoutError(f"{len(pending)} clients did not finish within 30 s of the end")
        for task in done:
            task.result()  # re-raise what a client died of
    finally:
        for task in [*tasks, probe_task]:
            task.cancel()
        await asyncio.gather(*tasks, probe_task, return_exceptions=True)
    sample = Sample(clients, counts["ops"], seconds, latencies, counts["errors"])
    measured = probe_task.result()
    if measured is not None:
        (lf0, le0, ff0, fe0), (lf1, le1, ff1, fe1) = measured
        sample.leader_fsyncs, sample.leader_entries = lf1 - lf0, le1 - le0
        sample.follower_fsyncs, sample.follower_entries = ff1 - ff0, fe1 - fe0
    return sample


def split_stats(stats: Stats, leader: str) -> tuple[int, int, int, int]:
    lf, le = stats.get(leader, (0, 0))
    ff = sum(f for name, (f, _) in stats.items() if name != leader)
    fe = sum(e for name, (_, e) in stats.items() if name != leader)
    return lf, le, ff, fe


__all__ = ["LEADER_TIMEOUT", "VALUE", "WARMUP", "Op", "Probe", "Stats", "closed_loop",
           "split_stats"]

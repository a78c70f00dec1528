"""The ActivityLog behind the cluster page: a bounded timeline of role changes, per-second samples
of indexes, proposal counts and latency percentiles that are never below the true value, and a
sampler that keeps ticking; on a real in-process cluster, ``GET /v1/activity``."""

from __future__ import annotations

import asyncio
import logging
import math

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kv_helpers import FAST, call, run
from polling import eventually

from raftly.core.node import Role
from raftly.kv.activity import LATENCY_BOUNDS, ActivityLog
from raftly.kv.service import LocalCluster
from raftly.server.observer import ProposalOutcome

BUCKET_RATIO = 2 ** (1 / 8)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_role_changes_are_kept_with_their_time_and_the_oldest_dropped_past_the_bound() -> None:
    clock = Clock()
    log = ActivityLog(timeline=3, wall=clock)
    for term in range(1, 6):
        clock.now += 1
        log.role_changed(Role.CANDIDATE, term, None)
    log.role_changed(Role.FOLLOWER, 5, 2)
    assert [(c.term, c.role, c.leader) for c in log.timeline] == [
        (4, "candidate", None), (5, "candidate", None), (5, "follower", 2)]
    assert log.timeline[0].time == 1004.0
    answer = log.to_json({2: "n2"}.get)
    assert answer["timeline"][-1] == {"time": 1005.0, "role": "follower", "term": 5,
                                      "leader": "n2"}


def test_a_sample_closes_the_second_counts_and_latencies_and_starts_a_new_one() -> None:
    log = ActivityLog(wall=Clock())
    for _ in range(98):
        log.proposal_finished(0.001, ProposalOutcome.OK)
    for _ in range(2):
        log.proposal_finished(0.100, ProposalOutcome.OK)
    log.proposal_finished(5.0, ProposalOutcome.TIMED_OUT)
    log.proposal_finished(0.2, ProposalOutcome.DROPPED)
    first = log.sample(commit_index=120, applied_index=118, now=1.0)
    assert (first.ok, first.failed, first.commit_index, first.applied_index) == (100, 2, 120, 118)
    assert first.p50 is not None and 0.001 <= first.p50 <= 0.001 * BUCKET_RATIO
    assert first.p99 is not None and 0.100 <= first.p99 <= 0.100 * BUCKET_RATIO
    # The next second starts empty: a follower's seconds have no latency at all.
    second = log.sample(commit_index=130, applied_index=130, now=2.0)
    assert (second.ok, second.failed, second.p50, second.p99) == (0, 0, None, None)
    samples = log.to_json(str)["samples"]
    assert samples["ok"] == [100, 0] and samples["commit_index"] == [120, 130]
    assert samples["p50_ms"][1] is None and 1.0 <= samples["p50_ms"][0] <= 1.1


def test_samples_are_bounded_to_the_last_seconds() -> None:
    log = ActivityLog(seconds=5, wall=Clock())
    for i in range(12):
        log.sample(i, i, now=float(i))
    assert [s.commit_index for s in log.samples] == [7, 8, 9, 10, 11]


@given(st.lists(st.floats(min_value=30e-6, max_value=100.0), min_size=1, max_size=300),
       st.sampled_from([0.5, 0.99]))
def test_a_percentile_is_the_true_one_rounded_up_to_its_bucket(latencies: list[float],
                                                              q: float) -> None:
    log = ActivityLog(wall=Clock())
    for seconds in latencies:
        log.proposal_finished(seconds, ProposalOutcome.OK)
    sample = log.sample(0, 0, now=0.0)
    exact = sorted(latencies)[max(1, math.ceil(q * len(latencies))) - 1]
    got = sample.p50 if q == 0.5 else sample.p99
    assert got is not None and exact <= got <= exact * BUCKET_RATIO * (1 + 1e-9)


def test_a_latency_past_the_last_bucket_reports_the_last_bound() -> None:
    log = ActivityLog(wall=Clock())
    log.proposal_finished(1e6, ProposalOutcome.OK)
    assert log.sample(0, 0, now=0.0).p99 == LATENCY_BOUNDS[-1]


def test_the_sampler_ticks_and_survives_a_failing_read_of_the_indexes() -> None:
    async def main() -> None:
        log = ActivityLog()
        reads = 0

        def indexes() -> tuple[int, int]:
            nonlocal reads
            reads += 1
            if reads == 2:
                raise RuntimeError("server stopping")
            return reads, reads

        task = asyncio.create_task(log.run_sampler(indexes, interval=0.01))
        try:
            await eventually(lambda: len(log.samples) >= 3, what="three samples")
        finally:
            task.cancel()
        assert [s.commit_index for s in log.samples][:3] == [1, 3, 4]

    run(main())


def test_a_sampler_that_dies_is_logged_with_its_error(caplog: pytest.LogCaptureFixture) -> None:
    def broken_clock() -> float:
        raise RuntimeError("clock bug")

    def failures() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "raftly n1: activity failed" in r.getMessage()]

    async def main() -> None:
        log = ActivityLog(wall=broken_clock)
        task = log.start_sampler(lambda: (1, 1), name="raftly n1: activity", interval=0.01)
        await eventually(lambda: failures() or None, what="the sampler's death logged")
        assert task.done()

    caplog.set_level(logging.ERROR, logger="raftly.kv.activity")
    run(main())
    failed = failures()
    assert len(failed) == 1 and "clock bug" in str(failed[0].exc_info[1])  # type: ignore[index]


def test_the_activity_route_shows_the_leaders_writes_and_its_election() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST) as cluster:
            leader = await cluster.wait_for_leader()
            async with aiohttp.ClientSession() as session:
                for i in range(10):
                    status, _, _ = await call(session, "PUT", f"{leader.url}/v1/kv/k{i}",
                                              data=b"v")
                    assert status == 200

                async def written() -> dict[str, object] | None:
                    status, body, _ = await call(session, "GET", leader.url + "/v1/activity")
                    assert status == 200
                    return body if sum(body["samples"]["ok"]) >= 10 else None

                body = await eventually(written, what="ten writes in the samples")
            assert body["id"] == leader.name
            last = body["timeline"][-1]
            assert (last["role"], last["leader"]) == ("leader", leader.name)
            assert last["term"] == leader.server.status().term
            assert any(ms is not None and ms > 0 for ms in body["samples"]["p99_ms"])

    run(main())

"""Write admission (raftly.kv.admission) on its own and on a real node's HTTP API: past the limit
of writes in flight a write is answered 503 with Retry-After at once, before anything is
proposed, nothing waits in a queue, and a refused write retried later is applied exactly once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
import pytest
from kv_helpers import FAST, call, run
from polling import eventually

from raftly.kv.admission import WriteAdmission
from raftly.kv.http import TOO_MANY_WRITES, Limits
from raftly.kv.service import LocalCluster, RunningNode

LIMIT = 2


def test_admission_admits_up_to_its_limit_and_counts_the_refused() -> None:
    admission = WriteAdmission(LIMIT)
    assert [admission.enter() for _ in range(LIMIT + 2)] == [True] * LIMIT + [False, False]
    assert admission.full
    assert (admission.in_flight, admission.rejected) == (LIMIT, 2)
    admission.leave()
    assert not admission.full
    assert admission.enter()
    assert admission.as_json() == {"in_flight": LIMIT, "limit": LIMIT, "rejected": 2}


def test_admission_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError):
        WriteAdmission(0)


def hold_proposals(node: RunningNode) -> tuple[asyncio.Event, list[int]]:
    """Make ``node``'s proposals wait for the returned event before they go to Raft; the list
    records how many were waiting at once, each time one arrives."""
    release = asyncio.Event()
    waiting: list[int] = []
    propose: Callable[..., Coroutine[Any, Any, object]] = node.server.propose

    async def held(command: bytes, **kwargs: Any) -> object:
        waiting.append(len(waiting) + 1)
        await release.wait()
        return await propose(command, **kwargs)

    node.server.propose = held  # type: ignore[method-assign]
    return release, waiting


def test_writes_past_the_limit_get_503_with_retry_after_and_nothing_queues() -> None:
    async def main() -> None:
        limits = Limits(max_inflight_writes=LIMIT)
        async with LocalCluster(1, config=FAST, limits=limits) as cluster:
            node = await cluster.wait_for_leader()
            release, waiting = hold_proposals(node)
            async with aiohttp.ClientSession() as s:
                held = [asyncio.create_task(call(s, "PUT", f"{node.url}/v1/kv/held-{n}",
                                                 data=b"v")) for n in range(LIMIT)]
                await eventually(lambda: node.api.admission.in_flight == LIMIT,
                                 what="the first writes in flight")
                before = node.server.status().last_index
                # A flood while the limit is reached: every one is answered at once (the held
                # writes still wait), none reaches Raft, none is queued.
                flood = await asyncio.gather(*(
                    call(s, "PUT", f"{node.url}/v1/kv/flood-{n}", data=b"v") for n in range(20)))
                for status, body, headers in flood:
                    assert status == 503
                    assert headers["Retry-After"] == "1"
                    assert body["code"] == TOO_MANY_WRITES
                assert not any(t.done() for t in held)
                # Other write routes go through the same gate.
                txn = json.dumps({"success": [{"put": {"key": "t", "value": "v"}}]}).encode()
                assert (await call(s, "POST", f"{node.url}/v1/txn", data=txn))[0] == 503
                assert (await call(s, "DELETE", f"{node.url}/v1/kv/held-0"))[0] == 503
                assert max(waiting) == LIMIT
                assert node.server.pending_proposals == 0
                assert node.server.status().last_index == before  # nothing reached the log
                _, status, _ = await call(s, "GET", f"{node.url}/v1/status")
                assert status["admission"] == {"in_flight": LIMIT, "limit": LIMIT,
                                               "rejected": 22}

                release.set()
                assert [(await t)[0] for t in held] == [200] * LIMIT
                assert node.api.admission.in_flight == 0
                # Retried now, each refused write is applied, once.
                for n in range(20):
                    assert (await call(s, "PUT", f"{node.url}/v1/kv/flood-{n}",
                                       data=b"v"))[0] == 200
                kvs, _ = node.kv.range("", limit=100)
                assert sorted((kv.key, kv.version) for kv in kvs) == sorted(
                    [(f"held-{n}", 1) for n in range(LIMIT)]
                    + [(f"flood-{n}", 1) for n in range(20)])  # no "t": the txn was refused
                assert node.api.admission.in_flight == 0

    run(main())


def test_reads_are_not_limited_by_write_admission() -> None:
    async def main() -> None:
        async with LocalCluster(1, config=FAST, limits=Limits(max_inflight_writes=1)) as cluster:
            node = await cluster.wait_for_leader()
            async with aiohttp.ClientSession() as s:
                assert (await call(s, "PUT", f"{node.url}/v1/kv/k", data=b"v"))[0] == 200
                release, _ = hold_proposals(node)
                held = asyncio.create_task(call(s, "PUT", f"{node.url}/v1/kv/k", data=b"w"))
                await eventually(lambda: node.api.admission.full, what="the write in flight")
                assert (await call(s, "GET", f"{node.url}/v1/kv/k"))[:2] == (200, b"v")
                assert (await call(s, "GET", f"{node.url}/v1/kv/k?consistency=stale"))[0] == 200
                release.set()
                assert (await held)[0] == 200

    run(main())

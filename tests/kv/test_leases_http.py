"""Leases on a real 3-node cluster (127.0.0.1): the /v1/leases routes, and expiry by the
leader's countdown: keys go only after the TTL without keepalives, never while kept alive, and
a leader change restarts the countdown instead of expiring early.

Timing tests use TTLs of a second or two and poll (every 10 ms) with generous deadlines; a
deletion is checked against the earliest moment it may happen, measured on this side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import aiohttp
from kv_helpers import FAST, call, followers, run
from polling import eventually

from raftly.kv.service import LocalCluster, RunningNode


async def grant(s: aiohttp.ClientSession, node: RunningNode, ttl: int, **extra: int
                ) -> tuple[int, Any]:
    status, body, _ = await call(s, "POST", node.url + "/v1/leases",
                                 data=json.dumps({"ttl": ttl, **extra}).encode())
    return status, body


async def leased_key(s: aiohttp.ClientSession, node: RunningNode, ttl: int, key: str) -> int:
    """A new lease of ``ttl`` seconds with ``key`` (value ``x``) attached; its id."""
    status, lease = await grant(s, node, ttl)
    assert status == 200, lease
    status, body, _ = await call(s, "PUT", node.url + f"/v1/kv/{key}?lease={lease['id']}",
                                 data=b"x")
    assert status == 200, body
    return int(lease["id"])


def leader_of(cluster: LocalCluster) -> RunningNode | None:
    leaders = [n for n in cluster.nodes if not n.closed and n.server.is_leader]
    return leaders[0] if len(leaders) == 1 else None


def test_grant_read_keepalive_and_revoke_a_lease() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST) as cluster, aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            status, granted = await grant(s, leader, 60)
            assert status == 200 and granted["ttl"] == 60 and granted["id"] == granted["index"]
            lease = granted["id"]
            status, other = await grant(s, leader, 30, id=12345)
            assert status == 200 and other["id"] == 12345
            status, body = await grant(s, leader, 30, id=12345)
            assert status == 409 and body["code"] == "lease_exists"
            for bad in ({"ttl": 0}, {"ttl": 86401}, {"ttl": "5"}, {"ttl": True}, {},
                        {"ttl": 5, "id": 0}, {"ttl": 5, "extra": 1}):
                status, body, _ = await call(s, "POST", leader.url + "/v1/leases",
                                             data=json.dumps(bad).encode())
                assert status == 400 and "field" in body, bad
            await call(s, "PUT", leader.url + f"/v1/kv/a?lease={lease}", data=b"1")
            await call(s, "PUT", leader.url + f"/v1/kv/b?lease={lease}", data=b"2")
            status, body, _ = await call(s, "POST",
                                         leader.url + f"/v1/leases/{lease}/keepalive")
            assert status == 200 and body == {"id": lease, "ttl": 60}
            status, listed, _ = await call(s, "GET", leader.url + "/v1/leases")
            assert status == 200 and [x["id"] for x in listed] == [lease, 12345]
            assert listed[0]["keys"] == ["a", "b"] and 59 < listed[0]["remaining"] <= 60
            follower = followers(cluster, leader)[0]
            await eventually(lambda: follower.kv.lease(lease) is not None)
            status, one, _ = await call(s, "GET", follower.url + f"/v1/leases/{lease}")
            # A follower counts nothing down: it does not know the remaining time.
            assert status == 200 and one["remaining"] is None and one["keys"] == ["a", "b"]
            for method, path in (("POST", f"/v1/leases/{lease}/keepalive"),
                                 ("DELETE", f"/v1/leases/{lease}"),
                                 ("POST", "/v1/leases")):
                status, _, headers = await call(s, method, follower.url + path, data=b"{}")
                assert status == 307 and headers["Location"].endswith(path), path
            status, body, _ = await call(s, "DELETE", leader.url + f"/v1/leases/{lease}")
            assert status == 200 and body["deleted"] == 2 and body["revision"] == body["index"]
            assert leader.kv.get("a") is None and leader.kv.get("b") is None
            for method, path in (("DELETE", f"/v1/leases/{lease}"),
                                 ("POST", f"/v1/leases/{lease}/keepalive"),
                                 ("GET", f"/v1/leases/{lease}")):
                status, body, _ = await call(s, method, leader.url + path)
                assert status == 404 and body["code"] == "lease_not_found", path
            for bad in ("abc", "0", "9" * 5000, str(1 << 63)):
                assert (await call(s, "GET", leader.url + f"/v1/leases/{bad}"))[0] == 400, bad

    run(main())


async def wait_deleted(node: RunningNode, key: str, earliest: float, timeout: float = 15.0
                       ) -> float:
    """Poll until ``key`` is gone on ``node``; fail if that happens before loop time
    ``earliest``. Returns when it was seen gone."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while node.kv.get(key) is not None:
        assert loop.time() < deadline, f"{key} was never deleted"
        await asyncio.sleep(0.01)
    gone = loop.time()
    assert gone >= earliest, f"{key} deleted {earliest - gone:.3f}s before its TTL ran out"
    return gone


def test_an_expired_lease_deletes_its_keys_only_after_the_ttl() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST) as cluster, aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            loop = asyncio.get_running_loop()
            sent = loop.time()
            lease = await leased_key(s, leader, 1, "ephemeral")
            gone = await wait_deleted(leader, "ephemeral", earliest=sent + 1)
            assert gone < sent + 5, "expired within a few seconds of its TTL"
            assert leader.kv.lease(lease) is None
            for node in cluster.nodes:  # replicated: every node deleted it
                await eventually(lambda n=node: n.kv.get("ephemeral") is None)  # type: ignore[misc]

    run(main())


def test_a_lease_kept_alive_never_expires_and_expires_once_the_keepalives_stop() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST) as cluster, aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            loop = asyncio.get_running_loop()
            lease = await leased_key(s, leader, 1, "held")
            end = loop.time() + 3.0  # three TTLs
            last = loop.time()
            while loop.time() < end:
                sent = loop.time()
                status, body, _ = await call(
                    s, "POST", leader.url + f"/v1/leases/{lease}/keepalive")
                assert status == 200 and body["ttl"] == 1, body
                last = sent
                while loop.time() < sent + 0.3:
                    assert leader.kv.get("held") == b"x", "expired while kept alive"
                    await asyncio.sleep(0.01)
            await wait_deleted(leader, "held", earliest=last + 1)

    run(main())


def test_a_leader_change_restarts_every_countdown_instead_of_expiring_early() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST) as cluster, aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            loop = asyncio.get_running_loop()
            lease = await leased_key(s, leader, 2, "k")
            kept = loop.time()
            status, _, _ = await call(s, "POST",
                                      leader.url + f"/v1/leases/{lease}/keepalive")
            assert status == 200
            # Most of the TTL passes, then the lead moves: the new leader counts the whole TTL
            # from its election, so the key outlives the old deadline (kept + 2).
            while loop.time() < kept + 1.5:
                assert leader.kv.get("k") == b"x"
                await asyncio.sleep(0.01)
            target = followers(cluster, leader)[0]
            moved = loop.time()
            await leader.server.transfer_leadership_and_wait(target.server.id)
            gone = await wait_deleted(target, "k", earliest=moved + 2)
            assert gone > kept + 3.5
            assert leader_of(cluster) is target, "the lead stayed where it was moved"

    run(main(), timeout=60)


def test_keepalives_through_leader_changes_keep_the_lease() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST) as cluster, aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            loop = asyncio.get_running_loop()
            lease = await leased_key(s, leader, 2, "k")
            stop = False

            async def keep_alive() -> None:
                # As a real client does: each attempt bounded well below the TTL, so that one
                # stuck on a deposed leader (its ReadIndex waits) does not starve the next.
                while not stop:
                    current = leader_of(cluster)
                    if current is not None:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(call(
                                s, "POST", current.url + f"/v1/leases/{lease}/keepalive"),
                                0.4)
                    await asyncio.sleep(0.2)

            task = asyncio.create_task(keep_alive())
            try:
                for _ in range(3):
                    current = await cluster.wait_for_leader()
                    target = followers(cluster, current)[0]
                    await current.server.transfer_leadership_and_wait(target.server.id)
                    until = loop.time() + 1.0
                    while loop.time() < until:
                        for node in cluster.nodes:
                            assert node.kv.get("k") == b"x", "expired while kept alive"
                        await asyncio.sleep(0.01)
            finally:
                stop = True
                await task

    run(main(), timeout=60)


def test_a_grant_past_the_lease_cap_is_429_too_many_leases() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST) as cluster, aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            for node in cluster.nodes:  # the cap is the state machine's, equal on every node
                node.kv.max_leases = 1
            assert (await grant(s, leader, 60))[0] == 200
            status, body = await grant(s, leader, 60)
            assert status == 429 and body["code"] == "too_many_leases", body
            assert len(leader.kv.leases()) == 1

    run(main())

"""The KV HTTP API against in-process 3-node clusters (TCP on 127.0.0.1, or a MemoryNetwork)."""

from __future__ import annotations

import functools
from typing import Any

import aiohttp
from kv_helpers import FAST, call, followers, run
from polling import eventually

from raftly.kv.http import Limits
from raftly.kv.service import LocalCluster, RunningNode

SMALL = Limits(max_key_bytes=64, max_value_bytes=1024, max_list_limit=50)


def test_put_get_delete_and_404() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST) as cluster, aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            url = leader.url + "/v1/kv/"
            status, body, _ = await call(s, "PUT", url + "greeting", data=b"hello")
            assert status == 200 and isinstance(body["index"], int)
            first = body["index"]
            status, body, headers = await call(s, "GET", url + "greeting")
            assert (status, body) == (200, b"hello")
            assert headers["Content-Type"] == "application/octet-stream"
            status, body, _ = await call(s, "PUT", url + "greeting", data=b"")
            assert status == 200 and body["index"] > first
            assert (await call(s, "GET", url + "greeting"))[:2] == (200, b"")
            status, body, _ = await call(s, "DELETE", url + "greeting")
            assert status == 200 and body["deleted"] is True
            status, body, _ = await call(s, "DELETE", url + "greeting")
            assert status == 200 and body["deleted"] is False
            status, body, _ = await call(s, "GET", url + "greeting")
            assert status == 404 and body["error"] == "key not found" and body["leader"] == "n" \
                + str(leader.server.id)
            # Keys are whole (percent-decoded) paths: slashes and any unicode are fine.
            assert (await call(s, "PUT", url + "a/b%2Fc%20%C3%A9", data=b"x"))[0] == 200
            assert (await call(s, "GET", url + "a%2Fb/c%20é"))[:2] == (200, b"x")
            # Every node applied the same.
            for node in cluster.nodes:
                await eventually(functools.partial(_has, node, "a/b/c é", b"x"),
                                 what="replication")

    run(main())


async def _has(node: RunningNode, key: str, value: bytes) -> bool:
    return node.kv.get(key) == value


def test_cas_200_and_412() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST) as cluster, aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            url = leader.url + "/v1/kv/lock"
            # (The empty expectation is spelled expect_base64=; a bare expect= is refused.)
            status, body, _ = await call(s, "PUT", url + "?expect_base64=", data=b"me")
            assert status == 412 and "error" in body, "a missing key never matches"
            await call(s, "PUT", url, data=b"free")
            status, body, _ = await call(s, "PUT", url + "?expect=taken", data=b"me")
            assert status == 412
            status, body, _ = await call(s, "PUT", url + "?expect=free", data=b"me")
            assert status == 200 and body["swapped"] is True and "index" in body
            assert (await call(s, "GET", url))[1] == b"me"
            status, _, _ = await call(s, "PUT", url + "?expect=free", data=b"other")
            assert status == 412
            assert (await call(s, "GET", url))[1] == b"me"

    run(main())


def test_follower_redirects_writes_and_serves_reads() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST) as cluster, aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            follower = followers(cluster, leader)[0]
            status, body, headers = await call(s, "PUT", follower.url + "/v1/kv/k%2F1?expect=a",
                                               data=b"v")
            assert status == 307
            assert headers["Location"] == leader.url + "/v1/kv/k%2F1?expect=a"
            assert body["leader"] == leader.name and "error" in body
            status, _, headers = await call(s, "DELETE", follower.url + "/v1/kv/k")
            assert status == 307 and headers["Location"] == leader.url + "/v1/kv/k"
            # aiohttp follows a 307 with the same method and body.
            async with s.put(follower.url + "/v1/kv/k", data=b"v1") as resp:
                assert resp.status == 200
            # Linearizable reads are served by the follower itself (ReadIndex), not redirected:
            # the write above is visible at once.
            status, body, _ = await call(s, "GET", follower.url + "/v1/kv/k")
            assert (status, body) == (200, b"v1")
            status, body, _ = await call(s, "GET", follower.url + "/v1/kv?prefix=k")
            assert (status, body) == (200, [{"key": "k", "value": "v1"}])
            # A stale read answers from the local copy without asking anyone.
            status, body, _ = await call(s, "GET", follower.url + "/v1/kv/k?consistency=stale")
            assert status in (200, 404)

    run(main())


def test_list_prefix_limit_and_binary_values() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST, limits=SMALL) as cluster, \
                aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            for key, value in [("user/2", b"bob"), ("user/1", b"al"), ("users", b"x"),
                               ("bin", b"\xff\x00")]:
                assert (await call(s, "PUT", f"{leader.url}/v1/kv/{key}", data=value))[0] == 200
            base = leader.url + "/v1/kv"
            status, body, _ = await call(s, "GET", base + "?prefix=user/")
            assert status == 200
            assert body == [{"key": "user/1", "value": "al"}, {"key": "user/2", "value": "bob"}]
            status, body, _ = await call(s, "GET", base + "?prefix=user&limit=2")
            assert [item["key"] for item in body] == ["user/1", "user/2"]
            status, body, _ = await call(s, "GET", base)
            assert body[0] == {"key": "bin", "value_base64": "/wA="}
            assert len(body) == 4
            status, body, _ = await call(s, "GET", base + "?prefix=nothing")
            assert (status, body) == (200, [])
            for bad in ("limit=0", "limit=51", "limit=x", "limit=-1", "consistency=weird"):
                status, body, _ = await call(s, "GET", base + "?" + bad)
                assert status == 400 and body["error"], bad

    run(main())


def test_status_on_every_node() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST) as cluster, aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            await call(s, "PUT", leader.url + "/v1/kv/x", data=b"1")
            names = ["n1", "n2", "n3"]
            for node in cluster.nodes:
                async def applied(node: RunningNode = node) -> dict[str, Any] | None:
                    status, body, _ = await call(s, "GET", node.url + "/v1/status")
                    assert status == 200
                    return body if body["applied_index"] >= 2 else None

                body = await eventually(applied, what="applied on " + node.name)
                assert body["id"] == node.name
                assert body["role"] == ("leader" if node is leader else "follower")
                assert body["leader"] == leader.name and body["leader_api"] == leader.url
                assert body["term"] >= 1 and body["commit_index"] >= body["applied_index"]
                assert [m["id"] for m in body["members"]] == names
                assert {m["api"] for m in body["members"]} == set(cluster.urls)

    run(main())


def test_size_limits_and_bad_input() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST, limits=SMALL) as cluster, \
                aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            url = leader.url + "/v1/kv/"
            status, body, _ = await call(s, "PUT", url + "k", data=b"x" * 1025)
            assert status == 413 and "1024" in body["error"]
            assert (await call(s, "PUT", url + "k", data=b"x" * 1024))[0] == 200

            async def chunks() -> Any:  # no Content-Length: the limit is enforced while reading
                for _ in range(10):
                    yield b"y" * 200

            async with s.put(url + "k", data=chunks()) as resp:
                assert resp.status == 413 and "error" in await resp.json()
            for method in ("PUT", "GET", "DELETE"):
                status, body, _ = await call(s, method, url + "k" * 65, data=b"")
                assert status == 413 and "key" in body["error"], method
            assert (await call(s, "PUT", url + "é" * 32, data=b""))[0] == 200  # 64 bytes
            assert (await call(s, "GET", url + "k"))[1] == b"x" * 1024, "nothing half-written"
            for headers in ({"X-Raftly-Client": "c"}, {"X-Raftly-Seq": "1"},
                            {"X-Raftly-Client": "c", "X-Raftly-Seq": "0"},
                            {"X-Raftly-Client": "c", "X-Raftly-Seq": "x"},
                            {"X-Raftly-Client": "c", "X-Raftly-Seq": "+1"},
                            {"X-Raftly-Client": "c", "X-Raftly-Seq": "1", "X-Raftly-Ack": "2"},
                            {"X-Raftly-Client": "c" * 200, "X-Raftly-Seq": "1"}):
                status, body, _ = await call(s, "PUT", url + "k", data=b"", headers=headers)
                assert status == 400 and "error" in body, headers
            status, body, _ = await call(s, "GET", leader.url + "/v2/nothing")
            assert status == 404 and "error" in body
            status, body, headers = await call(s, "POST", url + "k", data=b"")
            assert status == 405 and "error" in body and "PUT" in headers["Allow"]
            status, body, _ = await call(s, "GET", leader.url + "/v1/kv/")
            assert status == 404 and "error" in body
            # The node is still healthy after all that.
            assert (await call(s, "GET", url + "k"))[0] == 200

    run(main())


def test_exactly_once_retry_over_http() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST) as cluster, aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            url = leader.url + "/v1/kv/counter"
            session = {"X-Raftly-Client": "client-1", "X-Raftly-Seq": "1"}
            status, body, _ = await call(s, "PUT", url, data=b"1", headers=session)
            first = body["index"]
            await call(s, "PUT", url, data=b"2")  # someone else writes in between
            status, body, _ = await call(s, "PUT", url, data=b"1", headers=session)
            assert (status, body["index"]) == (200, first), "the retry got the first result"
            assert (await call(s, "GET", url))[1] == b"2", "and was not applied again"
            cas = {"X-Raftly-Client": "client-1", "X-Raftly-Seq": "2", "X-Raftly-Ack": "2"}
            assert (await call(s, "PUT", url + "?expect=2", data=b"3", headers=cas))[0] == 200
            await call(s, "PUT", url, data=b"2")
            # Applied again, this CAS would swap; the retry must report the first swap only.
            status, body, _ = await call(s, "PUT", url + "?expect=2", data=b"3", headers=cas)
            assert status == 200 and body["swapped"] is True
            assert (await call(s, "GET", url))[1] == b"2"
            # seq 1 is below the acknowledged window now: its outcome can't be known any more.
            status, body, _ = await call(s, "PUT", url, data=b"1", headers=session)
            assert status == 409 and body["code"] == "stale_seq"
            assert (await call(s, "GET", url))[1] == b"2"
            # A resend marked as a retry from a client no node remembers: unknown, not applied.
            stranger = {"X-Raftly-Client": "stranger", "X-Raftly-Seq": "7",
                        "X-Raftly-Retry": "1"}
            status, body, _ = await call(s, "PUT", url, data=b"9", headers=stranger)
            assert status == 409 and body["code"] == "stale_seq"
            assert (await call(s, "GET", url))[1] == b"2"
            bad = {**stranger, "X-Raftly-Retry": "yes"}
            assert (await call(s, "PUT", url, data=b"9", headers=bad))[0] == 400

    run(main())


def test_no_leader_503_and_unknown_outcome_504() -> None:
    async def main() -> None:
        limits = Limits(write_timeout=0.3, read_timeout=0.3)
        async with LocalCluster(3, config=FAST, transport="memory", limits=limits) as cluster, \
                aiohttp.ClientSession() as s:
            assert cluster.network is not None
            leader = await cluster.wait_for_leader()
            await call(s, "PUT", leader.url + "/v1/kv/k", data=b"v")
            cluster.network.disconnect(leader.server.id)
            # Still leader for a moment (check-quorum steps it down only after an election
            # timeout): the write is accepted, cannot commit, and its outcome is unknown.
            status, body, _ = await call(s, "PUT", leader.url + "/v1/kv/k", data=b"lost?")
            if status == 504:
                assert "unknown" in body["error"]
            else:  # the node stepped down first on a slow machine
                assert status == 503

            async def no_leader() -> tuple[int, Any, Any] | None:
                status, body, headers = await call(s, "PUT", leader.url + "/v1/kv/k", data=b"x")
                return (status, body, headers) if status == 503 else None

            status, body, headers = await eventually(no_leader, what="503 on the cut-off node")
            assert body["leader"] is None and headers["Retry-After"] == "1"
            # A linearizable read there cannot be confirmed either; a stale one can.
            assert (await call(s, "GET", leader.url + "/v1/kv/k"))[0] == 503
            assert (await call(s, "GET", leader.url + "/v1/kv/k?consistency=stale"))[:2] == \
                (200, b"v")
            cluster.network.connect(leader.server.id)
            await cluster.wait_for_leader()

    run(main())

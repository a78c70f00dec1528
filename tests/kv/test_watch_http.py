"""``GET /v1/watch`` on real 3-node clusters (127.0.0.1): the NDJSON stream, progress lines,
410 once history is gone, the watch cap, and no gap and no duplicate across a reconnect to
another node and across the leader's death."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
from kv_helpers import FAST, call, followers, run
from polling import eventually

from raftly.kv.http import Limits
from raftly.kv.service import LocalCluster, RunningNode
from raftly.kv.state_machine import KVStateMachine, Put, encode
from raftly.kv.watch_http import WatchApi
from raftly.kv.watch_hub import WatchHub
from raftly.server.snapshots import SnapshotSettings

QUICK = Limits(watch_progress_interval=0.2)


class Stream:
    """One open watch: its lines, parsed, as they come."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp

    async def line(self, timeout: float = 10.0) -> dict[str, Any] | None:
        """The next line, or None at the end of the stream."""
        raw = await asyncio.wait_for(self.resp.content.readline(), timeout)
        return json.loads(raw) if raw else None

    async def event(self, timeout: float = 10.0) -> dict[str, Any] | None:
        """The next line that is not a progress line."""
        while True:
            line = await self.line(timeout)
            if line is None or line["type"] != "progress":
                return line


async def open_watch(s: aiohttp.ClientSession, node: RunningNode, query: str) -> Stream:
    resp = await s.get(node.url + "/v1/watch?" + query)
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/x-ndjson"
    return Stream(resp)


def test_a_watch_streams_changes_under_its_prefix_in_revision_order() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST) as cluster, aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            _, first, _ = await call(s, "PUT", leader.url + "/v1/kv/cfg/a", data=b"1")
            await call(s, "PUT", leader.url + "/v1/kv/other", data=b"x")
            follower = followers(cluster, leader)[0]
            await eventually(lambda: follower.kv.revision >= first["revision"] + 1)
            stream = await open_watch(s, follower, f"prefix=cfg/&from_revision={first['index']}")
            assert await stream.event() == {
                "revision": first["revision"], "type": "put", "key": "cfg/a", "value": "1",
                "create_revision": first["revision"], "mod_revision": first["revision"],
                "version": 1, "lease": 0}
            _, put, _ = await call(s, "PUT", leader.url + "/v1/kv/cfg/b", data=b"\xff")
            _, deleted, _ = await call(s, "DELETE", leader.url + "/v1/kv/cfg/a")
            line = await stream.event()
            assert line is not None and line["revision"] == put["revision"]
            assert line["value_base64"] == "/w==" and line["key"] == "cfg/b"
            assert await stream.event() == {
                "revision": deleted["revision"], "type": "delete", "key": "cfg/a", "value": "",
                "create_revision": 0, "mod_revision": deleted["revision"], "version": 0,
                "lease": 0}
            stream.resp.close()

    run(main())


def test_an_idle_watch_gets_progress_lines_with_the_current_revision() -> None:
    async def main() -> None:
        limits = Limits(watch_progress_interval=0.1)
        async with LocalCluster(3, config=FAST, limits=limits) as cluster, \
                aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            _, put, _ = await call(s, "PUT", leader.url + "/v1/kv/k", data=b"v")
            stream = await open_watch(s, leader, "prefix=nothing/")
            for _ in range(3):
                assert await stream.line(timeout=5) == {"type": "progress",
                                                        "revision": put["revision"]}
            stream.resp.close()

    run(main())


def test_a_watch_from_before_the_history_is_410_compacted() -> None:
    async def main() -> None:
        limits = Limits(watch_history=3)
        async with LocalCluster(3, config=FAST, limits=limits) as cluster, \
                aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            for i in range(6):
                _, put, _ = await call(s, "PUT", leader.url + f"/v1/kv/k{i}", data=b"v")
            status, body, _ = await call(s, "GET", leader.url + "/v1/watch?from_revision=1")
            assert status == 410 and body["code"] == "compacted", body
            assert body["current"] == put["revision"]
            assert body["oldest_available"] == put["revision"] - 2
            stream = await open_watch(s, leader, f"from_revision={body['oldest_available']}")
            assert (await stream.event() or {})["revision"] == body["oldest_available"]
            stream.resp.close()
            for query in ("from_revision=0", "from_revision=x", "since=1"):
                assert (await call(s, "GET", leader.url + "/v1/watch?" + query))[0] == 400

    run(main())


def test_watches_beyond_the_cap_get_503_until_one_closes() -> None:
    async def main() -> None:
        async with LocalCluster(1, config=FAST, limits=Limits(max_watches=2)) as cluster, \
                aiohttp.ClientSession() as s:
            node = await cluster.wait_for_leader()
            streams = [await open_watch(s, node, "") for _ in range(2)]
            status, body, headers = await call(s, "GET", node.url + "/v1/watch")
            assert status == 503 and body["code"] == "too_many_watches"
            assert headers["Retry-After"] == "1"
            streams[0].resp.close()

            async def admitted() -> bool:
                async with s.get(node.url + "/v1/watch") as resp:
                    return resp.status == 200

            await eventually(admitted, what="a closed watch freeing its place")

    run(main())


async def write_until(cluster: LocalCluster, s: aiohttp.ClientSession, stop: asyncio.Event,
                      prefix: str) -> int:
    """Put prefix/0, prefix/1, ... on whichever node leads, retrying every failure, until
    ``stop``; the number of puts answered."""
    done = 0
    while not stop.is_set():
        leaders = [n for n in cluster.nodes if not n.closed and n.server.is_leader]
        if leaders:
            try:
                status, _, _ = await call(s, "PUT", leaders[0].url + f"/v1/kv/{prefix}/{done}",
                                          data=str(done).encode())
                done += status == 200
            except aiohttp.ClientError:
                pass
        await asyncio.sleep(0.005)
    return done


async def follow(s: aiohttp.ClientSession, nodes: list[RunningNode], prefix: str,
                 until: Callable[[], int | None],
                 switch_after: int | None = None) -> list[tuple[int, str, str]]:
    """Watch ``prefix`` from revision 1 on the first live node of ``nodes``, reconnecting to
    the next one with from_revision = last + 1 whenever the stream ends (or after
    ``switch_after`` events, by choice), until it has every revision up to ``until()``."""
    got: list[tuple[int, str, str]] = []
    following = 1
    turn = 0
    while True:
        node = nodes[turn % len(nodes)]
        turn += 1
        if node.closed:
            continue
        try:
            stream = await open_watch(s, node, f"prefix={prefix}/&from_revision={following}")
        except (aiohttp.ClientError, AssertionError):
            continue
        try:
            while True:
                line = await stream.line()
                if line is None:
                    break
                if line["type"] == "cancelled":
                    assert line["next_revision"] == following, line
                    break
                if line["type"] == "progress":
                    following = max(following, line["revision"] + 1)
                else:
                    assert line["revision"] >= following, "a duplicate"
                    got.append((line["revision"], line["key"], line["value"]))
                    following = line["revision"] + 1
                    if switch_after is not None and len(got) % switch_after == 0:
                        break
                target = until()
                if target is not None and following > target:
                    return got
        except aiohttp.ClientError:
            pass  # the node died under the stream
        finally:
            stream.resp.close()


def expected_events(node: RunningNode, prefix: str) -> list[tuple[int, str, str]]:
    return [(e.revision, e.key, e.value.decode()) for e in node.kv.events_since(1, prefix + "/")]


def test_reconnecting_to_other_nodes_from_the_last_revision_plus_one_misses_and_repeats_nothing(
        ) -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST, limits=QUICK) as cluster, \
                aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            stop = asyncio.Event()
            writer = asyncio.create_task(write_until(cluster, s, stop, "w"))
            await eventually(lambda: len(leader.kv.list("w/")) >= 60, timeout=20)
            until = leader.kv.revision
            got = await follow(s, cluster.nodes, "w", lambda: until, switch_after=7)
            stop.set()
            await writer
            want = [e for e in expected_events(leader, "w") if e[0] <= until]
            assert [e for e in got if e[0] <= until] == want

    run(main(), timeout=60)


def test_a_watch_continues_without_gap_or_duplicate_across_the_leaders_death() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST, limits=QUICK) as cluster, \
                aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            stop = asyncio.Event()
            writer = asyncio.create_task(write_until(cluster, s, stop, "w"))
            await eventually(lambda: len(leader.kv.list("w/")) >= 20, timeout=20)
            # The watcher sits on the leader, which dies while the writes go on; it then
            # resumes on a survivor from the last revision it got + 1.
            target: list[int] = []
            order = [leader, *followers(cluster, leader)]
            watching = asyncio.create_task(
                follow(s, order, "w", lambda: target[0] if target else None))
            await eventually(lambda: len(leader.kv.list("w/")) >= 40, timeout=20)
            await leader.close()
            survivor = await cluster.wait_for_leader()
            await eventually(lambda: len(survivor.kv.list("w/")) >= 80, timeout=20)
            stop.set()
            await writer
            target.append(survivor.kv.revision)
            got = await asyncio.wait_for(watching, 30)
            want = expected_events(survivor, "w")
            assert [e for e in got if e[0] <= target[0]] == want
            assert len(want) >= 80

    run(main(), timeout=90)


def test_a_watcher_that_reads_nothing_is_cut_off_with_where_to_resume() -> None:
    async def main() -> None:
        limits = Limits(watch_max_bytes=1 << 20)
        async with LocalCluster(1, config=FAST, limits=limits) as cluster, \
                aiohttp.ClientSession() as s:
            node = await cluster.wait_for_leader()
            stream = await open_watch(s, node, "prefix=big/")
            value = b"x" * (400 * 1024)  # a line under the client's 512 KiB line limit
            # Far more than the socket buffers hold: the stream's queue must pass its bound.
            for i in range(64):
                await call(s, "PUT", node.url + f"/v1/kv/big/{i}", data=value)
            revisions: list[int] = []
            while True:
                line = await stream.line(timeout=30)
                assert line is not None, "the stream ended without a cancelled line"
                if line["type"] == "cancelled":
                    break
                if line["type"] != "progress":
                    revisions.append(line["revision"])
            assert "slow watcher" in line["reason"]
            resume = line["next_revision"]
            assert revisions and revisions == list(range(revisions[0], resume))
            assert await stream.line() is None, "the stream ends after the cancelled line"
            rest = await open_watch(s, node, f"prefix=big/&from_revision={resume}")
            last = node.kv.revision
            while resume <= last:
                line = await rest.event()
                assert line is not None and line["revision"] == resume
                resume += 1
            rest.resp.close()

    run(main(), timeout=60)


def test_a_watch_on_a_node_that_installs_a_snapshot_is_cancelled_then_410(
        tmp_path: Path) -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST, transport="memory", data_dir=tmp_path,
                                snapshot=SnapshotSettings(entries=10, retain=0)) as cluster, \
                aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            behind = followers(cluster, leader)[0]
            _, put, _ = await call(s, "PUT", leader.url + "/v1/kv/w/first", data=b"v")
            await eventually(lambda: behind.kv.revision >= put["revision"])
            stream = await open_watch(s, behind, f"prefix=w/&from_revision={put['revision']}")
            assert (await stream.event() or {})["revision"] == put["revision"]
            # Cut off, it misses entries the leader then compacts away: it can catch up only
            # from a snapshot, whose restore skips revisions the watch needs.
            assert cluster.network is not None
            cluster.network.partition([behind.server.id],
                                      [n.server.id for n in cluster.nodes if n is not behind])
            for i in range(40):
                await call(s, "PUT", leader.url + f"/v1/kv/w/{i}", data=b"v")
            await eventually(lambda: leader.server.status().first_index > put["index"] + 1,
                             what="the leader compacting its log")
            restores: list[threading.Thread] = []
            behind.kv.on_restore.append(lambda: restores.append(threading.current_thread()))
            cluster.network.heal()
            while (line := await stream.line(timeout=20)) is not None:
                if line["type"] != "progress":
                    break
                # Progress says what this watcher was sent, never the restored revision.
                assert line["revision"] == put["revision"], line
            assert line is not None and line["type"] == "cancelled", line
            # The restore's swap ran on the event loop (this thread), not the installer's.
            assert restores == [threading.current_thread()]
            assert "snapshot restore" in line["reason"]
            assert line["next_revision"] == put["revision"] + 1
            status, body, _ = await call(
                s, "GET", behind.url + f"/v1/watch?from_revision={line['next_revision']}")
            assert status == 410 and body["code"] == "compacted", body

    run(main(), timeout=60)


class Lines:
    """A stand-in stream response: the lines written to it."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    async def write(self, data: bytes) -> None:
        self.lines += [json.loads(x) for x in data.decode().splitlines()]


def test_a_restore_before_the_first_line_cancels_the_watch_without_a_progress_past_it(
) -> None:
    """The interleaving of the review's bug 2, step by step: a watcher registered at R on a
    lagging node, then a snapshot restore to S > R lands (its swap, on the event loop) before
    the stream writes its first line. The stream must not send a progress line of S (a client
    would move its cursor past R+1..S and lose them): it ends with "resume at R+1"."""
    async def main() -> None:
        kv = KVStateMachine()
        kv.apply(1, encode(Put("w/a", b"1")))
        hub = WatchHub(kv)
        watcher = hub.watch("w/", None)  # registered at R = 1
        ahead = KVStateMachine()
        for index in range(1, 6):
            ahead.apply(index, encode(Put(f"w/{index}", b"v")))
        image = io.BytesIO()
        ahead.capture().persist(image)
        swap = kv.prepare_restore(io.BytesIO(image.getvalue()))
        assert kv.revision == 1 and watcher.cancelled is None  # read aside: nothing swapped
        swap()
        assert kv.revision == 5
        response = Lines()
        api = WatchApi(SimpleNamespace(limits=Limits()), hub)  # type: ignore[arg-type]
        await asyncio.wait_for(api._stream(response, watcher), 5)  # type: ignore[arg-type]
        assert [line["type"] for line in response.lines] == ["cancelled"]
        assert response.lines[0]["next_revision"] == 2

    run(main())


def test_progress_lines_carry_what_the_watcher_was_sent() -> None:
    async def main() -> None:
        kv = KVStateMachine()
        for index in range(1, 4):
            kv.apply(index, encode(Put(f"k{index}", b"v")))
        hub = WatchHub(kv)
        watcher = hub.watch("k", None)
        # A swap that moved the store without telling the hub (as a restore off the event
        # loop could, between two steps): progress still says what this watcher got.
        kv._revision = 9
        response = Lines()
        limits = Limits(watch_progress_interval=0.01)
        api = WatchApi(SimpleNamespace(limits=limits), hub)  # type: ignore[arg-type]
        task = asyncio.create_task(api._stream(response, watcher))  # type: ignore[arg-type]
        await eventually(lambda: len(response.lines) >= 2)
        watcher.cancel("done")
        await asyncio.wait_for(task, 5)
        assert {line["revision"] for line in response.lines[:-1]} == {3}

    run(main())

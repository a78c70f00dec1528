"""The coordination calls of the Python clients against a real 3-node cluster: metadata, pages,
prefix deletes, transactions, leases, and a watch that resumes on another node."""

from __future__ import annotations

import asyncio
import signal
import threading

import pytest
from polling import wait_until

from raftly.kv.client import (
    AsyncClient,
    Client,
    Compare,
    LeaseNotFoundError,
    WatchEvent,
)
from raftly.kv.client_coord import Get, Put
from raftly.localcluster import ProcessCluster


def test_metadata_pages_prefix_deletes_txn_and_leases(shared_cluster: ProcessCluster) -> None:
    with Client(shared_cluster.endpoints, timeout=15) as kv:
        first = kv.put("meta/a", b"1")
        second = kv.put("meta/a", b"2")
        entry = kv.get_entry("meta/a")
        assert entry is not None
        assert (entry.value, entry.create_revision, entry.mod_revision, entry.version) == \
            (b"2", first, second, 2)
        kv.put("meta/b", b"\xff")
        page = kv.range("meta/", limit=1)
        assert [e.key for e in page.kvs] == ["meta/a"] and page.more
        page = kv.range("meta/", start_after="meta/a")
        assert [(e.key, e.value) for e in page.kvs] == [("meta/b", b"\xff")] and not page.more
        result = kv.txn([Compare("meta/a", "mod_revision", "=", second)],
                        [Put("meta/a", b"3")], [Get("meta/a")])
        assert result.succeeded and result.results == [{"type": "put"}]
        result = kv.txn([Compare("meta/a", "value", "=", b"2")], [], [Get("meta/a")])
        assert not result.succeeded
        assert result.results[0]["kv"].value == b"3"
        lease = kv.lease_grant(5)
        kv.put("meta/leased", b"x", lease=lease.id)
        assert kv.lease_keepalive(lease.id) >= 4
        assert [info.keys for info in kv.leases() if info.id == lease.id] == [["meta/leased"]]
        assert kv.lease_revoke(lease.id) == 1
        assert kv.get("meta/leased") is None
        with pytest.raises(LeaseNotFoundError):
            kv.lease_keepalive(lease.id)
        with pytest.raises(LeaseNotFoundError):
            kv.put("meta/late", b"x", lease=lease.id)
        assert kv.delete_prefix("meta/") == 2
        assert kv.range("meta/").kvs == []


def _collect(kv: Client, prefix: str, start: int, into: list[WatchEvent],
             stop: threading.Event) -> None:
    for event in kv.watch(prefix, from_revision=start):
        into.append(event)
        if stop.is_set():
            return


def test_a_watch_continues_on_another_node_after_its_node_is_killed(
        cluster: ProcessCluster) -> None:
    leader, _ = cluster.wait_for_leader()
    order = [cluster.nodes[leader].api] + [n.api for name, n in cluster.nodes.items()
                                           if name != leader]
    events: list[WatchEvent] = []
    stop = threading.Event()
    with Client(cluster.endpoints, timeout=20) as kv:
        start = kv.put("w/0", b"0")
        watcher = Client(order, timeout=30, request_timeout=3)
        thread = threading.Thread(target=_collect, args=(watcher, "w/", start, events, stop),
                                  daemon=True)
        thread.start()
        # A txn writes two keys in one revision: both arrive, once each.
        kv.txn([], [Put("w/1", b"1"), Put("w/2", b"2")])
        wait_until("the watch saw the first writes", lambda: len(events) >= 3)
        cluster.kill(leader, signal.SIGKILL)
        for i in range(3, 20):
            kv.put(f"w/{i}", str(i).encode())
        wait_until("the watch resumed on a survivor", lambda: len(events) >= 20, timeout=40)
        stop.set()
        kv.put("w/end", b"")
    thread.join(20)
    keys = [e.key for e in events]
    assert keys[:20] == [f"w/{i}" for i in range(20)]
    revisions = [e.revision for e in events]
    assert revisions == sorted(revisions)
    assert len(set(zip(revisions, keys, strict=True))) == len(events)


def test_the_async_watch_yields_changes_and_the_async_calls_work(
        shared_cluster: ProcessCluster) -> None:
    async def scenario() -> list[tuple[str, str, bytes]]:
        async with AsyncClient(shared_cluster.endpoints, timeout=15) as kv:
            start = await kv.put("aw/a", b"1")
            lease = await kv.lease_grant(10)
            await kv.put("aw/b", b"2", lease=lease.id)
            await kv.lease_revoke(lease.id)
            seen = []
            async for event in kv.watch("aw/", from_revision=start):
                seen.append((event.type, event.key, event.value))
                if len(seen) == 3:
                    break
            return seen

    assert asyncio.run(scenario()) == [("put", "aw/a", b"1"), ("put", "aw/b", b"2"),
                                       ("delete", "aw/b", b"")]

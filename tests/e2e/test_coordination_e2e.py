"""Watch and lease expiry with real ``raftly serve`` processes, through a SIGKILL of the leader:
a watcher that resumes on another node from its last revision + 1 misses and repeats nothing,
and a lease whose keepalives stopped is not expired early by the leader change (the new leader
counts the whole TTL again)."""

from __future__ import annotations

import contextlib
import http.client
import json
import signal
import threading
import time
from typing import Any

from e2e_helpers import request
from polling import wait_until

from raftly.kv.client import Client
from raftly.localcluster import ProcessCluster


class Watcher(threading.Thread):
    """Follows ``GET /v1/watch?prefix=...`` over the endpoints in turn, reconnecting with
    from_revision = last + 1 whenever a stream ends or breaks; records every change line."""

    def __init__(self, endpoints: list[str], prefix: str) -> None:
        super().__init__(daemon=True)
        self.endpoints = endpoints
        self.prefix = prefix
        self.events: list[tuple[int, str, str]] = []
        self.following = 1
        self.reconnects = 0
        self.stop = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        turn = 0
        while not self.stop.is_set():
            endpoint = self.endpoints[turn % len(self.endpoints)]
            turn += 1
            with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
                self._follow(endpoint)  # a dead node, or a stream broken by its death
            self.reconnects += 1
            time.sleep(0.05)  # not a wait for anything: only no busy loop over dead nodes

    def _follow(self, endpoint: str) -> None:
        conn = http.client.HTTPConnection(endpoint, timeout=10)
        try:
            conn.request("GET", f"/v1/watch?prefix={self.prefix}&from_revision={self.following}")
            resp = conn.getresponse()
            if resp.status != 200:
                return
            while not self.stop.is_set():
                raw = resp.readline()
                if not raw:
                    return
                line: dict[str, Any] = json.loads(raw)
                if line["type"] == "cancelled":
                    if line["next_revision"] != self.following:
                        self.errors.append(f"cancelled at {line} while following "
                                           f"{self.following}")
                    return
                if line["type"] == "progress":
                    self.following = max(self.following, line["revision"] + 1)
                    continue
                if line["revision"] < self.following:
                    self.errors.append(f"duplicate {line}")
                self.events.append((line["revision"], line["key"], line["value"]))
                self.following = line["revision"] + 1
        finally:
            conn.close()


def test_a_watch_resumes_on_another_node_across_a_kill_9_of_the_leader_without_gap_or_duplicate(
        cluster: ProcessCluster) -> None:
    leader, _ = cluster.wait_for_leader()
    # The watcher starts on the leader, the node about to die.
    order = [cluster.nodes[leader].api] + [n.api for name, n in cluster.nodes.items()
                                           if name != leader]
    watcher = Watcher(order, "w/")
    watcher.start()
    written = 0
    with Client(cluster.endpoints, timeout=15) as kv:
        for _ in range(30):
            kv.put(f"w/{written}", str(written).encode())
            written += 1
        wait_until("the watcher saw the first writes", lambda: len(watcher.events) >= 30)
        cluster.kill(leader, signal.SIGKILL)
        for _ in range(30):
            kv.put(f"w/{written}", str(written).encode())
            written += 1
    survivors = [n for n in cluster.nodes if n != leader]
    new_leader, _ = cluster.wait_for_leader(among=survivors)
    wait_until("the watcher caught up on a survivor",
               lambda: len({key for _, key, _ in watcher.events}) >= written, timeout=30)
    watcher.stop.set()
    watcher.join(15)
    assert not watcher.errors, watcher.errors
    assert watcher.reconnects >= 1
    # The whole history as a fresh watch on a survivor sees it.
    fresh = Watcher([cluster.nodes[new_leader].api], "w/")
    fresh.start()
    wait_until("a fresh watch read the history",
               lambda: len(fresh.events) >= len(watcher.events), timeout=30)
    fresh.stop.set()
    fresh.join(15)
    assert watcher.events == fresh.events[:len(watcher.events)]
    revisions = [r for r, _, _ in watcher.events]
    assert revisions == sorted(set(revisions))


def _get(endpoint: str, path: str) -> tuple[int, Any]:
    reply = request(endpoint, "GET", path)
    return reply.status, reply.body


def test_a_lease_is_not_expired_early_by_a_kill_9_of_the_leader(cluster: ProcessCluster) -> None:
    leader, _ = cluster.wait_for_leader()
    api = cluster.nodes[leader].api
    ttl = 3
    reply = request(api, "POST", "/v1/leases", json.dumps({"ttl": ttl}).encode())
    assert reply.status == 200, reply.body
    lease = json.loads(reply.body)["id"]
    assert request(api, "PUT", f"/v1/kv/held?lease={lease}", b"x").status == 200
    # Kept alive for two TTLs: never expires meanwhile.
    end = time.monotonic() + 2 * ttl
    while time.monotonic() < end:
        reply = request(api, "POST", f"/v1/leases/{lease}/keepalive")
        assert reply.status == 200, reply.body
        assert _get(api, "/v1/kv/held")[0] == 200, "expired while kept alive"
        time.sleep(0.5)  # the keepalive period, not a wait for a condition
    # Keepalives stop; the leader dies. The new leader counts the whole TTL from its election,
    # which comes after the kill: the key may not go before kill + ttl.
    killed = time.monotonic()
    cluster.kill(leader, signal.SIGKILL)
    survivors = [n for n in cluster.nodes if n != leader]
    new_leader, _ = cluster.wait_for_leader(among=survivors)
    new_api = cluster.nodes[new_leader].api

    def gone() -> float | None:
        status, _ = _get(new_api, "/v1/kv/held")
        return time.monotonic() if status == 404 else None

    seen_gone = wait_until("the expired lease's key deleted", gone, timeout=30, interval=0.02)
    assert seen_gone - killed >= ttl, f"deleted {ttl - (seen_gone - killed):.2f}s early"
    reply = request(new_api, "GET", f"/v1/leases/{lease}")
    assert reply.status == 404

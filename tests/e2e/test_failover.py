"""Elections, failover and durability with real processes: the heart of the service."""

from __future__ import annotations

import signal
import threading
import time

from e2e_helpers import FAILOVER_BOUND, request
from polling import wait_until

from raftly.kv.client import Client, ClientError, OutcomeUnknownError
from raftly.localcluster import ProcessCluster


def test_a_write_through_any_node_reaches_the_leader(cluster: ProcessCluster) -> None:
    leader, _ = cluster.wait_for_leader()
    for name, node in cluster.nodes.items():
        # A client that knows only this node: a follower redirects it to the leader.
        with Client([node.api], timeout=15) as kv:
            kv.put(f"via/{name}", name.encode())
    with Client(cluster.endpoints, timeout=15) as kv:
        assert dict(kv.list("via/")) == {f"via/{n}": n.encode() for n in cluster.nodes}
    follower = next(n for n in cluster.nodes if n != leader)
    reply = request(cluster.nodes[follower].api, "PUT", "/v1/kv/direct", b"x")
    assert reply.status == 307
    assert reply.headers["location"] == f"{cluster.nodes[leader].spec.api.url}/v1/kv/direct"


def test_kill_9_of_the_leader_elects_a_new_one_and_loses_no_acknowledged_write(
        cluster: ProcessCluster) -> None:
    old_leader, old = cluster.wait_for_leader()
    acked: dict[str, bytes] = {}
    unknown: set[str] = set()
    stop = threading.Event()
    failures: list[BaseException] = []

    def writer() -> None:
        # Writes keep going through the kill: each is acknowledged, or at worst unknown.
        try:
            with Client(cluster.endpoints, timeout=15) as kv:
                i = 0
                while not stop.is_set():
                    key, value = f"k{i:04d}", f"v{i}".encode()
                    try:
                        kv.put(key, value)
                        acked[key] = value
                    except OutcomeUnknownError:
                        unknown.add(key)
                    i += 1
        except BaseException as exc:  # surfaced by the main thread
            failures.append(exc)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        wait_until("20 acknowledged writes", lambda: len(acked) >= 20)
        killed_at = time.monotonic()
        cluster.kill(old_leader, signal.SIGKILL)
        survivors = [n for n in cluster.nodes if n != old_leader]
        new_leader, new = cluster.wait_for_leader(timeout=30, among=survivors)
        failover = time.monotonic() - killed_at
        print(f"failover took {failover:.2f}s")
        assert new_leader != old_leader and new["term"] > old["term"]
        assert failover < FAILOVER_BOUND
        # `raftly serve` logs each role change as one INFO line.
        assert f"is leader in term {new['term']}" in cluster.nodes[new_leader].log_tail(1000)
        before = len(acked)
        wait_until("writes acknowledged by the new leader", lambda: len(acked) >= before + 20)
    finally:
        stop.set()
        thread.join(30)
    assert not failures, failures
    with Client(cluster.endpoints, timeout=15) as kv:
        stored = dict(kv.list("k", limit=10_000))
    missing = {k for k in acked if stored.get(k) != acked[k]}
    assert not missing, f"acknowledged writes lost: {sorted(missing)[:10]}"
    # A write of unknown outcome may be there or not, but nothing else appears.
    assert set(stored) <= set(acked) | unknown


def test_kill_9_of_every_node_then_restart_reads_everything_back(cluster: ProcessCluster) -> None:
    expected: dict[str, bytes] = {}
    with Client(cluster.endpoints, timeout=15) as kv:
        for i in range(40):
            kv.put(f"d/{i}", f"value {i}".encode())
            expected[f"d/{i}"] = f"value {i}".encode()
        assert kv.delete("d/0") and kv.cas("d/1", b"value 1", b"swapped")
        del expected["d/0"]
        expected["d/1"] = b"swapped"
    for name in cluster.nodes:
        cluster.kill(name, signal.SIGKILL)  # fsync=always: acknowledged means on disk
    cluster.start()
    _, status = cluster.wait_for_leader(timeout=30)
    assert status["commit_index"] >= 42
    with Client(cluster.endpoints, timeout=15) as kv:
        assert dict(kv.list("d/")) == expected
        assert kv.get("d/0") is None
    # Every node, not only the leader, recovered the whole history.
    for name in cluster.nodes:
        cluster.wait_applied(name, status["commit_index"])
        with Client([cluster.nodes[name].api], timeout=15) as local:
            assert dict(local.list("d/", stale=True)) == expected


def test_with_two_of_three_nodes_dead_writes_are_refused_never_falsely_acknowledged(
        cluster: ProcessCluster) -> None:
    leader, _ = cluster.wait_for_leader()
    with Client(cluster.endpoints, timeout=15) as kv:
        kv.put("before", b"1")
    # Keep the leader and kill both followers: it must not acknowledge anything alone.
    dead = [n for n in cluster.nodes if n != leader]
    for name in dead:
        cluster.kill(name, signal.SIGKILL)
    api = cluster.nodes[leader].api
    answers: dict[str, int] = {}
    deadline = time.monotonic() + 30
    while sum(1 for s in answers.values() if s == 503) < 3:
        assert time.monotonic() < deadline, f"no 503 within 30s: {answers}"
        key = f"during/{len(answers)}"
        reply = request(api, "PUT", f"/v1/kv/{key}", b"x", timeout=30)
        assert reply.status in (503, 504), (reply.status, reply.body)
        if reply.status == 503:
            assert "retry-after" in reply.headers
        answers[key] = reply.status
    # A linearizable read cannot be confirmed either; a stale one reads the local copy.
    assert request(api, "GET", "/v1/kv/before").status == 503
    stale = request(api, "GET", "/v1/kv/before?consistency=stale")
    assert (stale.status, stale.body) == (200, b"1")
    # The client gives up with an error; it never reports success.
    with Client([api], timeout=1.5) as kv:
        try:
            kv.put("client-during", b"x")
        except ClientError:
            pass
        else:
            raise AssertionError("a write succeeded without a majority")
    cluster.start(dead)
    cluster.wait_for_leader(timeout=30)
    with Client(cluster.endpoints, timeout=15) as kv:
        for key, status in answers.items():
            if status == 503:  # 503 promises "not applied"; 504 is "maybe"
                assert kv.get(key) is None, key
        assert kv.get("before") == b"1"

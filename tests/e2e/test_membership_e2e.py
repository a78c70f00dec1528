"""Membership changes with real ``raftly serve`` processes on 127.0.0.1: a fourth node joins with
``--join`` and is promoted, a removed node exits 0 on its own, a joined node restarts from
``--data-dir`` alone, the refusals (contradicting flag, unreachable cluster) are one line, and
every node of a cluster is replaced under writes with nothing acknowledged lost.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import ELECTION_TIMEOUT, HEARTBEAT, cli, request
from polling import wait_until

from raftly.kv.client import Client, ClientError
from raftly.localcluster import ProcessCluster
from raftly.localproc import free_ports

TIMINGS = ["--election-timeout", str(ELECTION_TIMEOUT), "--heartbeat", str(HEARTBEAT)]


class Extra:
    """A node process started outside the ProcessCluster (joined, or restarted by hand)."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        out = self.log.open("ab")
        proc = subprocess.Popen([sys.executable, "-m", "raftly.cli", "serve", *args, *TIMINGS],
                                stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


@pytest.fixture()
def extra(tmp_path: Path) -> Iterator[Extra]:
    """Node processes started by the test itself, killed at teardown whatever happened."""
    procs = Extra(tmp_path / "extra.log")
    try:
        yield procs
    finally:
        procs.stop_all()
        print(procs.log.read_text(errors="replace")[-4000:] if procs.log.exists() else "")


def members(endpoint: str) -> dict[str, str] | None:
    try:
        reply = request(endpoint, "GET", "/v1/members", timeout=2.0)
    except OSError:
        return None
    if reply.status != 200:
        return None
    return {m["name"]: m["role"] for m in json.loads(reply.body)["members"]}


def test_join_promote_remove_and_restart_from_the_data_dir_alone(
        cluster: ProcessCluster, extra: Extra, tmp_path: Path) -> None:
    endpoints = cluster.endpoints
    with Client(endpoints, timeout=20.0) as client:
        for i in range(10):
            client.put(f"before{i}", str(i).encode())
    raft_port, api_port = free_ports(2)
    n4_api = f"127.0.0.1:{api_port}"
    n4_dir = tmp_path / "n4"
    join = extra.start("--join", ",".join(endpoints[:2]), "--id", "n4",
                       "--raft", f"127.0.0.1:{raft_port}", "--api", n4_api,
                       "--data-dir", str(n4_dir), "--fsync", "always")
    wait_until("n4 promoted to voter",
               lambda: (members(endpoints[0]) or {}).get("n4") == "voter", timeout=30.0)
    wait_until("n4 caught up", lambda: request(
        n4_api, "GET", "/v1/kv/before9?consistency=stale").body == b"9", timeout=30.0)
    listed = cli("member", "list", endpoints=[n4_api])
    assert listed.code == 0 and "n4" in listed.out and "voter" in listed.out, listed.err

    removed = cli("member", "remove", "n1", endpoints=[n4_api])
    assert removed.code == 0, removed.err
    n1 = cluster.nodes["n1"]
    assert n1.proc is not None
    wait_until("n1 exits by itself", lambda: n1.proc is not None
               and n1.proc.poll() is not None, timeout=30.0)
    assert n1.proc.returncode == 0
    assert "removed from the cluster" in n1.log_tail(20)
    left = [endpoints[1], endpoints[2], n4_api]
    # The removal may have committed on n3 and n4 before n2 holds it: poll.
    wait_until("n2 lists n2, n3 and n4",
               lambda: set(members(left[0]) or {}) == {"n2", "n3", "n4"})
    with Client(left, timeout=20.0) as client:
        client.put("after", b"x")

    # Restart n4 from its data dir alone; a contradicting flag is refused first.
    join.terminate()
    assert join.wait(20) == 0
    refused = cli("serve", "--data-dir", str(n4_dir), "--api", "127.0.0.1:1")
    assert refused.code == 1 and refused.err.count("\n") == 1, refused.err
    assert "--api" in refused.err and n4_api in refused.err
    extra.start("--data-dir", str(n4_dir))
    with Client(left, timeout=20.0) as client:
        client.put("later", b"y")
    wait_until("n4 back and caught up", lambda: _stale(n4_api, "later") == b"y",
               timeout=30.0)
    assert _stale(n4_api, "before3") == b"3"
    # A bootstrap member restarts from its data dir alone too (the cluster file is not needed).
    assert cluster.kill("n2", signal.SIGTERM)
    extra.start("--data-dir", str(cluster.nodes["n2"].data_dir))
    with Client(left, timeout=20.0) as client:
        client.put("last", b"z")
    wait_until("n2 back and caught up", lambda: _stale(endpoints[1], "last") == b"z",
               timeout=30.0)


def test_join_to_an_unreachable_cluster_fails_with_one_line(tmp_path: Path) -> None:
    dead, raft_port, api_port = free_ports(3)
    run = cli("serve", "--join", f"127.0.0.1:{dead}", "--id", "n9", "--raft",
              f"127.0.0.1:{raft_port}", "--api", f"127.0.0.1:{api_port}", "--data-dir",
              str(tmp_path / "n9"), "--join-timeout", "1")
    assert run.code == 1, run.err
    assert "could not join" in run.err and f"127.0.0.1:{dead}" in run.err
    assert not (tmp_path / "n9").exists()  # nothing claimed


def test_join_under_a_name_the_cluster_has_is_refused(cluster: ProcessCluster,
                                                      tmp_path: Path) -> None:
    raft_port, api_port = free_ports(2)
    run = cli("serve", "--join", cluster.endpoints[0], "--id", "n2", "--raft",
              f"127.0.0.1:{raft_port}", "--api", f"127.0.0.1:{api_port}", "--data-dir",
              str(tmp_path / "n2-again"))
    assert run.code == 1 and "refused" in run.err and "n2" in run.err, run.err


def _stale(endpoint: str, key: str) -> bytes | None:
    try:
        reply = request(endpoint, "GET", f"/v1/kv/{key}?consistency=stale", timeout=2.0)
    except OSError:
        return None
    return reply.body if reply.status == 200 else None


def test_replace_every_node_one_at_a_time_under_writes_loses_nothing(
        cluster: ProcessCluster, extra: Extra, tmp_path: Path) -> None:
    """n1..n3 are replaced by m1..m3 (the old leader first) while a writer keeps writing; each
    new node takes the lead in turn; the acknowledged writes survive, also a SIGKILL of all and
    a restart from the data dirs alone."""
    ports = free_ports(6)
    new = {f"m{i + 1}": (f"127.0.0.1:{ports[2 * i]}", f"127.0.0.1:{ports[2 * i + 1]}")
           for i in range(3)}
    old_api = dict(zip(cluster.names, cluster.endpoints, strict=True))
    everyone = [*cluster.endpoints, *(api for _, api in new.values())]
    acked: dict[str, bytes] = {}
    stop = threading.Event()

    def writer() -> None:
        with Client(everyone, timeout=10.0, request_timeout=2.0) as client:
            i = 0
            while not stop.is_set():
                key, value = f"w{i}", str(i).encode()
                try:
                    client.put(key, value)
                    acked[key] = value
                except ClientError:
                    pass  # unknown outcome or unavailable: not acknowledged, not checked
                i += 1

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    live = dict(old_api)
    try:
        leader, _ = cluster.wait_for_leader(timeout=30.0)
        order = [leader] + [n for n in cluster.names if n != leader]
        for old, (name, (raft, api)) in zip(order, new.items(), strict=True):
            extra.start("--join", ",".join(live.values()), "--id", name, "--raft", raft,
                        "--api", api, "--data-dir", str(tmp_path / name), "--fsync", "always")
            live[name] = api
            wait_until(f"{name} promoted", lambda n=name: any(
                (members(ep) or {}).get(n) == "voter" for ep in live.values()), timeout=60.0)
            removed = cli("member", "remove", old, endpoints=list(live.values()))
            assert removed.code == 0, removed.err
            proc = cluster.nodes[old].proc
            assert proc is not None
            wait_until(f"{old} exits", lambda p=proc: p.poll() is not None, timeout=60.0)
            assert proc.returncode == 0, cluster.nodes[old].log_tail(20)
            del live[old]
            moved = cli("leader", "transfer", name, endpoints=list(live.values()))
            assert moved.code == 0 and f"{name} leads" in moved.out, moved.err
        assert len(acked) > 0
    finally:
        stop.set()
        thread.join(30)
    endpoints = list(live.values())
    wait_until("only the new nodes are members",
               lambda: set(members(endpoints[0]) or {}) == set(new))
    with Client(endpoints, timeout=20.0) as client:
        assert {k: client.get(k) for k in acked} == acked
    for proc in extra.procs:
        proc.kill()
        proc.wait(10)
    for name in new:
        extra.start("--data-dir", str(tmp_path / name))
    with Client(endpoints, timeout=30.0) as client:
        assert {k: client.get(k) for k in acked} == acked

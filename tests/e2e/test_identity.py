"""Cluster identity through the ``raftly`` command: a data dir refuses another cluster's file,
``serve`` and ``cluster up`` share one data dir layout, ``cluster up`` refuses a size change and
busy ports, restarts a dead node (or says how to), and ``status`` and the kv commands report only
on the cluster they mean.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import ELECTION_TIMEOUT, HEARTBEAT, cli, dump_logs, free_base_port, new_cluster
from polling import wait_until

from raftly.kv.client import Client
from raftly.kv.cluster_file import ClusterSpec, render_cluster
from raftly.localcluster import ProcessCluster, plan_loopback

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _answers(endpoint: str) -> dict[str, object] | None:
    with contextlib.suppress(Exception), Client([endpoint], timeout=0.5) as client:
        return client.status(endpoint)
    return None


def test_serve_refuses_a_data_dir_of_another_cluster_and_changes_nothing(
        tmp_path: Path) -> None:
    one = new_cluster(tmp_path / "one", nodes=1)
    try:
        one.start()
        one.wait_for_leader(timeout=30.0)
    finally:
        one.stop(grace=5.0)
        dump_logs(one)
    data = one.nodes["n1"].data_dir
    before = _snapshot(data)
    # The same cluster id and node, but two members now: the 1-node log would elect itself.
    bigger = tmp_path / "two.toml"
    bigger.write_text(render_cluster(plan_loopback(2, cluster_id=one.spec.cluster_id)))
    run = cli("serve", "--cluster", str(bigger), "--id", "n1", "--data-dir", str(data))
    assert run.code == 1 and run.err.count("\n") == 1, run.err
    assert "members 2 (n1, n2), not 1 (n1)" in run.err and "new --data-dir" in run.err
    # Another node's name on it, in another cluster.
    other = tmp_path / "other.toml"
    other.write_text(render_cluster(plan_loopback(2, cluster_id="other")))
    run = cli("serve", "--cluster", str(other), "--id", "n2", "--data-dir", str(data))
    assert run.code == 1 and run.err.count("\n") == 1, run.err
    assert "cluster id 'other'" in run.err and "node name 'n2', not 'n1'" in run.err
    assert _snapshot(data) == before


@posix_only
def test_serve_keeps_its_data_next_to_the_cluster_file_by_default(tmp_path: Path) -> None:
    cluster_file = tmp_path / "c" / "cluster.toml"
    cluster_file.parent.mkdir()
    spec = plan_loopback(2)
    cluster_file.write_text(render_cluster(spec))
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "raftly.cli", "serve", "--cluster",
                             str(cluster_file), "--id", "n1"], cwd=elsewhere,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until("n1 answers", lambda: _answers(str(spec.node("n1").api)))
        assert (tmp_path / "c" / "n1" / "identity.json").exists()  # as `cluster up` lays it out
        assert not (elsewhere / "raftly-data").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    # Data under the old default, none under the new one: refused, not started empty.
    (elsewhere / "raftly-data" / "n2").mkdir(parents=True)
    run = cli("serve", "--cluster", str(cluster_file), "--id", "n2", cwd=elsewhere)
    assert run.code == 1 and run.err.count("\n") == 1, run.err
    assert "old default data dir" in run.err and "--data-dir raftly-data/n2" in run.err
    assert not (tmp_path / "c" / "n2").exists()


@contextlib.contextmanager
def _cluster_up(directory: Path, base: int, nodes: int = 3
                ) -> Iterator[tuple[subprocess.Popen[bytes], Path, Path]]:
    out_path, err_path = directory.with_suffix(".out"), directory.with_suffix(".err")
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "raftly.cli", "cluster", "up", "--nodes", str(nodes),
             "--dir", str(directory), "--base-port", str(base),
             "--election-timeout", str(ELECTION_TIMEOUT), "--heartbeat", str(HEARTBEAT),
             # Generous, so that a slow machine cannot turn "dies again at once" into a restart.
             "--restart-window", "300"],
            stdout=out, stderr=err, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        yield proc, out_path, err_path
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _pids(text: str) -> dict[str, int]:
    return {m[0]: int(m[1]) for m in re.findall(r"(n\d)  pid (\d+)", text)}


@posix_only
def test_cluster_up_restarts_a_dead_node_and_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    base = free_base_port()
    directory = tmp_path / "c"
    endpoints = [f"127.0.0.1:{base + 1000 + i}" for i in range(3)]
    manual: subprocess.Popen[bytes] | None = None
    with _cluster_up(directory, base) as (proc, out, err):
        wait_until("the endpoints", lambda: "Ctrl-C stops" in out.read_text())
        cluster_id = re.findall(r"RAFTLY_CLUSTER_ID=(\S+)", out.read_text())[0]
        pids = _pids(out.read_text())
        wait_until("the leader report", lambda: "leader is" in out.read_text())

        # Another cluster on the same ports: refused before anything starts or is reported.
        second = cli("cluster", "up", "--dir", str(tmp_path / "second"), "--base-port", str(base))
        assert second.code == 1 and second.err.count("\n") == 1, second.err
        assert f"n1 raft 127.0.0.1:{base}" in second.err and "already in use" in second.err
        assert "leader is" not in second.out and not (tmp_path / "second").exists()

        # A node that dies is restarted, under the same identity and data.
        with Client(endpoints, timeout=20) as kv:
            kv.put("k", b"v")
        os.kill(pids["n3"], signal.SIGKILL)
        restarted = wait_until("n3 restarted", lambda: re.findall(
            rf"node n3 \(pid {pids['n3']}\) killed by SIGKILL; restarted it as pid (\d+)",
            err.read_text()))
        new_pid = int(restarted[0])
        wait_until("n3 back", lambda: _answers(endpoints[2]))
        # Dying again at once: left down, with the exact command to start it by hand.
        os.kill(new_pid, signal.SIGKILL)
        hint = wait_until("the hand command", lambda: re.findall(
            r"not restarting it\. To start it by hand: (.*)", err.read_text()))[0]
        argv = shlex.split(hint)
        assert argv[:2] == ["raftly", "serve"]
        assert argv[argv.index("--data-dir") + 1] == str(directory / "n3")
        manual = subprocess.Popen([sys.executable, "-m", "raftly.cli", *argv[1:]],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        try:
            status = wait_until("n3 started by hand", lambda: _answers(endpoints[2]))
            assert status["cluster_id"] == cluster_id and status["id"] == "n3"
            with Client([endpoints[2]], timeout=20) as kv:
                assert kv.get("k") == b"v"
        finally:
            manual.send_signal(signal.SIGTERM)
            manual.wait(timeout=30)

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, err.read_text()[-2000:]
        text = out.read_text()
        assert "stopping 2 nodes" in text, text  # n3 was down
        assert "all nodes stopped (n3 killed by SIGKILL)" in text, text

    # The same directory with another size: one line, nothing started.
    resized = cli("cluster", "up", "--nodes", "5", "--dir", str(directory),
                  "--base-port", str(base))
    assert resized.code == 1 and resized.err.count("\n") == 1, resized.err
    assert "holds a 3-node cluster (n1, n2, n3)" in resized.err and "--nodes 3" in resized.err
    assert resized.out == "" and not (directory / "n4").exists()


def test_status_shows_a_down_node_by_name_and_exits_non_zero(cluster: ProcessCluster) -> None:
    cluster.kill("n3")
    run = cli("status", "--endpoints", ",".join(cluster.endpoints), "--timeout", "1")
    assert run.code == 1, run.out + run.err
    rows = {line.split()[0]: line.split() for line in run.out.splitlines()[1:]}
    assert rows["n3"][1] == "unreachable"
    assert run.err.count("\n") == 1 and run.err.startswith(
        f"raftly: n3: unreachable at {cluster.nodes['n3'].api} ("), run.err


def test_status_exits_non_zero_for_a_node_that_is_not_a_member(tmp_path: Path) -> None:
    # n4 thinks it is in a 4-node cluster; the other three (the same cluster id) do not.
    spec = plan_loopback(4)
    three = ClusterSpec(spec.cluster_id, spec.nodes[:3])
    views = {"n1": three, "n2": three, "n3": three, "n4": spec}
    cluster = ProcessCluster(tmp_path, spec, views=views, election_timeout=ELECTION_TIMEOUT,
                             heartbeat=HEARTBEAT, fsync="never")
    try:
        cluster.start()
        cluster.wait_for_leader(timeout=30.0, among=["n1", "n2", "n3"])
        run = cli("status", "--endpoints", ",".join(cluster.endpoints))
        assert run.code == 1, run.out + run.err
        assert run.err.count("\n") == 1 and "n4 at" in run.err
        assert "is not a member of the cluster led by" in run.err
        assert "(members n1, n2, n3)" in run.err
    finally:
        cluster.stop(grace=5.0)
        dump_logs(cluster)


def test_status_and_kv_refuse_a_cluster_with_another_id(shared_cluster: ProcessCluster) -> None:
    eps = shared_cluster.endpoints
    mine = shared_cluster.spec.cluster_id
    good = cli("status", "--cluster-id", mine, endpoints=eps)
    assert good.code == 0, good.err
    wrong = cli("status", "--cluster-id", "someone-else", endpoints=eps)
    assert wrong.code == 1 and wrong.err.count("\n") == 3, wrong.err
    assert f"is in cluster {mine!r}, not 'someone-else'" in wrong.err
    refused = cli("kv", "put", "id/k", "v", "--cluster-id", "someone-else", endpoints=eps)
    assert refused.code == 1 and refused.err.count("\n") == 1, refused.err
    assert "not 'someone-else'" in refused.err
    assert cli("kv", "get", "id/k", endpoints=eps).code == 1  # nothing was written
    right = cli("kv", "put", "id/k", "v", "--cluster-id", mine, endpoints=eps)
    assert right.code == 0, right.err


def test_status_refuses_endpoints_of_two_clusters(shared_cluster: ProcessCluster,
                                                  tmp_path: Path) -> None:
    other = new_cluster(tmp_path / "other", nodes=1)
    try:
        other.start()
        other.wait_for_leader(timeout=30.0)
        run = cli("status", "--endpoints", ",".join([*shared_cluster.endpoints,
                                                     *other.endpoints]))
        assert run.code == 1 and "belong to 2 different clusters" in run.err, run.err
    finally:
        other.stop(grace=5.0)


def test_a_busy_port_is_named_by_cluster_up_before_it_starts_anything(tmp_path: Path) -> None:
    base = free_base_port()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", base + 1001))
        squatter.listen()
        run = cli("cluster", "up", "--dir", str(tmp_path / "c"), "--base-port", str(base))
    assert run.code == 1 and run.err.count("\n") == 1, run.err
    assert f"n2 api 127.0.0.1:{base + 1001}" in run.err
    assert not (tmp_path / "c").exists()


def test_cluster_up_refuses_data_dirs_of_another_cluster_and_says_what_to_do(
        tmp_path: Path) -> None:
    from raftly.kv.identity import NodeIdentity, claim_data_dir

    directory = tmp_path / "c"
    other = NodeIdentity("someone-elses-cluster", "n1", 1, (("n1", 1), ("n2", 2), ("n3", 3)))
    claim_data_dir(directory / "n1", other, "a test")
    before = _snapshot(directory)
    run = cli("cluster", "up", "--dir", str(directory), "--base-port", str(free_base_port()))
    assert run.code == 1 and run.err.count("\n") == 1, run.err
    assert "someone-elses-cluster" in run.err and "another --dir" in run.err, run.err
    assert _snapshot(directory) == before  # nothing written, nothing started

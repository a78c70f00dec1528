"""The ``raftly`` command as a user runs it: kv and status against a running cluster, serve's
errors, ``cluster up`` started and stopped with SIGINT, and ``raftly demo`` to completion.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from e2e_helpers import cli, free_base_port
from polling import wait_until

from raftly.cli import main
from raftly.kv.client import Client
from raftly.localcluster import ProcessCluster
from raftly.localproc import free_ports

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def test_kv_commands_and_exit_codes(shared_cluster: ProcessCluster) -> None:
    eps = shared_cluster.endpoints
    run = cli("kv", "put", "cli/greeting", "hello", endpoints=eps)
    assert (run.code, run.err) == (0, "") and run.out.startswith("OK (index ")
    # Not a terminal: the exact bytes, no newline added (test_cli_bytes shows a terminal).
    assert cli("kv", "get", "cli/greeting", endpoints=eps).out == "hello"
    # Only the last endpoint given: the command still finds the leader.
    one = ["--endpoints", eps[-1]]
    assert cli("kv", "put", "cli/stdin", *one, stdin=b"from\xffstdin").code == 0
    assert cli("kv", "get", "--raw", "cli/stdin", *one).out == "from\ufffdstdin"

    missing = cli("kv", "get", "cli/missing", endpoints=eps)
    assert missing.code == 1 and missing.out == ""
    assert missing.err == "raftly: cli/missing: not found\n"

    assert cli("kv", "cas", "cli/greeting", "hello", "hi", endpoints=eps).out == "OK\n"
    lost = cli("kv", "cas", "cli/greeting", "hello", "again", endpoints=eps)
    assert lost.code == 1 and "not swapped" in lost.err
    assert cli("kv", "get", "cli/greeting", endpoints=eps).out == "hi"

    listed = cli("kv", "list", "cli/", endpoints=eps)
    assert listed.out == "cli/greeting\thi\ncli/stdin\tfrom\\xffstdin\n"
    assert cli("kv", "del", "cli/greeting", endpoints=eps).out == "1\n"
    assert cli("kv", "del", "cli/greeting", endpoints=eps).out == "0\n"

    usage = cli("kv", "frobnicate", endpoints=eps)
    assert usage.code == 2 and "invalid choice" in usage.err


def test_status_prints_a_table_of_every_node(shared_cluster: ProcessCluster) -> None:
    leader, _ = shared_cluster.wait_for_leader()
    # The short form: a bare port reuses the host before it.
    ports = [str(n.spec.api.port) for n in shared_cluster.nodes.values()]
    run = cli("status", "--endpoints", "127.0.0.1:" + ",".join(ports))
    assert run.code == 0, run.err
    header, *rows = run.out.splitlines()
    assert header.split() == ["ID", "ROLE", "TERM", "COMMIT", "APPLIED", "SNAPSHOT", "LOG", "DISK",
                              "LEADER"]
    table = {row.split()[0]: row.split() for row in rows}
    assert set(table) == set(shared_cluster.nodes)
    assert table[leader][1] == "leader"
    assert {row[-1] for row in table.values()} == {leader}


def test_unreachable_nodes_are_one_line_errors_not_tracebacks() -> None:
    [port] = free_ports(1)  # nothing listens there
    run = cli("kv", "get", "k", "--endpoints", f"127.0.0.1:{port}", "--timeout", "0.5")
    assert run.code == 1 and run.err.startswith("raftly: unavailable: ")
    assert "Traceback" not in run.err and run.err.count("\n") == 1
    status = cli("status", "--endpoints", f"127.0.0.1:{port}", "--timeout", "0.5")
    assert status.code == 1 and "unreachable" in status.out and "Traceback" not in status.err


def test_serve_reports_bad_input_in_one_line(tmp_path: Path) -> None:
    missing = cli("serve", "--cluster", str(tmp_path / "nope.toml"), "--id", "n1")
    assert missing.code == 1 and "cannot read cluster file" in missing.err
    assert "Traceback" not in missing.err
    cluster_file = tmp_path / "cluster.toml"
    raft, api = free_ports(2)
    cluster_file.write_text(f'[nodes.n1]\nraft = "127.0.0.1:{raft}"\napi = "127.0.0.1:{api}"\n')
    unknown = cli("serve", "--cluster", str(cluster_file), "--id", "n9")
    assert unknown.code == 1 and "no node named 'n9'" in unknown.err
    timing = cli("serve", "--cluster", str(cluster_file), "--id", "n1",
                 "--election-timeout", "0.05", "--heartbeat", "0.1")
    assert timing.code == 2 and "election_timeout" in timing.err
    # A port already taken: one line naming the problem.
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", api))
        squatter.listen()
        busy = cli("serve", "--cluster", str(cluster_file), "--id", "n1",
                   "--data-dir", str(tmp_path / "data"))
    assert busy.code == 1 and "address already in use" in busy.err.lower(), busy.err
    assert "Traceback" not in busy.err


@posix_only
def test_cluster_up_runs_reports_a_dead_child_and_stops_cleanly_on_sigint(
        tmp_path: Path) -> None:
    base = free_base_port()
    out_path, err_path = tmp_path / "out", tmp_path / "err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "raftly.cli", "cluster", "up", "--nodes", "3",
             "--dir", str(tmp_path / "c"), "--base-port", str(base),
             "--election-timeout", "0.4", "--heartbeat", "0.08"],
            stdout=out, stderr=err, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    pids: dict[str, int] = {}
    try:
        wait_until("the endpoints", lambda: "Ctrl-C stops" in out_path.read_text())
        text = out_path.read_text()
        pids = {m[0]: int(m[1]) for m in re.findall(r"(n\d)  pid (\d+)", text)}
        assert set(pids) == {"n1", "n2", "n3"}
        assert f"api http://127.0.0.1:{base + 1000}" in text
        assert (tmp_path / "c" / "cluster.toml").exists()
        endpoints = [f"127.0.0.1:{base + 1000 + i}" for i in range(3)]
        with Client(endpoints, timeout=20) as kv:
            kv.put("up", b"yes")
        wait_until("the leader report", lambda: "leader is" in out_path.read_text())
        os.kill(pids["n3"], signal.SIGKILL)
        restarted = wait_until("n3's death reported and n3 restarted", lambda: re.findall(
            rf"node n3 \(pid {pids['n3']}\) killed by SIGKILL; restarted it as pid (\d+)",
            err_path.read_text()))
        pids["n3 restarted"] = int(restarted[0])  # must be stopped by Ctrl-C too
        with Client(endpoints, timeout=20) as kv:
            assert kv.get("up") == b"yes"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, err_path.read_text()[-2000:]
        assert "all nodes stopped" in out_path.read_text()
        for pid in pids.values():
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in pids.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_demo_runs_to_completion() -> None:
    started = time.monotonic()
    run = cli("demo", timeout=120)
    took = time.monotonic() - started
    assert run.code == 0, run.out + run.err
    for milestone in ("won the election for term", "kill -9", "(all there)",
                      "caught up on what it missed", "all stopped", "temporary directory removed"):
        assert milestone in run.out, milestone
    assert took < 60, f"the demo took {took:.1f}s"


def test_simulated_demo_still_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--simulated", "--nodes", "3"]) == 0
    assert "every node applied the same history" in capsys.readouterr().out

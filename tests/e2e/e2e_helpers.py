"""Helpers of the end-to-end tests: timing settings, raw HTTP without redirects, the CLI.

The tests run real ``raftly serve`` processes on 127.0.0.1 (through ``ProcessCluster``), poll
with generous deadlines rather than sleeping, and kill every process in a fixture teardown.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from raftly.localcluster import ProcessCluster, plan_loopback

# Fast but sane timings: an election in well under a second, yet far above loopback latency and
# the scheduling hiccups of a busy 2-core CI machine.
ELECTION_TIMEOUT = 0.4
HEARTBEAT = 0.08
# Generous: the failover bound a test asserts (the expected time is ~0.5-1.5 s).
FAILOVER_BOUND = 10.0

def new_cluster(directory: Path, nodes: int = 3,
                serve_options: Sequence[str] = ()) -> ProcessCluster:
    return ProcessCluster(directory, plan_loopback(nodes), fsync="always",
                          election_timeout=ELECTION_TIMEOUT, heartbeat=HEARTBEAT,
                          log_level="INFO", serve_options=serve_options)


def started(cluster: ProcessCluster) -> Iterator[ProcessCluster]:
    """For a fixture: ``cluster`` started with a leader, then stopped and its logs printed."""
    try:
        cluster.start()
        cluster.wait_for_leader(timeout=30.0)
        yield cluster
    finally:
        cluster.stop(grace=5.0)
        dump_logs(cluster)


def dump_logs(cluster: ProcessCluster, lines: int = 40) -> None:
    """Print each node's last log lines (pytest shows them when a test fails)."""
    for node in cluster.nodes.values():
        print(f"--- {node.name} (pid {node.pid}) last log lines ---\n{node.log_tail(lines)}")


@dataclass(slots=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def request(endpoint: str, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None, timeout: float = 15.0) -> Reply:
    """One HTTP request, redirects not followed (the tests look at the 307 itself)."""
    conn = http.client.HTTPConnection(endpoint, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()



@dataclass(slots=True)
class Run:
    code: int
    out: str
    err: str


def cli(*args: str, endpoints: list[str] | None = None, stdin: bytes | None = None,
        timeout: float = 60.0, cwd: Path | None = None, env: dict[str, str] | None = None
        ) -> Run:
    """Run ``python -m raftly.cli ARGS`` as a separate process, as a user would (in ``cwd``,
    with ``env`` added to the environment)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    if endpoints is not None:
        env["RAFTLY_ENDPOINTS"] = ",".join(endpoints)
    proc = subprocess.run([sys.executable, "-m", "raftly.cli", *args], input=stdin,
                          capture_output=True, timeout=timeout, env=env, cwd=cwd)
    return Run(proc.returncode, proc.stdout.decode(errors="replace"),
               proc.stderr.decode(errors="replace"))


def free_base_port() -> int:
    """A base port P with P..P+2 and P+1000..P+1002 all free (cluster up's layout)."""
    for _ in range(50):
        base = int.from_bytes(os.urandom(2), "big") % 20000 + 20000
        ports = [base + i for i in range(3)] + [base + 1000 + i for i in range(3)]
        socks = []
        try:
            for port in ports:
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")

"""A local cluster of real ``raftly serve`` child processes on loopback.

``ProcessCluster`` writes a cluster file, starts one child process per node, kills and restarts
them, polls their ``/v1/status`` and stops them all. ``raftly cluster up`` and ``raftly demo``
are built on it, and so are the end-to-end tests.

Children run in their own process group, so a Ctrl-C in the terminal reaches only the parent,
which then stops them in order (SIGTERM, then SIGKILL after a grace period). On Linux a child also
gets SIGTERM if the parent dies without cleaning up (``PR_SET_PDEATHSIG``), so no orphaned node
keeps its ports.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from raftly.kv.cluster_file import Address, ClusterSpec, NodeSpec, render_cluster
from raftly.localproc import die_with_parent, free_ports

POLL = 0.05


@dataclass(slots=True)
class NodeProcess:
    """One node of a ``ProcessCluster``; ``proc`` is None until started."""

    spec: NodeSpec
    data_dir: Path
    log_path: Path | None
    proc: subprocess.Popen[bytes] | None = None
    reported_exit: bool = False
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def api(self) -> str:
        return str(self.spec.api)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class ProcessCluster:
    """Nodes ``n1``..``nN`` (raft ids 1..N) as child processes, with their data under ``directory``.

    ``base_port`` P puts node i's Raft transport on P+i-1 and its API on P+1000+i-1 (so 7001 gives
    APIs 8001, 8002, ...); without it every port is a free one chosen now. ``log_to_files`` sends
    each child's stderr to ``directory/NAME.log``; otherwise children share the parent's stderr.
    """

    def __init__(self, directory: str | Path, nodes: int = 3, *, base_port: int | None = None,
                 host: str = "127.0.0.1", fsync: str = "always",
                 election_timeout: float | None = None, heartbeat: float | None = None,
                 log_level: str = "INFO", log_to_files: bool = True,
                 cluster_id: str | None = None, python: str = sys.executable) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self.directory = Path(directory)
        self.fsync = fsync
        self.election_timeout = election_timeout
        self.heartbeat = heartbeat
        self.log_level = log_level
        self.python = python
        if base_port is None:
            ports = free_ports(2 * nodes, host)
            raft_ports, api_ports = ports[:nodes], ports[nodes:]
        else:
            if base_port < 1 or base_port + 1000 + nodes - 1 > 65535:
                raise ValueError(f"base port {base_port} leaves no room for {nodes} nodes")
            raft_ports = [base_port + i for i in range(nodes)]
            api_ports = [base_port + 1000 + i for i in range(nodes)]
        specs = tuple(NodeSpec(f"n{i + 1}", i + 1, Address(host, raft_ports[i]),
                               Address(host, api_ports[i])) for i in range(nodes))
        cluster_id = cluster_id or f"raftly-local-{os.getpid()}-{time.time_ns()}"
        self.spec = ClusterSpec(cluster_id, specs)
        self.cluster_file = self.directory / "cluster.toml"
        self.nodes: dict[str, NodeProcess] = {
            s.name: NodeProcess(s, self.directory / s.name,
                                self.directory / f"{s.name}.log" if log_to_files else None)
            for s in specs}

    # -- processes ------------------------------------------------------------------------------

    def write_cluster_file(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.cluster_file.write_text(render_cluster(self.spec))
        return self.cluster_file

    def command(self, name: str) -> list[str]:
        """The ``raftly serve`` command line of node ``name``."""
        node = self.nodes[name]
        cmd = [self.python, "-m", "raftly.cli", "serve", "--cluster", str(self.cluster_file),
               "--id", name, "--data-dir", str(node.data_dir), "--fsync", self.fsync,
               "--log-level", self.log_level]
        if self.election_timeout is not None:
            cmd += ["--election-timeout", str(self.election_timeout)]
        if self.heartbeat is not None:
            cmd += ["--heartbeat", str(self.heartbeat)]
        return cmd

    def start(self, names: Iterable[str] | None = None) -> None:
        """Start the named nodes (default: every node not running)."""
        if not self.cluster_file.exists():
            self.write_cluster_file()
        for name in names if names is not None else list(self.nodes):
            node = self.nodes[name]
            if node.running:
                continue
            stderr: IO[bytes] | None = None
            if node.log_path is not None:
                if node._log is not None:
                    node._log.close()
                node._log = stderr = node.log_path.open("ab")
            node.proc = subprocess.Popen(
                self.command(name), stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True, preexec_fn=die_with_parent)
            node.reported_exit = False

    def kill(self, name: str, sig: int = signal.SIGKILL, timeout: float = 10.0) -> None:
        """Send ``sig`` to node ``name`` and wait until it has exited."""
        node = self.nodes[name]
        if node.proc is None or node.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            node.proc.send_signal(sig)
        try:
            node.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            node.proc.kill()
            node.proc.wait()
        node.reported_exit = True

    def stop(self, grace: float = 10.0) -> dict[str, int | None]:
        """SIGTERM every node, SIGKILL those still running after ``grace`` s; exit codes."""
        running = [n for n in self.nodes.values() if n.running]
        for node in running:
            assert node.proc is not None
            with contextlib.suppress(ProcessLookupError):
                node.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for node in running:
            assert node.proc is not None
            try:
                node.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait()
        for node in self.nodes.values():
            if node._log is not None:
                node._log.close()
                node._log = None
        return {n.name: (n.proc.returncode if n.proc is not None else None)
                for n in self.nodes.values()}

    def exited(self) -> list[tuple[str, int]]:
        """Nodes that exited since the last call (and were not stopped by us): name, code."""
        gone = []
        for node in self.nodes.values():
            if node.proc is not None and not node.reported_exit:
                code = node.proc.poll()
                if code is not None:
                    node.reported_exit = True
                    gone.append((node.name, code))
        return gone

    def __enter__(self) -> ProcessCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- observing ------------------------------------------------------------------------------

    @property
    def endpoints(self) -> list[str]:
        return [n.api for n in self.nodes.values()]

    def running_names(self) -> list[str]:
        return [n.name for n in self.nodes.values() if n.running]

    def status(self, name: str, timeout: float = 0.5) -> dict[str, Any] | None:
        """Node ``name``'s ``/v1/status``, or None if it does not answer."""
        from raftly.kv.client import Client, ClientError

        node = self.nodes[name]
        try:
            with Client([node.api], timeout=timeout, request_timeout=timeout) as client:
                return client.status(node.api)
        except (OSError, ClientError, ValueError):
            return None

    def statuses(self, names: Iterable[str] | None = None) -> dict[str, dict[str, Any] | None]:
        return {name: self.status(name) for name in (names or self.nodes)}

    def wait_for_leader(self, timeout: float = 15.0, among: Iterable[str] | None = None
                        ) -> tuple[str, dict[str, Any]]:
        """Wait until the nodes ``among`` (default: the running ones) agree on one leader.

        Returns the leader's name and its status. The leader must be one of ``among`` and say
        itself that it leads.
        """
        names = list(among) if among is not None else self.running_names()
        deadline = time.monotonic() + timeout
        last: dict[str, dict[str, Any] | None] = {}
        while True:
            self._check_alive(names)
            last = self.statuses(names)
            leaders = {s["leader"] for s in last.values() if s is not None}
            if None not in last.values() and len(leaders) == 1:
                leader = leaders.pop()
                if leader in last and last[leader]["role"] == "leader":  # type: ignore[index]
                    return leader, last[leader]  # type: ignore[return-value]
            if time.monotonic() > deadline:
                raise TimeoutError(f"no agreed leader among {names} within {timeout}s: "
                                   f"{_summary(last)}")
            time.sleep(POLL)

    def wait_applied(self, name: str, index: int, timeout: float = 15.0) -> dict[str, Any]:
        """Wait until node ``name`` has applied ``index``; return its status."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive([name])
            status = self.status(name)
            if status is not None and status["applied_index"] >= index:
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} did not apply index {index} within {timeout}s: "
                                   f"{status}")
            time.sleep(POLL)

    def _check_alive(self, names: Iterable[str]) -> None:
        for name in names:
            node = self.nodes[name]
            if node.proc is not None and node.proc.poll() is not None:
                tail = node.log_tail()
                raise RuntimeError(f"node {name} exited with code {node.proc.returncode}"
                                   + (f"; last log lines:\n{tail}" if tail else ""))


def _summary(statuses: dict[str, dict[str, Any] | None]) -> str:
    return ", ".join(f"{name}: " + (f"{s['role']} term {s['term']} leader {s['leader']}"
                                    if s is not None else "no answer")
                     for name, s in statuses.items())


def format_table(statuses: dict[str, dict[str, Any] | None]) -> Iterator[str]:
    """The status table of ``raftly status``: id, role, term, commit, applied, leader."""
    rows = [("ID", "ROLE", "TERM", "COMMIT", "APPLIED", "LEADER")]
    for name, s in statuses.items():
        if s is None:
            rows.append((name, "unreachable", "-", "-", "-", "-"))
        else:
            rows.append((str(s.get("id", name)), str(s["role"]), str(s["term"]),
                         str(s["commit_index"]), str(s["applied_index"]),
                         str(s["leader"] or "-")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        yield "  ".join(cell.rjust(w) if i in (2, 3, 4) else cell.ljust(w)
                        for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()


__all__ = ["NodeProcess", "ProcessCluster", "format_table", "free_ports"]

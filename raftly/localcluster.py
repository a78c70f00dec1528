"""Running a cluster of real ``raftly serve`` processes on this machine.

``ProcessCluster`` is the one node launcher: it writes the cluster file(s), starts one child
process per node, and stops, kills (``kill -9``), pauses, resumes and restarts them, polls their
``/v1/status`` (``wait_for_leader`` is the one place that waits for real node processes to agree
on a leader) and stops them all on the way out. ``raftly demo``, ``raftly cluster up``,
``raftly bench``, ``raftly check`` and the end-to-end tests are built on it.

Every node is exactly ``raftly serve``. It is started as ``python -m raftly.localcluster
--parent PID --signal SIG -- SERVE-ARGS``: that small launcher asks Linux to send SIG when the
parent dies (``PR_SET_PDEATHSIG``, which survives ``exec``) and then execs ``python -m raftly.cli
serve SERVE-ARGS`` in the same process, so no node outlives even a SIGKILLed parent and keeps
its ports. (A ``preexec_fn`` would do the same from the parent, but it is unsafe once the parent
has threads, as an asyncio runner does.)

Children run in their own process group, so a Ctrl-C in the terminal reaches only the parent,
which then stops them in order (SIGCONT for a paused one, SIGTERM, then SIGKILL after a grace
period), and a signal reaches the node and anything it started.

With ``tls_dir`` the cluster runs TLS on both ports of every node (``raftly serve --tls-dir``):
the certificates are made there on the first start (``raftly.security.certs.init_certs``, one
per node plus a client certificate), a node added later gets its own from the same CA, and an
existing directory is reused as it is. The cluster's own status polls then speak https with
that CA (and send ``token``, for a cluster that serves with an auth file).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from raftly.kv.cluster_file import Address, ClusterSpec, NodeSpec, render_cluster
from raftly.localproc import die_with_parent, free_ports

POLL = 0.05
"""Seconds between two polls of the nodes' status."""

Status = dict[str, Any]
"""A node's ``/v1/status`` answer."""


def plan_loopback(nodes: int, *, base_port: int | None = None, host: str = "127.0.0.1",
                  cluster_id: str | None = None) -> ClusterSpec:
    """Nodes ``n1``..``nN`` (raft ids 1..N) on ``host``.

    ``base_port`` P puts node i's Raft transport on P+i-1 and its API on P+1000+i-1 (so 7001
    gives APIs 8001, 8002, ...); without it every port is a free one chosen now.
    """
    if nodes < 1:
        raise ValueError("a cluster needs at least one node")
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
    return ClusterSpec(cluster_id or f"raftly-local-{os.getpid()}-{time.time_ns()}", specs)


@dataclass(frozen=True, slots=True)
class Layout:
    """Where a cluster's files go under its directory; ``{name}`` stands for a node's name."""

    cluster_file: str = "cluster.toml"
    """The cluster file every node shares (when the nodes have no views of their own)."""
    view_file: str = "cluster/{name}.toml"
    """A node's own cluster file, when it has a view of its own."""
    data_dir: str = "{name}"
    log_file: str = "{name}.log"


@dataclass(slots=True)
class NodeProcess:
    """One node of a ``ProcessCluster``; ``proc`` is None until started."""

    spec: NodeSpec
    cluster_file: Path
    data_dir: Path
    log_path: Path | None
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False
    starts: int = 0
    ended_by_us: bool = False
    """The running process was (or is being) stopped or killed by the cluster itself."""
    reported_exit: bool = False
    join: str | None = None
    """For a node added to a running cluster: the API addresses it joins through
    (``raftly serve --join``); None for a bootstrap member of the cluster file."""
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
    """The nodes of ``spec`` as child processes, with their files under ``directory``.

    ``views`` gives a node a cluster file of its own (``raftly check`` routes each node's Raft
    traffic through proxies that way); otherwise they share one. ``env`` is added to every
    node's environment, a None value removing the variable. ``log_to_files`` sends each child's
    output to its log file; otherwise children share the parent's stdout and stderr.
    ``orphan_signal`` is what a node gets if this process dies without stopping it.
    ``serve_options`` are more ``raftly serve`` options for every node (``--snapshot-entries``).
    ``tls_dir``: TLS on every node, certificates there (made if absent; see the module
    docstring); ``token``: for this object's own status polls. ``log_format``: the nodes'
    ``--log-format`` (text or json).
    """

    def __init__(self, directory: str | Path, spec: ClusterSpec, *,
                 views: Mapping[str, ClusterSpec] | None = None, layout: Layout = Layout(),
                 fsync: str = "always", election_timeout: float | None = None,
                 heartbeat: float | None = None, log_level: str = "INFO",
                 log_to_files: bool = True, env: Mapping[str, str | None] | None = None,
                 orphan_signal: signal.Signals = signal.SIGTERM,
                 serve_options: Sequence[str] = (), tls_dir: str | Path | None = None,
                 token: str | None = None, log_format: str = "text") -> None:
        self.directory = Path(directory)
        self.tls_dir = Path(tls_dir) if tls_dir is not None else None
        self.token = token
        """Sent with this object's own requests (status polls) to a cluster with an auth file."""
        self._ssl: ssl.SSLContext | None = None
        self.spec = spec
        self.views = dict(views) if views is not None else None
        self.fsync = fsync
        self.election_timeout = election_timeout
        self.heartbeat = heartbeat
        self.log_level = log_level
        self.log_format = log_format
        self.env = dict(env or {})
        self.orphan_signal = orphan_signal
        self.serve_options = list(serve_options)
        self._files_written = False
        self.layout = layout
        self.log_to_files = log_to_files
        self.cluster_file = self.directory / layout.cluster_file
        self.nodes: dict[str, NodeProcess] = {}
        for s in spec.nodes:
            cfile = (self.directory / layout.view_file.format(name=s.name)
                     if self.views is not None else self.cluster_file)
            log = self.directory / layout.log_file.format(name=s.name) if log_to_files else None
            self.nodes[s.name] = NodeProcess(s, cfile,
                                             self.directory / layout.data_dir.format(name=s.name),
                                             log)

    # -- processes ------------------------------------------------------------------------------

    def write_cluster_file(self) -> Path:
        """Write the cluster file(s), replacing any left by an earlier run in the directory;
        returns the shared one's path. ``start`` does it first if nobody did."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._files_written = True
        if self.views is None:
            self.cluster_file.write_text(render_cluster(self.spec))
        else:
            for node in self.nodes.values():
                if node.join is not None:
                    continue  # a joining node has no cluster file
                node.cluster_file.parent.mkdir(parents=True, exist_ok=True)
                node.cluster_file.write_text(render_cluster(self.views[node.name]))
        return self.cluster_file

    def add_node(self, spec: NodeSpec, join: Sequence[str]) -> NodeProcess:
        """A node that joins the running cluster through the API addresses ``join``
        (``raftly serve --join``), not yet started; its files go where the layout says.

        The same arguments restart it: once its data dir holds its state, ``serve`` takes the
        identity from there (and checks that the flags agree).
        """
        if spec.name in self.nodes:
            raise ValueError(f"node {spec.name} exists already")
        log = (self.directory / self.layout.log_file.format(name=spec.name)
               if self.log_to_files else None)
        node = NodeProcess(spec, self.cluster_file,
                           self.directory / self.layout.data_dir.format(name=spec.name), log,
                           join=",".join(join))
        self.nodes[spec.name] = node
        return node

    def forget(self, name: str) -> NodeProcess:
        """Drop node ``name`` (removed from the cluster, no longer running) from this cluster:
        it is no longer started, polled or stopped. Returns it (its log stays on disk)."""
        node = self.nodes[name]
        if node.running:
            raise ValueError(f"node {name} is still running")
        if node._log is not None:
            node._log.close()
            node._log = None
        return self.nodes.pop(name)

    def ensure_certs(self) -> list[Path]:
        """With ``tls_dir``: make the CA and the certificates of the nodes that have none yet;
        returns the files written (none when every node had one). Without it: nothing."""
        if self.tls_dir is None:
            return []
        from raftly.security.certs import add_certs, init_certs

        if not (self.tls_dir / "ca.crt").exists():
            issued = init_certs(self.tls_dir, self.names)
        else:
            missing = [n for n in self.names if not (self.tls_dir / f"{n}.crt").exists()]
            issued = add_certs(self.tls_dir, missing) if missing else []
        return [i.cert for i in issued]

    @property
    def scheme(self) -> str:
        return "https" if self.tls_dir is not None else "http"

    def url(self, name: str) -> str:
        """The base URL of node ``name``'s API (https with TLS)."""
        return f"{self.scheme}://{self.nodes[name].api}"

    @property
    def urls(self) -> list[str]:
        return [self.url(name) for name in self.nodes]

    def client_options(self) -> dict[str, Any]:
        """``Client``/``AsyncClient`` keyword arguments that reach these nodes (the CA, the
        token)."""
        options: dict[str, Any] = {}
        if self.tls_dir is not None:
            options["cacert"] = self.tls_dir / "ca.crt"
        if self.token is not None:
            options["token"] = self.token
        return options

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client TLS context for these nodes (their CA); None without TLS."""
        if self.tls_dir is None:
            return None
        if self._ssl is None:
            from raftly.security.tls import client_context

            self._ssl = client_context(self.tls_dir / "ca.crt")
        return self._ssl

    def serve_args(self, name: str) -> list[str]:
        """The ``raftly serve`` arguments of node ``name``."""
        node = self.nodes[name]
        if node.join is not None:
            args = ["--join", node.join, "--id", name, "--raft", str(node.spec.raft),
                    "--api", str(node.spec.api)]
        else:
            args = ["--cluster", str(node.cluster_file), "--id", name]
        args += ["--data-dir", str(node.data_dir), "--fsync", self.fsync,
                 "--log-level", self.log_level]
        if self.election_timeout is not None:
            args += ["--election-timeout", str(self.election_timeout)]
        if self.heartbeat is not None:
            args += ["--heartbeat", str(self.heartbeat)]
        if self.tls_dir is not None:
            args += ["--tls-dir", str(self.tls_dir)]
        if self.log_format != "text":  # the default: command lines stay as they were
            args += ["--log-format", self.log_format]
        return args + self.serve_options

    def command(self, name: str) -> list[str]:
        """The command line that starts node ``name``: the launcher, then ``raftly serve``."""
        return [sys.executable, "-m", "raftly.localcluster", "--parent", str(os.getpid()),
                "--signal", str(int(self.orphan_signal)), "--", *self.serve_args(name)]

    def manual_command(self, name: str) -> str:
        """The shell command a user types to start node ``name`` by hand, exactly as we do."""
        return shlex.join(["raftly", "serve", *self.serve_args(name)])

    def busy_addresses(self) -> list[str]:
        """The nodes' Raft and API addresses that something already listens on, as
        ``"NAME raft|api HOST:PORT"``; port 0 (any free port) is never busy."""
        busy = []
        for node in self.nodes.values():
            for kind, address in (("raft", node.spec.raft), ("api", node.spec.api)):
                if address.port and not _can_listen(address.host, address.port):
                    busy.append(f"{node.name} {kind} {address}")
        return busy

    def _environment(self) -> dict[str, str]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # The children run the same raftly as this process, installed or not.
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH"))
                                            if p)
        for key, value in self.env.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def start(self, names: Iterable[str] | None = None) -> None:
        """Start the named nodes (default: every node not running)."""
        if not self._files_written:
            self.write_cluster_file()
        self.ensure_certs()
        env = self._environment()
        for name in names if names is not None else list(self.nodes):
            node = self.nodes[name]
            if node.running:
                continue
            node.data_dir.parent.mkdir(parents=True, exist_ok=True)
            out: IO[bytes] | None = None
            if node.log_path is not None:
                if node._log is not None:
                    node._log.close()
                node.log_path.parent.mkdir(parents=True, exist_ok=True)
                node._log = out = node.log_path.open("ab")
                out.write(f"--- start {node.starts + 1} at {time.time():.3f}\n".encode())
                out.flush()
            node.proc = subprocess.Popen(self.command(name), stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=out, env=env,
                                         start_new_session=True)
            node.paused = node.ended_by_us = node.reported_exit = False
            node.starts += 1

    def _signal(self, node: NodeProcess, sig: int) -> bool:
        """Send ``sig`` to the node's process group; False when it is not running."""
        if node.proc is None or node.proc.poll() is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.proc.pid, sig)
        return True

    def kill(self, name: str, sig: int = signal.SIGKILL, timeout: float = 10.0) -> bool:
        """Send ``sig`` (default SIGKILL: no chance to flush) and wait until the node has exited.

        False when it was not running.
        """
        node = self.nodes[name]
        if node.proc is None or node.proc.poll() is not None:
            return False
        self._end(node, sig)
        self._reap(node, time.monotonic() + timeout)
        return True

    def _end(self, node: NodeProcess, sig: int) -> None:
        node.ended_by_us = True
        if sig != signal.SIGKILL:
            self._signal(node, signal.SIGCONT)  # a stopped process ignores SIGTERM
        self._signal(node, sig)

    def _reap(self, node: NodeProcess, deadline: float) -> None:
        """Wait for the node to exit until ``deadline``, then SIGKILL it."""
        assert node.proc is not None
        try:
            node.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self._signal(node, signal.SIGKILL)
            node.proc.wait()
        node.paused = False

    def pause(self, name: str) -> bool:
        """SIGSTOP: the node freezes mid-step, its sockets open; False when not running."""
        node = self.nodes[name]
        ok = self._signal(node, signal.SIGSTOP)
        if ok:
            node.paused = True
        return ok

    def resume(self, name: str) -> bool:
        node = self.nodes[name]
        ok = self._signal(node, signal.SIGCONT)
        node.paused = False
        return ok

    def stop(self, grace: float = 10.0) -> dict[str, int | None]:
        """Stop every node: SIGCONT, SIGTERM, then SIGKILL after ``grace`` s; exit codes."""
        running = [n for n in self.nodes.values() if n.running]
        for node in running:
            self._end(node, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for node in running:
            self._reap(node, deadline)
        for node in self.nodes.values():
            if node._log is not None:
                node._log.close()
                node._log = None
        return {n.name: (n.proc.returncode if n.proc is not None else None)
                for n in self.nodes.values()}

    def exited(self) -> dict[str, int]:
        """Nodes that exited on their own (not stopped or killed by us) since the last call,
        with their exit codes."""
        gone = {}
        for node in self.nodes.values():
            if node.proc is None or node.reported_exit or node.ended_by_us:
                continue
            code = node.proc.poll()
            if code is not None:
                node.reported_exit = True
                gone[node.name] = code
        return gone

    def __enter__(self) -> ProcessCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- observing ------------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return list(self.nodes)

    @property
    def endpoints(self) -> list[str]:
        return [n.api for n in self.nodes.values()]

    def running_names(self) -> list[str]:
        return [n.name for n in self.nodes.values() if n.running]

    def answering_names(self) -> list[str]:
        """The running nodes that are not paused: those that can answer."""
        return [n.name for n in self.nodes.values() if n.running and not n.paused]

    def status(self, name: str, timeout: float = 0.5) -> Status | None:
        """Node ``name``'s ``/v1/status``, or None if it does not answer."""
        from raftly.kv.client import Client, ClientError

        url = self.url(name)
        try:
            with Client([url], timeout=timeout, request_timeout=timeout,
                        ssl_context=self.ssl_context(), token=self.token) as client:
                return client.status(url)
        except (OSError, ClientError, ValueError):
            return None

    def statuses(self, names: Iterable[str] | None = None) -> dict[str, Status | None]:
        return {name: self.status(name) for name in (names if names is not None else self.nodes)}

    def claimed_leader(self) -> str | None:
        """The node that says it leads now, in the highest term if several do (a deposed one
        lags); None when none does. A guess of the moment, not an agreement."""
        leaders = [(s.get("term", 0), name)
                   for name, s in self.statuses(self.answering_names()).items()
                   if s is not None and s.get("role") == "leader"]
        return max(leaders)[1] if leaders else None

    def wait_for_leader(self, timeout: float = 15.0, among: Iterable[str] | None = None
                        ) -> tuple[str, Status]:
        """Wait until the nodes ``among`` (default: those running and not paused) agree on one
        leader.

        Returns the leader's name and its status. Every one of ``among`` must answer and name
        the same leader, which must be one of them and say itself that it leads. Raises
        RuntimeError at once if one of them exits, TimeoutError after ``timeout`` s.
        """
        names = list(among) if among is not None else self.answering_names()
        deadline = time.monotonic() + timeout
        last: dict[str, Status | None] = {}
        while True:
            self.check_alive(names)
            last = self.statuses(names)
            leaders = {s["leader"] for s in last.values() if s is not None}
            if None not in last.values() and len(leaders) == 1:
                leader = leaders.pop()
                status = last.get(leader)
                if status is not None and status["role"] == "leader":
                    return leader, status
            if time.monotonic() > deadline:
                raise TimeoutError(f"no agreed leader among {names} within {timeout}s: "
                                   f"{_summary(last)}")
            time.sleep(POLL)

    def wait_applied(self, name: str, index: int, timeout: float = 15.0) -> Status:
        """Wait until node ``name`` has applied ``index``; return its status."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive([name])
            status = self.status(name)
            if status is not None and status["applied_index"] >= index:
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} did not apply index {index} within {timeout}s: "
                                   f"{status}")
            time.sleep(POLL)

    def check_alive(self, names: Iterable[str] | None = None) -> None:
        """Raise RuntimeError, with the end of its log, if one of the nodes has exited."""
        for name in names if names is not None else self.nodes:
            node = self.nodes[name]
            if node.proc is not None and node.proc.poll() is not None:
                tail = node.log_tail()
                raise RuntimeError(f"node {name} exited with code {node.proc.returncode}"
                                   + (f"; last log lines:\n{tail}" if tail else ""))


def _can_listen(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As the servers bind: a port left in TIME_WAIT by a stopped node counts as free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _summary(statuses: Mapping[str, Status | None]) -> str:
    return ", ".join(f"{name}: " + (f"{s['role']} term {s['term']} leader {s['leader']}"
                                    if s is not None else "no answer")
                     for name, s in statuses.items())


def _launch(argv: list[str]) -> int:
    """The launcher: ``--parent PID --signal SIG -- SERVE-ARGS``; becomes ``raftly serve``."""
    if len(argv) < 5 or argv[0] != "--parent" or argv[2] != "--signal" or argv[4] != "--":
        sys.stderr.write("usage: python -m raftly.localcluster --parent PID --signal SIG "
                         "-- SERVE-ARGS\n")
        return 2
    die_with_parent(int(argv[3]), parent=int(argv[1]))
    os.execv(sys.executable, [sys.executable, "-m", "raftly.cli", "serve", *argv[5:]])


__all__ = ["Layout", "NodeProcess", "ProcessCluster", "Status", "plan_loopback"]

if __name__ == "__main__":
    sys.exit(_launch(sys.argv[1:]))

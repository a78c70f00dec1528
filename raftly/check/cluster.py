"""The node processes of a checked cluster: start, SIGKILL, restart, SIGSTOP/SIGCONT, stop.

Each node is a separate ``raftly serve`` process, unmodified, with fast election settings, in
a process group of its own (``start_new_session``) so a signal reaches the node and
anything it started, and so that Ctrl-C on the runner does not hit the nodes before the runner
has recorded what happened. Every node gets its own cluster file in which the Raft address of
every *other* node is the proxy port of that directed link (see ``proxy``); its own entry and
every API address are real.

A node is started as ``python -m raftly.check.cluster --parent PID -- SERVE-ARGS``: that small
launcher asks Linux to kill it when the runner dies (``PR_SET_PDEATHSIG``, which survives
``exec``) and then execs ``python -m raftly.cli serve SERVE-ARGS`` in the same process, so the
node is exactly ``raftly serve`` and no node outlives even a SIGKILLed runner.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from raftly.kv.cluster_file import Address, ClusterSpec, NodeSpec, render_cluster
from raftly.kv.unsafe_reads import UNSAFE_STALE_READS_ENV
from raftly.localproc import die_with_parent, free_ports

logger = logging.getLogger("raftly.check.cluster")



@dataclass(frozen=True)
class Timing:
    """Fast Raft timing for checks: elections within a second instead of seconds.

    ``raftly serve`` picks the tick itself (at most half a heartbeat).
    """

    heartbeat: float = 0.05
    election: float = 0.3  # a follower waits 300-600 ms (the core draws from [t, 2t))


def plan_cluster(size: int, host: str = "127.0.0.1", cluster_id: str = "raftly-check"
                 ) -> ClusterSpec:
    """``size`` nodes n1..nN with real Raft and API ports on ``host``."""
    ports = free_ports(2 * size, host)
    nodes = tuple(NodeSpec(f"n{i}", i, Address(host, ports[2 * (i - 1)]),
                           Address(host, ports[2 * (i - 1) + 1]))
                  for i in range(1, size + 1))
    return ClusterSpec(cluster_id, nodes)


def node_view(cluster: ClusterSpec, name: str, via: dict[tuple[str, str], tuple[str, int]]
              ) -> ClusterSpec:
    """The cluster as ``name`` must see it: other nodes' Raft addresses are proxy ports."""
    nodes = tuple(n if n.name == name else replace(n, raft=Address(*via[(name, n.name)]))
                  for n in cluster.nodes)
    return replace(cluster, nodes=nodes)


@dataclass
class NodeProcess:
    name: str
    cluster_file: Path
    data_dir: Path
    log_file: Path
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False
    starts: int = 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Cluster:
    """Start and abuse the node processes; ``close()`` always leaves none behind."""

    def __init__(self, spec: ClusterSpec, views: dict[str, ClusterSpec], root: Path, *,
                 timing: Timing | None = None, fsync: str = "always",
                 unsafe_stale_reads: bool = False) -> None:
        self.spec = spec
        self.root = root
        self.timing = timing or Timing()
        self.fsync = fsync
        self.unsafe_stale_reads = unsafe_stale_reads
        self.nodes: dict[str, NodeProcess] = {}
        for node in spec.nodes:
            cfile = root / "cluster" / f"{node.name}.toml"
            cfile.parent.mkdir(parents=True, exist_ok=True)
            cfile.write_text(render_cluster(views[node.name]))
            (root / "logs").mkdir(parents=True, exist_ok=True)
            self.nodes[node.name] = NodeProcess(node.name, cfile, root / "data" / node.name,
                                                root / "logs" / f"{node.name}.log")

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.spec.nodes]

    def url(self, name: str) -> str:
        return self.spec.node(name).api.url

    def start(self, name: str) -> None:
        node = self.nodes[name]
        if node.running:
            return
        node.data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.pop(UNSAFE_STALE_READS_ENV, None)
        if self.unsafe_stale_reads:
            env[UNSAFE_STALE_READS_ENV] = "1"
        t = self.timing
        cmd = [sys.executable, "-m", "raftly.check.cluster", "--parent", str(os.getpid()), "--",
               "--cluster", str(node.cluster_file), "--id", name,
               "--data-dir", str(node.data_dir), "--fsync", self.fsync,
               "--heartbeat", str(t.heartbeat), "--election-timeout", str(t.election)]
        with node.log_file.open("ab") as log:
            log.write(f"--- start {node.starts + 1} at {time.time():.3f}\n".encode())
            log.flush()
            node.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env,
                                         start_new_session=True)
        node.paused = False
        node.starts += 1

    def _signal(self, name: str, sig: signal.Signals) -> bool:
        node = self.nodes[name]
        if node.proc is None or node.proc.poll() is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.proc.pid, sig)
        return True

    def kill(self, name: str) -> bool:
        """SIGKILL: no chance to flush or say goodbye. Waits until the process is gone."""
        node = self.nodes[name]
        ok = self._signal(name, signal.SIGKILL)
        if node.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.proc.wait(5)
        node.paused = False
        return ok

    def pause(self, name: str) -> bool:
        ok = self._signal(name, signal.SIGSTOP)
        if ok:
            self.nodes[name].paused = True
        return ok

    def resume(self, name: str) -> bool:
        ok = self._signal(name, signal.SIGCONT)
        self.nodes[name].paused = False
        return ok

    def live(self) -> list[str]:
        return [n for n, p in self.nodes.items() if p.running]

    def exited(self) -> dict[str, int]:
        """Nodes that died without being killed by us, with their exit codes."""
        out = {}
        for name, node in self.nodes.items():
            if node.proc is not None:
                code = node.proc.poll()
                if code is not None and code != -signal.SIGKILL:
                    out[name] = code
        return out

    def start_all(self) -> None:
        for name in self.names:
            self.start(name)

    def close(self) -> None:
        """Stop every node: SIGCONT (a stopped process ignores SIGTERM), SIGTERM, then SIGKILL."""
        for name in self.names:
            self._signal(name, signal.SIGCONT)
            self._signal(name, signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        for node in self.nodes.values():
            if node.proc is None:
                continue
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.proc.wait(max(0.1, deadline - time.monotonic()))
            if node.proc.poll() is None:
                self._signal(node.name, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.proc.wait(5)


def _main(argv: list[str]) -> int:
    """The launcher: ``--parent PID -- SERVE-ARGS``; becomes ``raftly serve SERVE-ARGS``."""
    if len(argv) < 3 or argv[0] != "--parent" or argv[2] != "--":
        print("usage: python -m raftly.check.cluster --parent PID -- SERVE-ARGS", file=sys.stderr)
        return 2
    die_with_parent(signal.SIGKILL, parent=int(argv[1]))
    os.execv(sys.executable, [sys.executable, "-m", "raftly.cli", "serve", *argv[3:]])


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

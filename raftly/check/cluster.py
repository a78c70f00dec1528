"""The node processes of a checked cluster: fast timing, per-node views through the proxies.

Each node is a separate ``raftly serve`` process, unmodified, run by
``raftly.localcluster.ProcessCluster`` (which starts, SIGKILLs, restarts, SIGSTOPs/SIGCONTs and
stops it). What is particular to a check lives here: every node gets its own cluster file in
which the Raft address of every *other* node is the proxy port of that directed link (see
``proxy``), its own entry and every API address being real; elections take well under a second;
and a node dies by SIGKILL with the runner, since a paused node would ignore a SIGTERM.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from raftly.kv.cluster_file import Address, ClusterSpec
from raftly.kv.unsafe_reads import UNSAFE_STALE_READS_ENV
from raftly.localcluster import Layout, ProcessCluster

LAYOUT = Layout(data_dir="data/{name}", log_file="logs/{name}.log")
"""Under the run's output directory: ``cluster/NAME.toml``, ``data/NAME``, ``logs/NAME.log``."""


@dataclass(frozen=True, slots=True)
class Timing:
    """Fast Raft timing for checks: elections within a second instead of seconds.

    ``raftly serve`` picks the tick itself (at most half a heartbeat).
    """

    heartbeat: float = 0.05
    election: float = 0.3  # a follower waits 300-600 ms (the core draws from [t, 2t))


def node_view(cluster: ClusterSpec, name: str, via: dict[tuple[str, str], tuple[str, int]]
              ) -> ClusterSpec:
    """The cluster as ``name`` must see it: other nodes' Raft addresses are proxy ports."""
    nodes = tuple(n if n.name == name else replace(n, raft=Address(*via[(name, n.name)]))
                  for n in cluster.nodes)
    return replace(cluster, nodes=nodes)


def check_cluster(spec: ClusterSpec, views: dict[str, ClusterSpec], root: Path, *,
                  timing: Timing | None = None, fsync: str = "always",
                  unsafe_stale_reads: bool = False,
                  serve_options: Sequence[str] = (),
                  tls_dir: Path | None = None) -> ProcessCluster:
    """The nodes of ``spec``, each seeing the cluster as ``views`` says, with files in ``root``.

    ``unsafe_stale_reads`` starts the deliberately broken test build; otherwise the variable
    that switches it on is removed from the nodes' environment, wherever the runner got it.
    ``tls_dir``: TLS on every node, certificates there (the proxies forward TLS untouched: a
    peer checks the name in the certificate, not the address it dialled).
    """
    t = timing or Timing()
    cluster = ProcessCluster(
        root, spec, views=views, layout=LAYOUT, fsync=fsync, election_timeout=t.election,
        heartbeat=t.heartbeat, orphan_signal=signal.SIGKILL,
        env={UNSAFE_STALE_READS_ENV: "1" if unsafe_stale_reads else None},
        serve_options=serve_options, tls_dir=tls_dir)
    return cluster


__all__ = ["LAYOUT", "Timing", "check_cluster", "node_view"]

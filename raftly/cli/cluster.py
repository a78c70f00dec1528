"""``raftly cluster up``: a local cluster of real ``raftly serve`` processes, in the foreground.

It writes the cluster file into the directory, starts one child per node, prints each node's
endpoints, then watches: it reports the leader whenever it changes and every child that dies.
Ctrl-C or SIGTERM stops every child cleanly (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import argparse
import hashlib
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from raftly.cli.common import LOG_LEVELS, CliError, positive_float
from raftly.localcluster import ProcessCluster, plan_loopback

DEFAULT_DIR = "raftly-cluster"


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser("cluster", help="run a local cluster of real processes",
                            description="Local clusters on this machine's loopback.")
    sub = p.add_subparsers(dest="cluster_command", required=True, metavar="COMMAND")
    up = sub.add_parser(
        "up", help="start N `raftly serve` processes and watch them until Ctrl-C",
        description="Start a local cluster of N `raftly serve` child processes on 127.0.0.1 "
                    "and run in the foreground. Node i listens for Raft on BASE+i-1 and serves "
                    "the API on BASE+1000+i-1 (so the default 7001 gives APIs 8001, 8002, 8003, "
                    "what `raftly kv` and `raftly status` use by default). Data survives in DIR: "
                    "running it again restarts the same cluster. Ctrl-C or SIGTERM stops every "
                    "node cleanly.")
    up.add_argument("--nodes", type=int, default=3, help="number of nodes (default 3)")
    up.add_argument("--dir", default=DEFAULT_DIR,
                    help=f"cluster file and data directories (default ./{DEFAULT_DIR})")
    up.add_argument("--base-port", type=int, default=7001, help="first Raft port (default 7001)")
    up.add_argument("--fsync", choices=("always", "never"), default="always")
    up.add_argument("--election-timeout", type=positive_float, metavar="SECONDS",
                    help="passed to every node (default: serve's, 1.0)")
    up.add_argument("--heartbeat", type=positive_float, metavar="SECONDS",
                    help="passed to every node (default: serve's, 0.1)")
    up.add_argument("--log-level", choices=LOG_LEVELS, default="INFO", type=str.upper,
                    help="the nodes' log level; their logs share this terminal (default INFO)")
    up.set_defaults(func=run_up)


class _Stop(Exception):
    """Raised by the signal handler to leave the watch loop."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def run_up(args: argparse.Namespace) -> int:
    if not 1 <= args.nodes <= 99:
        raise CliError("--nodes must be from 1 to 99", 2)
    directory = Path(args.dir)
    # A cluster id stable for one directory: restarting it finds the same cluster, while two
    # clusters in two directories refuse each other's connections.
    digest = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:12]
    try:
        spec = plan_loopback(args.nodes, base_port=args.base_port,
                             cluster_id=f"raftly-local-{digest}")
    except ValueError as exc:
        raise CliError(str(exc), 2) from None
    cluster = ProcessCluster(directory, spec, fsync=args.fsync,
                             election_timeout=args.election_timeout, heartbeat=args.heartbeat,
                             log_level=args.log_level, log_to_files=False)
    try:
        cluster.write_cluster_file()
    except OSError as exc:
        raise CliError(f"cannot write {cluster.cluster_file}: {exc.strerror or exc}") from None

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        cluster.start()
        out = sys.stdout
        print(f"raftly: {args.nodes}-node cluster, cluster file {cluster.cluster_file}", file=out)
        for node in cluster.nodes.values():
            print(f"  {node.name}  pid {node.pid}  raft {node.spec.raft}  api {node.spec.api.url}"
                  f"  data {node.data_dir}", file=out)
        endpoints = ",".join(cluster.endpoints)
        print(f"try:  export RAFTLY_ENDPOINTS={endpoints}\n"
              "      raftly kv put greeting hello && raftly kv get greeting && raftly status\n"
              "Ctrl-C stops the cluster.", file=out, flush=True)
        return _watch(cluster)
    except _Stop as stop:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)  # one Ctrl-C is enough; stopping takes ~1 s
        print(f"raftly: {stop}: stopping {args.nodes} nodes", flush=True)
        codes = cluster.stop()
        bad = {n: c for n, c in codes.items() if c not in (0, None)}
        print("raftly: all nodes stopped" + (f" ({bad})" if bad else ""), flush=True)
        return 0
    finally:
        # Whatever happened (an error included), no child outlives this command.
        cluster.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _watch(cluster: ProcessCluster) -> int:
    leader: tuple[str | None, int] | None = None
    while True:
        for name, code in cluster.exited().items():
            print(f"raftly: node {name} (pid {cluster.nodes[name].pid}) {describe_exit(code)}",
                  file=sys.stderr, flush=True)
        running = cluster.running_names()
        if not running:
            raise CliError("every node has exited")
        seen: tuple[str | None, int] | None = None
        for name in running:
            status = cluster.status(name, timeout=0.3)
            if status is not None and status["role"] == "leader":
                seen = (status["id"], status["term"])
        if seen is not None and seen != leader:
            print(f"raftly: leader is {seen[0]} (term {seen[1]})", flush=True)
            leader = seen
        time.sleep(0.5)

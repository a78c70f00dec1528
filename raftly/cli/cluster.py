"""``raftly cluster up``: a local cluster of real ``raftly serve`` processes, in the foreground.

Before starting anything it refuses a directory whose cluster has another size or whose data
dirs belong to another cluster, and ports something already listens on. It writes the cluster
file into the directory, starts one child per node, prints each node's endpoints, then watches:
it reports the leader whenever it changes and every child that dies, restarts a dead child once
(a child that dies again soon after is left down, with the command to start it by hand), and
Ctrl-C or SIGTERM stops every child cleanly (SIGTERM, then SIGKILL after a grace period).

``--tls`` runs every node with TLS on both ports: the certificates are made in DIR/certs on the
first ``up`` (a CA, one per node, a client certificate) and reused by the next, and the printed
``export`` line names the CA so that ``raftly kv`` and ``raftly status`` speak https to it.
``--auth-file FILE`` makes every node ask for tokens; the command itself then watches its nodes
with the token in ``$RAFTLY_TOKEN`` (at least a read one), which the nodes get too.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from raftly.cli.common import (
    CACERT_ENV,
    CLUSTER_ID_ENV,
    ENDPOINTS_ENV,
    LOG_LEVELS,
    TOKEN_ENV,
    CliError,
    add_log_format_option,
    positive_float,
)

if TYPE_CHECKING:  # imported where they run: `raftly kv ...` must not pay for them
    from raftly.kv.cluster_file import ClusterSpec
    from raftly.localcluster import ProcessCluster

DEFAULT_DIR = "raftly-cluster"
CERTS_DIR = "certs"
"""Under the cluster directory: the certificates of ``cluster up --tls``."""
RESTART_WINDOW = 10.0
"""Default seconds: a node that dies again this soon after being restarted is left down."""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser("cluster", help="run a local cluster of real processes",
                            description="Local clusters on this machine's loopback.")
    sub = p.add_subparsers(dest="cluster_command", required=True, metavar="COMMAND")
    up = sub.add_parser(
        "up", help="start N `raftly serve` processes and watch them until Ctrl-C",
        description="Start a local cluster of N `raftly serve` child processes on 127.0.0.1 "
                    "and run in the foreground. Node i listens for Raft on BASE+i-1 and serves "
                    "the API on BASE+1000+i-1 (so the default 7001 gives APIs 8001, 8002, 8003, "
                    "what `raftly kv` and `raftly status` use by default). Data survives in DIR "
                    "(DIR/cluster.toml, DIR/NAME: `raftly serve`'s default layout too): running "
                    "it again restarts the same cluster, with the same number of nodes. A node "
                    "that dies is restarted. Ctrl-C or SIGTERM stops every node cleanly.")
    up.add_argument("--nodes", type=int, default=3, help="number of nodes (default 3)")
    up.add_argument("--dir", default=DEFAULT_DIR,
                    help=f"cluster file and data directories (default ./{DEFAULT_DIR})")
    up.add_argument("--base-port", type=int, default=7001, help="first Raft port (default 7001)")
    up.add_argument("--fsync", choices=("always", "never"), default="always")
    up.add_argument("--election-timeout", type=positive_float, metavar="SECONDS",
                    help="passed to every node (default: serve's, 1.0)")
    up.add_argument("--heartbeat", type=positive_float, metavar="SECONDS",
                    help="passed to every node (default: serve's, 0.1)")
    up.add_argument("--restart-window", type=positive_float, default=RESTART_WINDOW,
                    metavar="SECONDS",
                    help="a node that dies is restarted, unless it dies again within this many "
                         f"seconds of its restart (default {RESTART_WINDOW:g})")
    up.add_argument("--log-level", choices=LOG_LEVELS, default="INFO", type=str.upper,
                    help="the nodes' log level; their logs share this terminal (default INFO)")
    add_log_format_option(up, "the nodes' logs (on this terminal): ")
    up.add_argument("--tls", action="store_true",
                    help=f"TLS between the nodes and https for clients, with certificates made "
                         f"in DIR/{CERTS_DIR} the first time (and reused after)")
    up.add_argument("--auth-file", metavar="FILE",
                    help=f"every node wants tokens from this auth file (`raftly serve "
                         f"--auth-file`); ${TOKEN_ENV} must hold one (read at least) for this "
                         f"command's own status polls")
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
    from raftly.localcluster import Layout, ProcessCluster, plan_loopback

    if not 1 <= args.nodes <= 99:
        raise CliError("--nodes must be from 1 to 99", 2)
    directory = Path(args.dir)
    cluster_file = directory / Layout().cluster_file
    existing = _existing_cluster(cluster_file, args.nodes)
    # A cluster id stable for one directory: restarting it finds the same cluster, while two
    # clusters in two directories refuse each other's connections. An existing file keeps its
    # own, so a directory that was moved or renamed is still the same cluster.
    digest = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:12]
    cluster_id = existing.cluster_id if existing is not None else f"raftly-local-{digest}"
    try:
        spec = plan_loopback(args.nodes, base_port=args.base_port, cluster_id=cluster_id)
    except ValueError as exc:
        raise CliError(str(exc), 2) from None
    token = _auth_token(args.auth_file)
    cluster = ProcessCluster(directory, spec, fsync=args.fsync,
                             election_timeout=args.election_timeout, heartbeat=args.heartbeat,
                             log_level=args.log_level, log_format=args.log_format,
                             log_to_files=False,
                             tls_dir=directory / CERTS_DIR if args.tls else None, token=token,
                             serve_options=(["--auth-file", str(Path(args.auth_file).resolve())]
                                            if args.auth_file else []))
    _check_before_starting(cluster)
    try:
        cluster.write_cluster_file()
        made = cluster.ensure_certs()
    except OSError as exc:
        raise CliError(f"cannot write in {directory}: {exc.strerror or exc}") from None
    except ValueError as exc:  # CertError: a certificate directory that cannot be used
        raise CliError(f"certificates: {exc}") from None

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        cluster.start()
        out = sys.stdout
        print(f"raftly: {args.nodes}-node cluster {cluster_id}, cluster file "
              f"{cluster.cluster_file}", file=out)
        for node in cluster.nodes.values():
            print(f"  {node.name}  pid {node.pid}  raft {node.spec.raft}  api "
                  f"{cluster.url(node.name)}  data {node.data_dir}", file=out)
        exports = f"{ENDPOINTS_ENV}={','.join(cluster.urls)} {CLUSTER_ID_ENV}={cluster_id}"
        if cluster.tls_dir is not None:
            ca = (cluster.tls_dir / "ca.crt").resolve()
            print(f"TLS on both ports of every node; certificates in {cluster.tls_dir} "
                  f"({'made now' if made else 'reused'}); clients trust {ca}", file=out)
            exports += f" {CACERT_ENV}={ca}"
        if cluster.token is not None:
            print(f"tokens: every node wants one of {args.auth_file} (Authorization: Bearer); "
                  f"the client commands send ${TOKEN_ENV}", file=out)
        print(f"try:  export {exports}\n"
              "      raftly kv put greeting hello && raftly kv get greeting && raftly status\n"
              "A node that dies is restarted; Ctrl-C stops the cluster.", file=out,
              flush=True)
        return _watch(cluster, args.restart_window)
    except _Stop as stop:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)  # one Ctrl-C is enough; stopping takes ~1 s
        running = len(cluster.running_names())
        print(f"raftly: {stop}: stopping {running} node{'s' if running != 1 else ''}", flush=True)
        codes = cluster.stop()
        bad = [f"{name} {describe_exit(code)}" for name, code in codes.items()
               if code not in (0, None)]
        print("raftly: all nodes stopped" + (f" ({', '.join(bad)})" if bad else ""), flush=True)
        return 0
    finally:
        # Whatever happened (an error included), no child outlives this command.
        cluster.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _auth_token(auth_file: str | None) -> str | None:
    """With ``--auth-file``: check the file now, and return the token of ``$RAFTLY_TOKEN``
    (which must be one of its tokens) for this command's own status polls."""
    if auth_file is None:
        return None
    from raftly.security.auth import AuthFileError, Authorizer, Unauthorized

    try:
        authorizer = Authorizer.from_file(auth_file)
    except AuthFileError as exc:
        raise CliError(str(exc)) from None
    token = os.environ.get(TOKEN_ENV) or None
    try:
        authorizer.identify(f"Bearer {token}" if token else None)
    except Unauthorized:
        raise CliError(f"--auth-file: put one of its tokens (read at least) in ${TOKEN_ENV}: "
                       "this command polls its nodes with it") from None
    return token


def _existing_cluster(cluster_file: Path, nodes: int) -> ClusterSpec | None:
    """The cluster already in the directory, if any; refuses a change of its size."""
    from raftly.kv.cluster_file import ClusterFileError, load_cluster

    if not cluster_file.exists():
        return None
    try:
        existing = load_cluster(cluster_file)
    except ClusterFileError as exc:
        raise CliError(str(exc)) from None
    if len(existing.nodes) != nodes:
        raise CliError(
            f"{cluster_file.parent} holds a {len(existing.nodes)}-node cluster "
            f"({', '.join(n.name for n in existing.nodes)}); `cluster up` cannot change its size "
            f"(membership changes are not supported): run it with --nodes {len(existing.nodes)},"
            " or use another --dir")
    return existing


def _check_before_starting(cluster: ProcessCluster) -> None:
    """Refuse, before anything is written or started, data dirs of another cluster and ports
    something else listens on (another cluster's leader must not be reported as ours)."""
    from raftly.kv.identity import IdentityError, NodeIdentity, check_identity

    for node in cluster.nodes.values():
        try:
            check_identity(node.data_dir, NodeIdentity.of(cluster.spec, node.name),
                           f"`cluster up --nodes {len(cluster.nodes)}`",
                           remedy="give `cluster up` another --dir, or remove that data dir to "
                                  "start a new cluster there")
        except IdentityError as exc:
            raise CliError(str(exc)) from None
    busy = cluster.busy_addresses()
    if busy:
        raise CliError(f"already in use: {', '.join(busy)} (another cluster? `raftly status "
                       f"--endpoints {','.join(cluster.urls)}` shows it); stop it or pick "
                       "another --base-port")


def _watch(cluster: ProcessCluster, restart_window: float) -> int:
    leader: tuple[str | None, int] | None = None
    restarted_at: dict[str, float] = {}
    while True:
        for name, code in cluster.exited().items():
            _restart_or_give_up(cluster, name, code, restarted_at, restart_window)
        running = cluster.running_names()
        if not running:
            raise CliError("every node has exited")
        seen: tuple[str | None, int] | None = None
        for name in running:
            status = cluster.status(name, timeout=0.3)
            # Only our own nodes count: a stranger answering on one of our ports is not ours.
            if (status is not None and status.get("cluster_id") == cluster.spec.cluster_id
                    and status["role"] == "leader"):
                seen = (status["id"], status["term"])
        if seen is not None and seen != leader:
            print(f"raftly: leader is {seen[0]} (term {seen[1]})", flush=True)
            leader = seen
        time.sleep(0.5)


def _restart_or_give_up(cluster: ProcessCluster, name: str, code: int,
                        restarted_at: dict[str, float], window: float) -> None:
    """Restart a node that died, unless it died again soon after its last restart: then it
    would only crash in a loop, so say how to start it by hand instead."""
    died = f"raftly: node {name} (pid {cluster.nodes[name].pid}) {describe_exit(code)}"
    now = time.monotonic()
    if name in restarted_at and now - restarted_at[name] < window:
        print(f"{died} again within {window:g} s of its restart; not restarting it. "
              f"To start it by hand: {cluster.manual_command(name)}", file=sys.stderr, flush=True)
        return
    cluster.start([name])
    restarted_at[name] = now
    print(f"{died}; restarted it as pid {cluster.nodes[name].pid}", file=sys.stderr, flush=True)

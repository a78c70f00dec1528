"""``raftly serve``: run one node of a key-value cluster.

Three ways to start: ``--cluster FILE --id NAME`` (a node of the cluster file's bootstrap
members), ``--join HOST:PORT[,...] --id NAME --raft HOST:PORT --api HOST:PORT`` (a new node the
cluster adds as a learner), or ``--data-dir DIR`` alone (whatever node DIR holds, with the
identity and membership stored there; a flag that contradicts them is refused).

The node stops cleanly on SIGINT or SIGTERM (exit 0), and on its own (exit 0, one log line)
once the cluster removed it. Role changes and connection events are logged at INFO, one line
each, on stderr.

Security: ``--tls-dir DIR`` (or ``--tls-cert/--tls-key/--tls-ca``) puts both ports on TLS,
``--client-cert-auth`` also demands a client certificate on the API, ``--auth-file FILE`` wants
bearer tokens with roles, ``--token`` (``$RAFTLY_TOKEN``) is what this node shows other members'
APIs, ``--max-connections`` caps the API's open connections and ``--max-watches`` its watch
streams.

``--event-loop auto|asyncio|uvloop`` picks the event loop (raftly.eventloop). The default is
asyncio's own: uvloop (``pip install 'raftly[fast]'``; ``auto`` takes it when installed) did not
make the HTTP benchmark faster, paired round by round with asyncio (15 rounds: puts/s x1.05 at
1 client, x0.99 at 16, x0.96 at 64, x0.83 at 256; docs/performance.md), and is never used
with TLS (``_event_loop`` says why). The loop in use is logged at start.

``--config FILE`` reads any of these options from a ``[serve]`` table (serve_config.py; the
command line wins); ``--log-format json`` logs one JSON object per line (raftly.logevents).
``GET /metrics`` serves Prometheus metrics (read role) unless ``--no-metrics``.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from raftly import eventloop
from raftly.cli.common import (
    LOG_LEVELS,
    CliError,
    LoggedError,
    UsageError,
    add_log_format_option,
    configure_logging,
    non_negative_int,
    positive_float,
    positive_int,
)
from raftly.eventloop import CHOICES
from raftly.kv.admission import DEFAULT_MAX_INFLIGHT_WRITES
from raftly.logevents import event

logger = logging.getLogger("raftly.cli.serve")


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from raftly.cli.serve_config import ServeParser

    # The one parser class that reads --config first: argparse offers no per-subcommand
    # parser class, so it is swapped in for this subcommand only.
    shared, commands._parser_class = commands._parser_class, ServeParser
    try:
        p = commands.add_parser(
            "serve", help="run one node of a replicated key-value cluster",
            description="Run node ID of the cluster described in the cluster file (TOML: one "
                        "[nodes.NAME] table per node with raft = \"host:port\" and "
                        "api = \"host:port\"). Stops cleanly on Ctrl-C or SIGTERM. Any "
                        "option may also come from a [serve] table of --config FILE "
                        "(docs/operations.md).")
    finally:
        commands._parser_class = shared
    p.add_argument("--config", metavar="FILE",
                   help="read options from the [serve] table of this TOML file (keys spelled "
                        "like the options, with dashes: data-dir = \"...\"); options given on "
                        "the command line win")
    p.add_argument("--cluster", metavar="FILE", help="the cluster file (TOML)")
    p.add_argument("--id", metavar="NAME", help="this node's name (in the file, or new)")
    p.add_argument("--data-dir", metavar="DIR",
                   help="where the log and state live (default with --cluster: NAME next to "
                        "the cluster file, as `raftly cluster up` lays them out)")
    p.add_argument("--join", metavar="HOST:PORT[,...]",
                   help="API addresses of members of a running cluster to join (any will do)")
    p.add_argument("--raft", metavar="HOST:PORT", help="with --join: this node's Raft address")
    p.add_argument("--api", metavar="HOST:PORT", help="with --join: this node's API address")
    p.add_argument("--learner", action="store_true",
                   help="with --join: stay a learner (never promoted to voter)")
    p.add_argument("--join-timeout", type=positive_float, default=30.0, metavar="SECONDS",
                   help="with --join: give up (exit 1) if the cluster has not added this node "
                        "within this long (default 30)")
    p.add_argument("--fsync", choices=("always", "never"), default="always",
                   help="fsync the log before acknowledging (default always; 'never' is for "
                        "throwaway clusters: a power loss can then lose acknowledged writes)")
    p.add_argument("--log-level", choices=LOG_LEVELS, default="INFO", type=str.upper)
    add_log_format_option(p)
    p.add_argument("--election-timeout", type=positive_float, default=1.0, metavar="SECONDS",
                   help="a follower campaigns after 1-2x this long without a leader "
                        "(default 1.0; every node of a cluster should use the same)")
    p.add_argument("--heartbeat", type=positive_float, default=0.1, metavar="SECONDS",
                   help="the leader's heartbeat interval (default 0.1)")
    p.add_argument("--snapshot-entries", type=positive_int, default=10_000, metavar="N",
                   help="snapshot the state once N entries were applied since the last "
                        "snapshot, then drop the log behind it (default 10000)")
    p.add_argument("--snapshot-retain", type=non_negative_int, default=None, metavar="N",
                   help="log entries kept behind a snapshot, so that a slightly slow follower "
                        "catches up from the log (default: as many as --snapshot-entries)")
    p.add_argument("--no-metrics", dest="metrics", action="store_false",
                   help="do not serve Prometheus metrics: GET /metrics answers 404 and nothing "
                        "is counted (see docs/metrics.md)")
    p.add_argument("--event-loop", choices=CHOICES, default="asyncio",
                   help="the event loop: asyncio's own (default), uvloop (pip install "
                        "'raftly[fast]'; not with TLS), or auto: uvloop when installed and no "
                        "TLS")
    p.add_argument("--segment-size", type=positive_int, default=64 << 20, metavar="BYTES",
                   help="size at which a log segment file is closed and a new one begun; "
                        "compaction deletes whole segments (default 67108864)")
    security = p.add_argument_group(
        "security", "TLS for both ports, and tokens for the API (see `raftly certs init`)")
    security.add_argument("--tls-dir", metavar="DIR",
                          help="serve TLS with DIR/<name>.crt, DIR/<name>.key and DIR/ca.crt "
                               "(as `raftly certs init` lays them out)")
    security.add_argument("--tls-cert", metavar="FILE", help="this node's certificate (with "
                          "--tls-key and --tls-ca; instead of --tls-dir)")
    security.add_argument("--tls-key", metavar="FILE", help="this node's private key")
    security.add_argument("--tls-ca", metavar="FILE", help="the cluster CA's certificate")
    security.add_argument("--client-cert-auth", action="store_true",
                          help="API clients must show a certificate of the cluster CA (needs TLS)")
    security.add_argument("--auth-file", metavar="FILE",
                          help="API tokens and their roles (TOML: [[tokens]] token = \"...\" "
                               "role = \"read\" | \"write\" | \"admin\"); without it the API "
                               "is open")
    security.add_argument("--token", default=os.environ.get("RAFTLY_TOKEN"),
                          help="this node's token for other members' APIs: joining a cluster "
                               "with an auth file needs an admin one; with TLS the node's "
                               "certificate does for its other calls, without TLS give a read "
                               "one (default $RAFTLY_TOKEN, better than this flag: a command "
                               "line is visible to others)")
    security.add_argument("--max-connections", type=positive_int, default=1024, metavar="N",
                          help="API connections open at once; more are closed at once "
                               "(default 1024)")
    security.add_argument("--max-watches", type=positive_int, default=1000, metavar="N",
                          help="watch streams open at once; more are answered 503 "
                               "(default 1000)")
    security.add_argument("--max-inflight-writes", type=positive_int,
                          default=DEFAULT_MAX_INFLIGHT_WRITES, metavar="N",
                          help="writes in flight on this node at once; more are answered 503 "
                               "with Retry-After, not queued (default "
                               f"{DEFAULT_MAX_INFLIGHT_WRITES})")
    p.set_defaults(func=run)


def make_config(election_timeout: float, heartbeat: float) -> object:
    """The Raft timing settings; ``UsageError`` when they are inconsistent."""
    from raftly.core.config import Config, ConfigError

    # Ticks of at most half a heartbeat, so that short heartbeats are not rounded badly.
    tick = min(0.02, heartbeat / 2)
    try:
        return Config(tick_interval=tick, heartbeat_interval=heartbeat,
                      election_timeout=election_timeout)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, args.id or Path(args.data_dir).name, args.log_format)
    try:
        return _run(args)
    except CliError as exc:
        if args.log_format != "json":
            raise
        # The one line saying why the node will not start (or stopped) must be JSON too, or a
        # collector parsing line by line loses exactly that line.
        logger.error("%s", exc, extra=event("node_failed", reason=str(exc)))
        raise LoggedError(str(exc), exc.code) from None


def _run(args: argparse.Namespace) -> int:
    from raftly.core.config import Config
    from raftly.kv.cluster_file import ClusterFileError
    from raftly.kv.identity import IdentityError
    from raftly.kv.join import JoinError
    from raftly.kv.service import serve
    from raftly.security.tls import TlsError
    from raftly.server import ServerStopped
    from raftly.server.snapshots import SnapshotSettings
    from raftly.storage import StorageError

    config = make_config(args.election_timeout, args.heartbeat)
    assert isinstance(config, Config)
    join, raft, api = _start_mode(args)
    tls = _tls_files(args)
    loop = _event_loop(args.event_loop, tls is not None)
    auth = _authorizer(args.auth_file)
    data_dir = Path(args.data_dir) if args.data_dir else _default_data_dir(args.cluster, args.id)
    try:
        snapshot = SnapshotSettings(args.snapshot_entries, args.snapshot_retain)
        eventloop.run(serve(args.cluster, args.id, data_dir, join=join, raft=raft, api=api,
                          fsync=args.fsync, config=config, snapshot=snapshot,
                          segment_size=args.segment_size, tls=tls,
                          client_cert_auth=args.client_cert_auth, auth=auth,
                          token=args.token or None, max_connections=args.max_connections,
                          max_watches=args.max_watches, metrics=args.metrics,
                          max_inflight_writes=args.max_inflight_writes),
                      loop=loop)
    except (ClusterFileError, IdentityError, StorageError, ServerStopped, JoinError,
            TlsError) as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        # Typically a port already in use: name it rather than print a traceback.
        raise CliError(f"node {args.id}: {exc.strerror or exc}") from None
    return 0


def _event_loop(choice: str, tls: bool) -> str:
    """The event loop to run on (``choice`` checked: UsageError if it cannot be had).

    Never uvloop with TLS: uvloop starts reading a connection right after ``connection_made``
    even when the protocol paused it there, so the client's first TLS bytes can reach the
    plaintext reader before ``start_tls`` takes the socket over, and the handshake then hangs
    until its timeout (on the API's port and the Raft port alike). ``auto`` then means asyncio.
    """
    if tls and choice == "uvloop":
        raise UsageError("--event-loop uvloop cannot serve TLS (uvloop reads a connection "
                         "before its TLS handshake can take it over): use asyncio or auto")
    if tls:
        return "asyncio"
    try:
        eventloop.loop_factory(choice)  # refused before anything starts
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return choice


def _tls_files(args: argparse.Namespace) -> Any:
    """The node's TLS files (a ``TlsFiles``), or None without TLS; UsageError for a bad mix."""
    from raftly.security.tls import TlsFiles

    pem = (args.tls_cert, args.tls_key, args.tls_ca)
    if args.tls_dir is not None:
        if any(f is not None for f in pem):
            raise UsageError("give --tls-dir, or --tls-cert --tls-key --tls-ca, not both")
        if args.id is None:
            raise UsageError("--tls-dir needs --id NAME (it picks DIR/NAME.crt and "
                             "DIR/NAME.key); or give --tls-cert --tls-key --tls-ca")
        return TlsFiles.from_dir(args.tls_dir, args.id)
    if any(f is not None for f in pem):
        if not all(f is not None for f in pem):
            raise UsageError("--tls-cert, --tls-key and --tls-ca go together")
        return TlsFiles(Path(args.tls_cert), Path(args.tls_key), Path(args.tls_ca))
    if args.client_cert_auth:
        raise UsageError("--client-cert-auth needs TLS (--tls-dir, or --tls-cert --tls-key "
                         "--tls-ca)")
    return None


def _authorizer(path: str | None) -> Any:
    """The ``Authorizer`` of ``--auth-file``, or None; CliError naming what is wrong in it."""
    from raftly.security.auth import AuthFileError, Authorizer

    if path is None:
        return None
    try:
        return Authorizer.from_file(path)
    except AuthFileError as exc:
        raise CliError(f"--auth-file: {exc}") from None


def _start_mode(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """The join spec (or None) and the --raft/--api addresses; UsageError for a bad mix."""
    from raftly.kv.cluster_file import ClusterFileError, parse_address
    from raftly.kv.service import JoinSpec

    try:
        raft = parse_address(args.raft, "--raft") if args.raft else None
        api = parse_address(args.api, "--api") if args.api else None
    except ClusterFileError as exc:
        raise UsageError(str(exc)) from None
    if args.cluster is not None:
        if args.join or raft or api or args.learner:
            raise UsageError("--cluster starts a bootstrap member: --join, --raft, --api and "
                             "--learner are for a node joining a running cluster")
        if args.id is None:
            raise UsageError("--cluster needs --id NAME")
        return None, None, None
    if args.join is not None:
        if not (args.id and raft and api and args.data_dir):
            raise UsageError("--join needs --id NAME --raft HOST:PORT --api HOST:PORT "
                             "--data-dir DIR")
        endpoints = tuple(e.strip() for e in args.join.split(",") if e.strip())
        if not endpoints:
            raise UsageError("--join needs at least one HOST:PORT")
        return (JoinSpec(endpoints, args.id, raft, api, args.learner, args.join_timeout),
                raft, api)
    if args.data_dir is None:
        raise UsageError("give --cluster FILE --id NAME, or --join ..., or --data-dir DIR of a "
                         "node that ran before")
    if args.learner:
        raise UsageError("--learner only applies when joining (--join)")
    return None, raft, api


def _default_data_dir(cluster_file: str, name: str) -> Path:
    from raftly.kv.identity import default_data_dir, legacy_data_dir

    data_dir = default_data_dir(cluster_file, name)
    legacy = legacy_data_dir(name)
    # The old default still holding this node's state while the new one is empty: starting an
    # empty node under an existing id would be the trap the shared layout is meant to remove.
    if not data_dir.exists() and legacy.is_dir() and legacy.resolve() != data_dir.resolve():
        raise CliError(f"node {name}: its data is in {legacy} (the old default data dir), not "
                       f"in {data_dir}: pass --data-dir {legacy}, or move it to {data_dir}")
    return data_dir

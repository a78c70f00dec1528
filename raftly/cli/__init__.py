"""The ``raftly`` command line.

Each subcommand lives in its own module and imports what it needs only when it runs, so that
``raftly kv get`` does not pay for the server's imports:

- ``serve`` (serve.py): one node of a key-value cluster;
- ``cluster up`` (cluster.py): a local cluster of real processes in the foreground;
- ``kv put|get|del|cas|list``, ``status`` (kv.py): the service from a shell;
- ``kv watch|txn``, ``lease``, ``lock``, ``election`` (coord.py): coordination from a shell;
- ``demo`` (demo.py, sim_demo.py): a failover with real processes, or on the simulator;
- ``certs init|add`` (certs.py): a cluster's TLS certificates;
- ``snapshot save|inspect|restore`` (snapshot.py): backups, and new clusters seeded from them;
- ``fuzz``: the simulator's randomized fault schedules; ``check``: raftly.check's fault-injecting
  runs of a real cluster; ``bench``: raftly.bench, when installed.

The client options (``--endpoints``, ``--timeout``, ``--cacert``, ``--cert``, ``--key``,
``--token``) may come before or after the subcommand (common.py). Exit status: 0 success,
1 error (one line on stderr), 2 usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from raftly import __version__
from raftly.cli import certs, cluster, coord, demo, kv, member, serve, snapshot
from raftly.cli.common import (
    CLIENT_OPTIONS,
    EXIT_ERROR,
    EXIT_USAGE,
    CliError,
    LoggedError,
    UsageError,
    add_client_options,
)


def _fuzz(argv: list[str]) -> int:
    from raftly.testing.fuzz import main as fuzz_main

    return fuzz_main(argv)


def _check(argv: list[str]) -> int:
    from raftly.check.runner import main as check_main

    return check_main(argv)


def _bench(argv: list[str]) -> int:
    from raftly.bench import main as bench_main

    return bench_main(argv)


# Subcommands with their own argument parsers: everything after the name goes to them.
PASS_THROUGH: dict[str, Callable[[list[str]], int]] = {
    "fuzz": _fuzz, "check": _check, "bench": _bench}

# The commands that talk to a cluster as a client, and so take the client options
# (--endpoints, --timeout, --cacert, --cert, --key, --token).
CLIENT_COMMANDS = ("kv", "status", "member", "leader", "lease", "lock", "election",
                   "snapshot")

EPILOG = """\
examples:
  raftly demo                           a failover with real processes, in 5 seconds
  raftly cluster up --nodes 3           a local cluster in the foreground (Ctrl-C stops it)
  raftly kv put greeting hello          then, in another terminal, use it
  raftly kv get greeting
  raftly status                         id, role, term, commit, applied, leader per node
  raftly status --watch                 the same, redrawn every second (Ctrl-C ends it)
  raftly --endpoints 10.0.0.1:8001,8002 kv list
  raftly kv watch config/               every change under config/, as it happens
  raftly lock backup -- ./backup.sh     run a command while holding a distributed lock
  raftly snapshot save backup.rbk       a consistent backup, from the leader

Run `raftly COMMAND --help` for a command's options and examples. The client options
--endpoints, --timeout, --cacert, --cert, --key and --token (of kv, status, member, leader,
lease, lock, election and snapshot) go before or after the command.
Exit status: 0 success, 1 error, 2 usage.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raftly",
        description="Raft for Python: run and use a replicated key-value cluster. Start with "
                    "`raftly demo`, then `raftly cluster up`.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"raftly {__version__}")
    add_client_options(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve.add_parser(commands)
    cluster.add_parser(commands)
    kv.add_parsers(commands)
    coord.add_parsers(commands, kv.run_client_command)
    member.add_parsers(commands)
    demo.add_parser(commands)
    certs.add_parser(commands)
    snapshot.add_parser(commands)
    commands.add_parser("fuzz", help="randomized fault schedules on the simulator "
                                     "(`raftly fuzz --help`)", add_help=False)
    commands.add_parser("check", help="a real cluster under faults, its history checked for "
                                      "linearizability (`raftly check --help`)", add_help=False)
    commands.add_parser("bench", help="throughput and latency of a local 3-node cluster "
                                      "(`raftly bench --help`)", add_help=False)
    return parser


def _own_options(parser: argparse.ArgumentParser, command: str) -> set[str]:
    """The destinations of the options subcommand ``command`` declares itself."""
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return {a.dest for a in action.choices[command]._actions}
    return set()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in PASS_THROUGH:
            return PASS_THROUGH[argv[0]](argv[1:])
        parser = build_parser()
        argv, command = coord.split_command(argv)
        args = parser.parse_args(argv)
        if command is not None:
            args.command_argv = command
        if args.command not in CLIENT_COMMANDS:
            own = _own_options(parser, args.command)  # `serve --token` is serve's own
            for option, flag in CLIENT_OPTIONS.items():
                if option in args and option not in own:
                    names = [f"`raftly {name}`" for name in CLIENT_COMMANDS]
                    raise UsageError(f"{flag} is an option of {', '.join(names[:-1])} and "
                                     f"{names[-1]}, not of `raftly {args.command}`")
        code: int = args.func(args)
        return code
    except LoggedError as exc:
        return exc.code
    except CliError as exc:
        print(f"raftly: {exc}", file=sys.stderr)
        if exc.code == EXIT_USAGE:
            print("(see `raftly --help`)", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("raftly: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `raftly kv list | head`: the reader left; that is not an error of ours.
        sys.stderr.close()
        return EXIT_ERROR


__all__ = ["main"]

"""The coordination commands: ``raftly kv watch PREFIX``, ``raftly kv txn FILE``, ``raftly lease
grant|keepalive|revoke|list``, ``raftly lock NAME -- COMMAND...`` and ``raftly election
campaign|observe``.

They run through ``kv.run_client_command`` (client options, one-line errors). ``lock`` and
``election campaign`` run a command while holding the lock or the leadership and pass its
exit status through (127 when it cannot be started), as etcdctl's ``lock`` does. The command
gets SIGTERM and SIGINT sent to this process, and SIGTERM (with one line on stderr) when the
lock or leadership is lost: a TTL has passed without a successful keepalive.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from raftly.cli.common import (
    CliError,
    add_client_options,
    add_cluster_id_argument,
    positive_int,
)
from raftly.kv.protocol import encode_list_item

WATCH_EPILOG = """\
output: one line per change, REVISION<TAB>put|delete<TAB>KEY<TAB>VALUE, key and value escaped
as by `raftly kv list` (a delete has an empty value); with --json the API's JSON line.
It runs until interrupted, resuming on another node when one goes away.

examples:
  raftly kv watch config/                      every change under config/ from now on
  raftly kv watch config/ --from-revision 42   from revision 42 on (410-compacted: exit 1)
"""

TXN_EPILOG = """\
FILE (or - for stdin) is the body of POST /v1/txn, e.g.
  {"compare": [{"key": "counter", "target": "value", "op": "=", "value": "7"}],
   "success": [{"put": {"key": "counter", "value": "8"}}],
   "failure": [{"get": {"key": "counter"}}]}
prints {"succeeded", "revision", "results"}; exit 0 when the success branch ran, 1 otherwise.
"""

LOCK_EPILOG = """\
examples:
  raftly lock backup -- ./backup.sh           one backup at a time across the machines
  raftly lock --ttl 30 deploy -- make deploy

The lock is held through a lease of --ttl seconds kept alive while COMMAND runs; if this
process dies (even kill -9) the lock is released once the TTL has passed. COMMAND gets
RAFTLY_LOCK_KEY (the lock's key) and RAFTLY_LOCK_REV (its create revision: fence writes on it
with a txn) in its environment. SIGTERM and SIGINT sent to raftly are passed on to COMMAND.
If no keepalive succeeds for a whole TTL (cut off from the cluster), the lock may be someone
else's: raftly says so on stderr and sends COMMAND SIGTERM. Exit status: the command's (127
if it could not be started); 1 if the lock could not be had.
"""

ELECTION_EPILOG = """\
examples:
  raftly election campaign workers "$HOSTNAME" -- ./run-scheduler   lead, then run
  raftly election observe workers                                  print each new leader
"""


RUNS_COMMAND = ("lock", "election")
"""The commands that take ``-- COMMAND...`` (split off before parsing: argparse cannot)."""


def split_command(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """``argv`` without the ``-- COMMAND...`` of a command in RUNS_COMMAND, and that COMMAND
    (None when there is none)."""
    if "--" not in argv:
        return argv, None
    cut = argv.index("--")
    # The command is the first word that is neither an option nor an option's value (the
    # options before a command all take one: --endpoints, --timeout, --token, ...).
    words = [word for i, word in enumerate(argv[:cut]) if not word.startswith("-")
             and not (i and argv[i - 1].startswith("--") and "=" not in argv[i - 1])]
    if not words or words[0] not in RUNS_COMMAND:
        return argv, None
    return argv[:cut], argv[cut + 1:]


def add_kv_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                   run: Any) -> list[argparse.ArgumentParser]:
    """``kv watch`` and ``kv txn``, run through ``run`` (``kv.run_client_command``)."""
    watch = sub.add_parser("watch", help="print every change under PREFIX as it happens",
                           epilog=WATCH_EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    watch.add_argument("prefix", nargs="?", default="")
    watch.add_argument("--from-revision", type=positive_int, default=None, metavar="N",
                       help="start at revision N (default: from now on)")
    watch.add_argument("--json", action="store_true", help="print each change as JSON")
    watch.set_defaults(func=run, kv_func=_do_watch)

    txn = sub.add_parser("txn", help="run a transaction from a JSON file (compare, success, "
                                     "failure)", epilog=TXN_EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    txn.add_argument("file", help="the JSON body, or - for stdin")
    txn.set_defaults(func=run, kv_func=_do_txn)
    return [watch, txn]


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser], run: Any) -> None:
    lease = commands.add_parser("lease", help="grant, keep alive, revoke and list leases")
    sub = lease.add_subparsers(dest="lease_command", required=True, metavar="COMMAND")
    grant = sub.add_parser("grant", help="grant a lease of TTL seconds; print its id")
    grant.add_argument("ttl", type=positive_int)
    grant.set_defaults(kv_func=_do_grant)
    keep = sub.add_parser("keepalive", help="keep lease ID alive until interrupted "
                                            "(every TTL/3; --once: one renewal)")
    keep.add_argument("id", type=positive_int)
    keep.add_argument("--once", action="store_true", help="renew once, print the TTL, exit")
    keep.set_defaults(kv_func=_do_keepalive)
    revoke = sub.add_parser("revoke", help="revoke lease ID now (its keys are deleted); "
                                           "print how many keys went")
    revoke.add_argument("id", type=positive_int)
    revoke.set_defaults(kv_func=_do_revoke)
    lst = sub.add_parser("list", help="print ID<TAB>TTL<TAB>REMAINING<TAB>KEYS per lease")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(kv_func=_do_leases)

    lock = commands.add_parser("lock", help="run COMMAND while holding the lock NAME",
                               usage="raftly lock [--ttl S] [client options] NAME -- COMMAND...",
                               epilog=LOCK_EPILOG,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    lock.add_argument("name")
    lock.add_argument("--ttl", type=positive_int, default=10,
                      help="the lease TTL in seconds (default 10)")
    lock.set_defaults(kv_func=_do_lock, command_argv=[])

    election = commands.add_parser("election", help="elect a leader among workers",
                                   epilog=ELECTION_EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    esub = election.add_subparsers(dest="election_command", required=True, metavar="COMMAND")
    campaign = esub.add_parser("campaign", help="wait to lead NAME with VALUE, then run "
                                                "COMMAND as the leader",
                               usage="raftly election campaign [--ttl S] [client options] "
                                     "NAME VALUE -- COMMAND...")
    campaign.add_argument("name")
    campaign.add_argument("value")
    campaign.add_argument("--ttl", type=positive_int, default=10)
    campaign.set_defaults(kv_func=_do_campaign, command_argv=[])
    observe = esub.add_parser("observe", help="print the leader's value of NAME each time "
                                              "it changes (an empty line: no leader)")
    observe.add_argument("name")
    observe.set_defaults(kv_func=_do_observe)

    for parser in (lease, grant, keep, revoke, lst, lock, election, campaign, observe):
        add_client_options(parser)
    for parser in (grant, keep, revoke, lst, lock, campaign, observe):
        add_cluster_id_argument(parser)
        parser.set_defaults(func=run)


# -- kv watch, kv txn ----------------------------------------------------------------------------


def _kv_json(entry: Any) -> dict[str, object]:
    out: dict[str, object] = dict(encode_list_item(entry.key, entry.value))
    out.update(create_revision=entry.create_revision, mod_revision=entry.mod_revision,
               version=entry.version, lease=entry.lease)
    return out


def _do_watch(client: Any, args: argparse.Namespace) -> int:
    from raftly.cli.kv import escape

    for event in client.watch(args.prefix, from_revision=args.from_revision):
        if args.json:
            line = json.dumps({"revision": event.revision, "type": event.type,
                               **_kv_json(event)})
        else:
            line = f"{event.revision}\t{event.type}\t{escape(event.key)}\t{escape(event.value)}"
        print(line, flush=True)  # a pipe reader sees each change as it happens
    return 0


def _do_txn(client: Any, args: argparse.Namespace) -> int:
    try:
        if args.file == "-":
            body = json.load(sys.stdin)
        else:
            with open(args.file, encoding="utf-8") as f:
                body = json.load(f)
    except OSError as exc:
        raise CliError(f"{args.file}: {exc.strerror}") from None
    except ValueError as exc:
        raise CliError(f"{args.file}: not JSON ({exc})", 2) from None
    if not isinstance(body, dict) or set(body) - {"compare", "success", "failure"} \
            or not all(isinstance(body.get(part, []), list)
                       for part in ("compare", "success", "failure")):
        raise CliError(f"{args.file}: a txn is an object with the lists compare, success and "
                       "failure", 2)
    result = client.txn(body.get("compare", []), body.get("success", []),
                        body.get("failure", []))
    results = [{**r, "kv": _kv_json(r["kv"]) if r.get("kv") else None}
               if r.get("type") == "get" else r for r in result.results]
    print(json.dumps({"succeeded": result.succeeded, "revision": result.revision,
                      "results": results}))
    return 0 if result.succeeded else 1


# -- lease ---------------------------------------------------------------------------------------


def _do_grant(client: Any, args: argparse.Namespace) -> int:
    print(client.lease_grant(args.ttl).id)
    return 0


def _do_keepalive(client: Any, args: argparse.Namespace) -> int:
    while True:
        ttl = client.lease_keepalive(args.id)
        print(f"lease {args.id}: ttl {ttl}", flush=True)
        if args.once:
            return 0
        time.sleep(max(ttl / 3, 0.5))  # the renewal period


def _do_revoke(client: Any, args: argparse.Namespace) -> int:
    print(client.lease_revoke(args.id))
    return 0


def _do_leases(client: Any, args: argparse.Namespace) -> int:
    leases = client.leases()
    if args.json:
        print(json.dumps([{"id": info.id, "ttl": info.ttl, "remaining": info.remaining,
                           "keys": info.keys} for info in leases]))
        return 0
    for info in leases:
        remaining = "-" if info.remaining is None else f"{info.remaining:g}"
        print(f"{info.id}\t{info.ttl}\t{remaining}\t{','.join(info.keys)}")
    return 0


# -- lock, election ------------------------------------------------------------------------------


def _command(args: argparse.Namespace) -> list[str]:
    argv: list[str] = args.command_argv
    if not argv:
        raise CliError("no COMMAND to run: `raftly lock NAME -- COMMAND...`", 2)
    return argv


LOST_POLL = 0.1
"""Seconds between two looks at whether the lock is lost while the command runs."""


@contextmanager
def _forwarding(child: subprocess.Popen[bytes]) -> Iterator[None]:
    """Pass SIGTERM and SIGINT on to ``child`` while it runs (only the main thread can set
    handlers; elsewhere, as when the CLI runs in a test's thread, nothing is forwarded)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # As etcdctl: a Ctrl-C at a terminal reaches the command directly too (same process
    # group), so it may see that SIGINT twice; a `kill -INT` of raftly alone reaches it once.
    sigs = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.signal(sig, lambda sig, _frame: child.send_signal(sig))
                for sig in sigs}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_holding(argv: list[str], what: str, lost: Callable[[], bool],
                 env: dict[str, str] | None = None) -> int:
    """Run ``argv`` to its end and return its exit status; SIGTERM it once ``lost()``."""
    try:
        child = subprocess.Popen(argv, env=env)
    except OSError as exc:
        print(f"raftly: {argv[0]}: {exc.strerror}", file=sys.stderr)
        return 127
    told = False
    with _forwarding(child):
        while True:
            try:
                return child.wait(LOST_POLL)
            except subprocess.TimeoutExpired:
                if not told and lost():
                    print(f"raftly: {what} lost (no keepalive succeeded for a whole TTL): "
                          f"sending SIGTERM to {argv[0]}", file=sys.stderr, flush=True)
                    child.terminate()
                    told = True


def _do_lock(client: Any, args: argparse.Namespace) -> int:
    from raftly.kv.recipes import Lock

    argv = _command(args)
    with Lock(client, args.name, ttl=args.ttl) as lock:
        env = {**os.environ, "RAFTLY_LOCK_KEY": str(lock.key),
               "RAFTLY_LOCK_REV": str(lock.revision)}
        return _run_holding(argv, f"lock {args.name}", lambda: lock.lost, env)


def _do_campaign(client: Any, args: argparse.Namespace) -> int:
    from raftly.cli.kv import _arg_bytes
    from raftly.kv.recipes import Election

    argv = _command(args)
    election = Election(client, args.name, ttl=args.ttl)
    election.campaign(_arg_bytes(args.value))
    try:
        return _run_holding(argv, f"leadership of {args.name}", lambda: election.lost)
    finally:
        election.resign()


def _do_observe(client: Any, args: argparse.Namespace) -> int:
    from raftly.cli.kv import escape
    from raftly.kv.recipes import Election

    for value in Election(client, args.name).observe():
        print("" if value is None else escape(value), flush=True)
    return 0

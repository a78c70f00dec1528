"""``raftly demo``: Raft at work in a local 3-node cluster of real processes.

It starts three ``raftly serve`` processes (fsync on, data in a temporary directory), writes keys
through the client, kills the leader with SIGKILL, times the election of a new leader, reads every
key back, restarts the killed node and shows it caught up, then stops everything. It finishes by
itself in seconds and removes its processes and directory even on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from types import FrameType
from typing import TYPE_CHECKING

from raftly.cli.common import CliError

if TYPE_CHECKING:  # imported where it runs: other commands must not pay for it
    from raftly.localcluster import ProcessCluster

# Fast but sane: a follower campaigns 0.5-1 s after its last heartbeat, so a failover takes about
# a second, while a busy laptop's scheduling hiccups (tens of ms) are far from triggering one.
ELECTION_TIMEOUT = 0.5
HEARTBEAT = 0.1

KEYS = [("colour", "blue"), ("size", "large"), ("owner", "ada"), ("planet", "mars"),
        ("answer", "42")]


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "demo", help="a 3-node cluster of real processes: write, kill the leader, fail over",
        description="Start a local 3-node cluster of real `raftly serve` processes, write keys, "
                    "kill -9 the leader, show a new leader elected and every key still readable, "
                    "restart the killed node and show it caught up, then stop. --simulated runs "
                    "the same story on the deterministic simulator instead.")
    p.add_argument("--simulated", action="store_true",
                   help="use the simulated cluster (virtual time, safety checked every step)")
    p.add_argument("--nodes", type=int, default=None,
                   help="cluster size (default 3; 5 with --simulated)")
    p.add_argument("--seed", type=int, default=1, help="the simulator's seed (--simulated)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.simulated:
        from raftly.cli.sim_demo import run_simulated

        return run_simulated(args.nodes or 5, args.seed)
    nodes = args.nodes or 3
    if not 3 <= nodes <= 9:
        raise CliError("the real-process demo needs 3 to 9 nodes (it kills one)", 2)
    return run_real(nodes)


class _Terminated(Exception):
    """SIGTERM arrived: unwind through the cleanup like Ctrl-C does."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated()


def run_real(nodes: int = 3) -> int:
    from raftly.localcluster import ProcessCluster, plan_loopback

    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="raftly-demo-") as tmp:
            cluster = ProcessCluster(tmp, plan_loopback(nodes), fsync="always",
                                     election_timeout=ELECTION_TIMEOUT, heartbeat=HEARTBEAT)
            try:
                _story(cluster, started)
            except (_Terminated, KeyboardInterrupt):
                raise
            except Exception as exc:
                for node in cluster.nodes.values():
                    tail = node.log_tail(8)
                    if tail:
                        print(f"--- last lines of {node.name}'s log ---\n{tail}", file=sys.stderr)
                raise CliError(f"demo failed: {exc}") from None
            finally:
                cluster.stop()
    except _Terminated:
        print("raftly demo: terminated; processes stopped, temporary files removed",
              file=sys.stderr)
        return 143
    finally:
        signal.signal(signal.SIGTERM, previous)
    _epilogue(started)
    return 0


def _story(cluster: ProcessCluster, started: float) -> None:
    from raftly.cli.status_table import format_table
    from raftly.kv.client import Client

    def say(text: str) -> None:
        print(f"[{time.monotonic() - started:5.2f}s] {text}", flush=True)

    def table(names: list[str] | None = None) -> None:
        for line in format_table(cluster.statuses(names)):
            print("         " + line)
        sys.stdout.flush()

    n = len(cluster.nodes)
    say(f"starting {n} `raftly serve` processes on 127.0.0.1 (fsync on; election timeout "
        f"{ELECTION_TIMEOUT:g}-{2 * ELECTION_TIMEOUT:g} s, heartbeat {HEARTBEAT:g} s)")
    cluster.start()
    for node in cluster.nodes.values():
        print(f"         {node.name}  pid {node.pid:<7d} raft {node.spec.raft}  api "
              f"{node.spec.api.url}")
    leader, st = cluster.wait_for_leader(timeout=20.0)
    say(f"{leader} won the election for term {st['term']}; the others follow it")

    with Client(cluster.endpoints, timeout=10.0) as kv:
        for key, value in KEYS:
            index = kv.put(key, value.encode())
            say(f"put {key}={value}: committed at index {index} (on disk on a majority before "
                "the reply)")
        table()

        victim = leader
        pid = cluster.nodes[victim].pid
        say(f"kill -9 {victim} (the leader, pid {pid}): no goodbye, nothing flushed")
        killed_at = time.monotonic()
        cluster.kill(victim, signal.SIGKILL)
        survivors = [name for name in cluster.nodes if name != victim]
        leader, st = cluster.wait_for_leader(timeout=20.0, among=survivors)
        took = time.monotonic() - killed_at
        say(f"{leader} won the election for term {st['term']}, {took:.2f} s after the leader "
            "died")
        table(survivors)

        for key, value in KEYS:
            got = kv.get(key)
            if got != value.encode():
                raise RuntimeError(f"read {key} -> {got!r}, expected {value!r}")
        say(f"read back all {len(KEYS)} keys through the survivors: "
            + ", ".join(f"{k}={v}" for k, v in KEYS) + "  (all there)")
        missed = f"written-while-{victim}-was-down"
        index = kv.put(missed, b"yes")
        say(f"put {missed}=yes: committed at index {index} by {n - 1} of {n} nodes, still a "
            "majority")

        say(f"restarting {victim} from its data directory")
        restarted_at = time.monotonic()
        cluster.start([victim])
        leader, st = cluster.wait_for_leader(timeout=20.0, among=list(cluster.nodes))
        caught = cluster.wait_applied(victim, st["commit_index"], timeout=20.0)
        say(f"{victim} is back as a follower of {caught['leader']} and applied up to index "
            f"{caught['applied_index']} within {time.monotonic() - restarted_at:.2f} s")
    with Client([cluster.nodes[victim].api], timeout=10.0) as local:
        got = local.get(missed, stale=True)
    if got != b"yes":
        raise RuntimeError(f"{victim} did not catch up: its copy of {missed} is {got!r}")
    say(f"{victim}'s own copy has {missed}=yes: it caught up on what it missed")
    table()

    say("stopping every node (SIGTERM)")
    codes = cluster.stop()
    say(f"all stopped (exit codes {', '.join(f'{k}={v}' for k, v in codes.items())})")


def _epilogue(started: float) -> None:
    print(f"[{time.monotonic() - started:5.2f}s] temporary directory removed")
    print("\nEvery acknowledged write survived the loss of the leader. Next: "
          "`raftly cluster up` for a cluster to play with, `raftly demo --simulated` for the "
          "simulator.")

"""The ``raftly`` command line.

``raftly demo`` shows Raft at work on a simulated cluster: an election, replication, a failover
and a crash recovery, with every safety property checked after every step. ``raftly fuzz`` runs
the randomized fault schedules of the simulator.
"""

from __future__ import annotations

import argparse
import sys

from raftly.testing.fuzz import main as fuzz_main
from raftly.testing.sim import SimCluster


def _demo(nodes: int, seed: int) -> int:
    c = SimCluster(n=nodes, seed=seed)

    def say(text: str) -> None:
        print(f"[t={c.now:7.3f}s] {text}")

    def roles() -> str:
        return "  ".join(
            f"n{i}:{c.node(i).role.value}@{c.term(i)}" if c.alive(i) else f"n{i}:crashed"
            for i in range(nodes)
        )

    say(f"{nodes} nodes start as followers; election timeouts 1-2 s (virtual time)")
    leader = c.check_one_leader(timeout=10.0)
    say(f"node {leader} won the election for term {c.term(leader)}   {roles()}")

    for key, value in (("colour", "blue"), ("size", "large"), ("owner", "ada")):
        index = c.one(f"set {key}={value}".encode(), nodes, retry=True)
        say(f"'set {key}={value}' committed at index {index} and applied on all {nodes} nodes")

    say(f"cutting node {leader} (the leader) off the network")
    c.disconnect(leader)
    new_leader = c.check_one_leader(timeout=10.0)
    say(f"node {new_leader} took over in term {c.term(new_leader)}   {roles()}")
    index = c.one(b"set colour=green", nodes - 1, retry=True)
    say(f"'set colour=green' committed at index {index} by the {nodes - 1} connected nodes")
    c.run(3.0)
    say(f"meanwhile node {leader} noticed it lost its majority: {c.node(leader).role.value}")

    say(f"reconnecting node {leader}")
    c.connect(leader)
    c.run(2.0)
    say(f"node {leader} follows node {c.node(leader).leader} and caught up: "
        f"{len(c.applied(leader))} commands applied   {roles()}")

    victim = (new_leader + 1) % nodes
    say(f"crashing node {victim} and restarting it from its durable log")
    c.crash(victim)
    c.one(b"set size=small", nodes - 1, retry=True)
    c.restart(victim)
    c.run(2.0)
    say(f"node {victim} recovered and re-applied {len(c.applied(victim))} commands")

    histories = {tuple(c.applied(i)) for i in range(nodes)}
    assert len(histories) == 1, "nodes disagree"
    say("every node applied the same history:")
    for index, command in c.applied(0):
        print(f"    {index:3d}  {command.decode()}")
    say(f"{c.steps} simulated steps, {c.message_count()} messages; safety properties "
        "(election safety, log matching, leader completeness, state machine safety) "
        "checked after every step")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="raftly", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="a simulated cluster: election, replication, failover")
    demo.add_argument("--nodes", type=int, default=5)
    demo.add_argument("--seed", type=int, default=1)
    commands.add_parser("fuzz", help="randomized fault schedules on the simulator",
                        add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command == "fuzz":
        return fuzz_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return _demo(args.nodes, args.seed)


if __name__ == "__main__":
    sys.exit(main())

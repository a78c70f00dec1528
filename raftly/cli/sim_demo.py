"""``raftly demo --simulated``: Raft at work on a simulated cluster, on a virtual clock.

An election, replication, a failover and a crash recovery, with every safety property checked
after every step. (``raftly demo`` without ``--simulated`` does the same with real processes.)
"""

from __future__ import annotations

from raftly.testing.sim import SimCluster


def run_simulated(nodes: int, seed: int) -> int:
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

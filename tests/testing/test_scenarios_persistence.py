"""Scenario tests of persistence on ``SimCluster`` (after MIT 6.5840's Raft lab, part 3C).

``crash(i)`` keeps only what node i made durable; ``restart(i)`` boots a new instance from it.
Committed entries must survive crashes of any node, of all nodes, of the leader and of followers,
and each restarted node must re-apply exactly the committed prefix. Virtual time only.
"""

from __future__ import annotations

import pytest
from sim_helpers import ELECTION, SEEDS, commands_applied

from raftly.testing import SimCluster


def assert_all_applied(c: SimCluster, expected: list[bytes]) -> None:
    last = c.one(b"sync", c.n, retry=True)
    c.wait(last, c.n, -1)
    for i in range(c.n):
        assert commands_applied(c, i) == [*expected, b"sync"], f"node {i}"


@pytest.mark.parametrize("seed", SEEDS)
def test_committed_entries_survive_crash_and_restart_of_every_node_at_once(seed: int) -> None:
    c = SimCluster(n=3, seed=seed)
    c.one(b"11", 3, retry=True)
    c.one(b"12", 3, retry=True)
    for i in range(3):
        c.crash(i)
    c.run(ELECTION)
    for i in range(3):
        c.restart(i)
    # Each new instance re-applies the committed prefix as soon as it knows it is committed.
    c.one(b"13", 3, retry=True)
    for i in range(3):
        assert commands_applied(c, i) == [b"11", b"12", b"13"], f"node {i}"


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("who", ["leader", "follower"])
def test_committed_entries_survive_crash_and_restart_of_one_node(seed: int, who: str) -> None:
    c = SimCluster(n=3, seed=seed)
    c.one(b"a", 3, retry=True)
    leader = c.check_one_leader(timeout=5.0)
    victim = leader if who == "leader" else (leader + 1) % 3
    c.crash(victim)
    c.one(b"b", 2, retry=True)
    c.restart(victim)
    c.one(b"c", 3, retry=True)
    assert_all_applied(c, [b"a", b"b", b"c"])


@pytest.mark.parametrize("seed", SEEDS)
def test_persist1_restarts_of_all_nodes_the_leader_and_a_follower(seed: int) -> None:
    """MIT's TestPersist13C."""
    c = SimCluster(n=3, seed=seed)
    c.one(b"11", 3, retry=True)

    for i in range(3):
        c.restart(i)
    c.one(b"12", 3, retry=True)

    leader1 = c.check_one_leader(timeout=10.0)
    c.restart(leader1)
    c.one(b"13", 3, retry=True)

    leader2 = c.check_one_leader(timeout=10.0)
    c.disconnect(leader2)
    c.one(b"14", 2, retry=True)
    c.restart(leader2)  # stays disconnected
    assert commands_applied(c, leader2) == []
    c.connect(leader2)
    index = c.one(b"14b", 3, retry=True)
    c.wait(index, 3, -1)

    i3 = (c.check_one_leader(timeout=10.0) + 1) % 3
    c.disconnect(i3)
    c.one(b"15", 2, retry=True)
    c.restart(i3)
    c.connect(i3)
    c.one(b"16", 3, retry=True)
    assert_all_applied(c, [b"11", b"12", b"13", b"14", b"14b", b"15", b"16"])


@pytest.mark.parametrize("seed", SEEDS)
def test_persist2_repeated_minority_crashes_lose_no_committed_entry(seed: int) -> None:
    """MIT's TestPersist23C: five nodes, crashes and partitions, over several rounds."""
    n = 5
    c = SimCluster(n=n, seed=seed)
    expected: list[bytes] = []
    k = 0

    def one(servers: int) -> None:
        nonlocal k
        k += 1
        cmd = b"%d" % (10 + k)
        c.one(cmd, servers, retry=True)
        expected.append(cmd)

    for _ in range(5):
        one(n)
        leader1 = c.check_one_leader(timeout=10.0)
        for d in (1, 2):
            c.disconnect((leader1 + d) % n)
            c.crash((leader1 + d) % n)
        one(n - 2)

        for d in (0, 3, 4):
            c.disconnect((leader1 + d) % n)
        # Two nodes that missed the last entry come back from their disks ...
        for d in (1, 2):
            c.restart((leader1 + d) % n)
            c.connect((leader1 + d) % n)
        c.run(ELECTION)
        # ... with one that has it: only that one can be elected.
        c.restart((leader1 + 3) % n)
        c.connect((leader1 + 3) % n)
        one(n - 2)

        for d in (4, 0):
            c.connect((leader1 + d) % n)
    one(n)
    assert_all_applied(c, expected)


@pytest.mark.parametrize("seed", SEEDS)
def test_persist3_leader_and_follower_crash_while_a_third_node_was_away(seed: int) -> None:
    """MIT's TestPersist33C: the node that missed an entry must not win alone."""
    c = SimCluster(n=3, seed=seed)
    c.one(b"101", 3, retry=True)
    leader = c.check_one_leader(timeout=5.0)
    away = (leader + 2) % 3
    c.disconnect(away)
    c.one(b"102", 2, retry=True)

    c.crash(leader)
    c.crash((leader + 1) % 3)
    c.connect(away)
    c.restart(leader)
    c.one(b"103", 2, retry=True)
    c.restart((leader + 1) % 3)
    c.one(b"104", 3, retry=True)
    assert_all_applied(c, [b"101", b"102", b"103", b"104"])


@pytest.mark.parametrize("seed", SEEDS)
def test_restarted_node_applies_each_committed_entry_exactly_once_in_order(seed: int) -> None:
    c = SimCluster(n=3, seed=seed)
    commands = [b"x%d" % k for k in range(30)]
    for cmd in commands:
        c.one(cmd, 3, retry=True)
    for i in range(3):
        c.restart(i)
        c.one(b"after-%d" % i, 3, retry=True)
    c.run(ELECTION)
    for i in range(3):
        applied = c.applied(i)
        indices = [index for index, _ in applied]
        assert indices == sorted(set(indices)), f"node {i} applied an index twice or out of order"
        assert [cmd for _, cmd in applied][: len(commands)] == commands


@pytest.mark.parametrize("seed", SEEDS)
def test_entries_of_a_crashed_minority_leader_never_surface_after_restart(seed: int) -> None:
    c = SimCluster(n=5, seed=seed)
    c.one(b"base", 5, retry=True)
    leader = c.check_one_leader(timeout=5.0)
    c.disconnect(leader)
    for k in range(10):
        c.start(leader, b"orphan-%d" % k)
    c.run(0.2)  # durable on the old leader only
    c.one(b"majority", 4, retry=True)
    c.crash(leader)
    c.restart(leader)
    c.connect(leader)
    c.one(b"end", 5, retry=True)
    assert_all_applied(c, [b"base", b"majority", b"end"])

"""Scenario tests of membership changes on ``SimCluster``: growing and shrinking, replacing every
node, removing the leader, learners, and changes among partitions, crashes and proposals.

The safety checker runs throughout: besides Raft's properties it checks that only voters vote
and lead, that a leader starts one change at a time and only after committing an entry of its
term, and that a new leader's configuration is at least the newest committed one.
"""

from __future__ import annotations

import contextlib
import random

import pytest
from sim_helpers import SEEDS, until_accepted, wait_gone, wait_voter

from raftly.core import ConfChange, ConfChangeType, Member, RaftError, Role
from raftly.testing import SimCluster


def _commit(c: SimCluster, prefix: str, count: int = 5) -> None:
    """Commit ``count`` commands on every member."""
    for k in range(count):
        c.one(f"{prefix}{k}".encode(), len(c.committed_conf().ids), retry=True)


def _converged(c: SimCluster) -> None:
    """Every member holds the same commands (applied or restored)."""
    members = sorted(c.committed_conf().ids)
    c.run_until(lambda: len({tuple(c.commands(i)) for i in members}) == 1, 10.0, step=0.05)


@pytest.mark.parametrize("seed", SEEDS)
def test_grow_from_three_to_five_and_back(seed: int) -> None:
    c = SimCluster(3, seed=seed)
    c.check_one_leader()
    _commit(c, "a")
    for _ in range(2):
        new = until_accepted(c, c.add_node)
        wait_voter(c, new)
        _commit(c, f"grow{new}-")
    assert c.committed_conf().voters == {0, 1, 2, 3, 4}
    for old in (3, 4):
        until_accepted(c, lambda old=old: c.remove_node(old))
        wait_gone(c, old)
        _commit(c, f"shrink{old}-")
    assert c.committed_conf().voters == {0, 1, 2}
    _converged(c)
    assert len(c.commands(0)) == 25


@pytest.mark.parametrize("seed", SEEDS)
def test_replace_every_node_one_by_one(seed: int) -> None:
    c = SimCluster(3, seed=seed)
    c.check_one_leader()
    _commit(c, "before")
    for old in (0, 1, 2):
        new = until_accepted(c, c.add_node)
        wait_voter(c, new)
        until_accepted(c, lambda old=old: c.remove_node(old))
        wait_gone(c, old)
        _commit(c, f"after{old}-", 2)
    assert c.committed_conf().voters == {3, 4, 5}
    assert c.check_one_leader() in (3, 4, 5)
    _converged(c)
    assert [cmd for _, cmd in c.commands(3)][:5] == [f"before{k}".encode() for k in range(5)]


@pytest.mark.parametrize("seed", SEEDS)
def test_removing_the_leader_hands_over_and_it_never_leads_again(seed: int) -> None:
    c = SimCluster(3, seed=seed)
    leader = c.check_one_leader()
    _commit(c, "a")
    until_accepted(c, lambda: c.remove_node(leader))
    wait_gone(c, leader)
    # Handed over with TimeoutNow: a new leader well within one election timeout.
    c.run_until(lambda: c.leader() not in (None, leader), 0.5, step=0.01)
    _commit(c, "b")
    c.run(10.0)
    assert c.node(leader).role is not Role.LEADER
    assert c.node(leader).voters == c.committed_conf().voters == {0, 1, 2} - {leader}


@pytest.mark.parametrize("seed", SEEDS)
def test_learners_replicate_but_never_vote_or_lead_across_elections(seed: int) -> None:
    c = SimCluster(3, seed=seed)
    c.check_one_leader()
    learner = until_accepted(c, lambda: c.add_node(promote=False))
    _commit(c, "a")
    for round_ in range(6):
        leader = c.check_one_leader(timeout=10.0)
        c.disconnect(leader)  # force an election among the voters
        c.check_one_leader(timeout=10.0)
        c.connect(leader)
        _commit(c, f"r{round_}-", 1)
        node = c.node(learner)
        assert node.vote is None and node.role is Role.FOLLOWER
    assert c.committed_conf().learners == {learner}
    _converged(c)


@pytest.mark.parametrize("seed", SEEDS)
def test_new_node_catches_up_by_snapshot(seed: int) -> None:
    c = SimCluster(3, seed=seed, snapshot_every=5)
    c.check_one_leader()
    _commit(c, "a", 30)
    new = until_accepted(c, c.add_node)
    wait_voter(c, new)
    assert c.snapshots_installed(new), "the new node should have needed a snapshot"
    _commit(c, "b", 3)
    _converged(c)


@pytest.mark.parametrize("seed", range(8))
def test_changes_interleaved_with_partitions_crashes_and_proposals(seed: int) -> None:
    c = SimCluster(5, seed=seed, snapshot_every=10 if seed % 2 else None)
    rng = random.Random(seed)
    crashed: set[int] = set()
    for step in range(60):
        c.run(rng.uniform(0.0, 0.5))
        roll = rng.random()
        members = sorted(c.committed_conf().ids)
        if roll < 0.35:
            leader = c.leader()
            if leader is not None:
                for k in range(3):
                    c.start(leader, f"s{step}-{k}".encode())
        elif roll < 0.5 and len(members) < 7:
            with contextlib.suppress(RaftError):  # no leader, a change in flight, ...
                c.add_node(promote=rng.random() < 0.8)
        elif roll < 0.6 and len(c.committed_conf().voters) > 3:
            with contextlib.suppress(RaftError):  # no leader, a change in flight, ...
                c.remove_node(rng.choice(members))
        elif roll < 0.7:
            nodes = list(range(c.n))
            rng.shuffle(nodes)
            cut = rng.randint(1, c.n - 1)
            c.partition(nodes[:cut], nodes[cut:])
        elif roll < 0.8:
            c.heal()
        elif roll < 0.9 and len(crashed) < 2:
            i = rng.randrange(c.n)
            c.crash(i)
            crashed.add(i)
        elif crashed:
            c.restart(crashed.pop())
    for i in crashed:
        c.restart(i)
    c.heal()
    c.check_one_leader(timeout=15.0)
    _commit(c, "final", 1)
    _converged(c)


def test_propose_conf_change_passes_the_change_to_the_leader() -> None:
    c = SimCluster(3, seed=1)
    leader = c.check_one_leader()
    c.run(0.5)
    index = c.propose_conf_change(ConfChange(ConfChangeType.REMOVE, Member((leader + 1) % 3)))
    assert c.node(leader).log.entry(index).type.name == "CONFIG"

"""Scenario tests of leader election on ``SimCluster`` (after MIT 6.5840's Raft lab, part 3A).

Also: pre-vote (a returning node does not depose a healthy leader), check-quorum (a leader cut off
from the majority steps down) and leadership transfer. Every test runs on virtual time only.
"""

from __future__ import annotations

import random

import pytest
from sim_helpers import ELECTION, SEEDS

from raftly.core.config import Config
from raftly.testing import SimCluster


@pytest.mark.parametrize("seed", SEEDS)
def test_initial_election_elects_one_leader_and_the_term_then_stays_put(seed: int) -> None:
    c = SimCluster(n=3, seed=seed)
    leader = c.check_one_leader(timeout=5.0)
    # Timeouts are drawn from [1 s, 2 s): the first one to fire should win, bar a split vote.
    assert c.now <= 3.0, f"first leader only after {c.now:.2f}s"
    term = c.check_terms()
    assert term >= 1
    # A healthy cluster holds no further elections.
    c.run(2 * ELECTION + 1.0)
    assert c.check_terms() == term, "the term moved although nothing failed"
    assert c.check_one_leader(timeout=0.0) == leader
    assert [c.is_leader(i) for i in range(3)].count(True) == 1


@pytest.mark.parametrize("seed", SEEDS)
def test_reelection_after_leader_disconnect_and_none_without_a_majority(seed: int) -> None:
    c = SimCluster(n=3, seed=seed)
    leader1 = c.check_one_leader(timeout=5.0)

    # The leader goes away: a new one is elected among the other two.
    c.disconnect(leader1)
    leader2 = c.check_one_leader(timeout=10.0)
    assert leader2 != leader1

    # The old leader comes back: it must not disturb the new leader.
    c.connect(leader1)
    assert c.check_one_leader(timeout=10.0) == leader2

    # No quorum: no leader may be elected.
    other = (leader2 + 1) % 3
    c.disconnect(leader2)
    c.disconnect(other)
    c.run(2 * 2 * ELECTION)
    c.check_no_leader()

    # A quorum again: a leader appears.
    c.connect(other)
    c.check_one_leader(timeout=10.0)
    c.connect(leader2)
    c.check_one_leader(timeout=10.0)
    c.run(ELECTION)  # the returning node hears the leader's heartbeats and adopts its term
    c.check_terms()


@pytest.mark.parametrize("seed", SEEDS)
def test_many_elections_with_three_of_seven_nodes_out_each_round_always_find_a_leader(
    seed: int,
) -> None:
    c = SimCluster(n=7, seed=seed)
    rng = random.Random(seed)
    c.check_one_leader(timeout=5.0)
    for _ in range(10):
        out = [rng.randrange(7) for _ in range(3)]
        for i in out:
            c.disconnect(i)
        # Four or more nodes remain: they must elect (or keep) a leader.
        c.check_one_leader(timeout=10.0)
        for i in out:
            c.connect(i)
    c.check_one_leader(timeout=10.0)


def _isolate_follower_and_return(config: Config, seed: int) -> tuple[int, int, SimCluster, int]:
    c = SimCluster(n=3, seed=seed, config=config)
    leader = c.check_one_leader(timeout=5.0)
    c.one(b"before", 3, retry=True)
    term = c.check_terms()
    follower = (leader + 1) % 3
    c.disconnect(follower)
    c.run(10.0)  # many election timeouts alone
    c.connect(follower)
    c.run(3 * ELECTION)
    return leader, term, c, follower


@pytest.mark.parametrize("seed", SEEDS)
def test_partitioned_node_coming_back_does_not_depose_healthy_leader(seed: int) -> None:
    leader, term, c, follower = _isolate_follower_and_return(Config(), seed)
    # Pre-vote: alone, the follower never raised its term, so it cannot disturb anyone.
    assert c.leader() == leader
    assert c.check_terms() == term, "the majority's term moved when the node came back"
    assert c.term(follower) == term
    c.one(b"after", 3, retry=False)


@pytest.mark.parametrize("seed", SEEDS)
def test_minority_partition_healing_does_not_depose_leader_of_majority(seed: int) -> None:
    c = SimCluster(n=5, seed=seed)
    c.one(b"before", 5, retry=True)
    leader = c.check_one_leader(timeout=5.0)
    minority = [(leader + 1) % 5, (leader + 2) % 5]
    c.partition(minority, [i for i in range(5) if i not in minority])
    c.one(b"during", 3, retry=True)
    term = c.term(leader)
    c.run(10.0)
    assert all(c.term(i) <= term for i in minority), "the minority raised its term"
    c.heal()
    c.run(3 * ELECTION)
    assert c.leader() == leader
    assert c.check_terms() == term
    c.one(b"after", 5, retry=False)


def test_control_without_pre_vote_a_returning_node_does_bump_the_term() -> None:
    """Shows that the test above would catch a disruption: with pre-vote off it happens."""
    _, term, c, _ = _isolate_follower_and_return(Config(pre_vote=False), seed=1)
    assert c.check_terms() > term


@pytest.mark.parametrize("seed", SEEDS)
def test_leader_cut_off_from_majority_steps_down_within_two_election_timeouts(seed: int) -> None:
    c = SimCluster(n=5, seed=seed)
    leader = c.check_one_leader(timeout=5.0)
    c.one(b"x", 5, retry=True)
    buddy = (leader + 1) % 5
    majority = [i for i in range(5) if i not in (leader, buddy)]
    c.partition([leader, buddy], majority)

    took = c.run_until(lambda: not c.is_leader(leader), timeout=5 * ELECTION)
    assert took <= 2 * ELECTION + 0.05, f"old leader led on for {took:.2f}s cut off from a majority"
    # The majority elects a leader of its own; the minority side never does.
    new = c.check_one_leader(timeout=10.0)
    assert new in majority
    assert not c.is_leader(leader) and not c.is_leader(buddy)
    c.heal()
    c.one(b"y", 5, retry=True)


def test_control_without_check_quorum_a_cut_off_leader_keeps_leading() -> None:
    """Shows that the test above can fail: without check-quorum the leader never steps down."""
    c = SimCluster(n=5, seed=1, config=Config(check_quorum=False))
    leader = c.check_one_leader(timeout=5.0)
    c.disconnect(leader)
    c.run(5 * ELECTION)
    assert c.is_leader(leader)


@pytest.mark.parametrize("seed", SEEDS)
def test_leadership_transfer_to_up_to_date_follower_takes_well_under_an_election_timeout(
    seed: int,
) -> None:
    c = SimCluster(n=3, seed=seed)
    leader = c.check_one_leader(timeout=5.0)
    c.one(b"a", 3, retry=True)
    term = c.check_terms()
    target = (leader + 1) % 3

    c.node(leader).transfer_leadership(target)
    took = c.run_until(lambda: c.leader() == target, timeout=2 * ELECTION, step=0.005)
    assert took < 0.2, f"transfer took {took:.3f}s"
    assert c.term(target) == term + 1
    assert not c.is_leader(leader)
    c.one(b"b", 3, retry=False)


@pytest.mark.parametrize("seed", SEEDS)
def test_leadership_transfer_to_lagging_follower_catches_it_up_first(seed: int) -> None:
    c = SimCluster(n=3, seed=seed)
    leader = c.check_one_leader(timeout=5.0)
    target = (leader + 1) % 3
    c.disconnect(target)
    commands = [b"w%d" % k for k in range(20)]
    last = 0
    for cmd in commands:
        last = c.one(cmd, 2, retry=False)
    c.connect(target)

    c.node(leader).transfer_leadership(target)
    took = c.run_until(lambda: c.leader() == target, timeout=2 * ELECTION, step=0.005)
    assert took < 0.5, f"transfer to a lagging node took {took:.3f}s"
    c.wait(last, 3, -1)
    assert [cmd for _, cmd in c.applied(target)] == commands
    c.one(b"after", 3, retry=False)


@pytest.mark.parametrize("seed", SEEDS)
def test_leadership_transfer_to_unreachable_node_times_out_and_leader_resumes(seed: int) -> None:
    c = SimCluster(n=3, seed=seed)
    leader = c.check_one_leader(timeout=5.0)
    c.one(b"a", 3, retry=True)
    term = c.check_terms()
    target = (leader + 1) % 3
    c.disconnect(target)

    c.node(leader).transfer_leadership(target)
    index, _, ok = c.start(leader, b"during")
    assert (index, ok) == (-1, False), "proposals must wait while a transfer is in progress"

    def accepts() -> bool:
        return c.start(leader, b"resumed")[0] != -1

    took = c.run_until(accepts, timeout=3 * ELECTION, step=0.02)
    assert took <= ELECTION + 0.1, f"the transfer blocked proposals for {took:.2f}s"
    assert c.is_leader(leader) and c.term(leader) == term
    c.one(b"more", 2, retry=False)

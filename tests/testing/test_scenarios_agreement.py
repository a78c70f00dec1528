"""Scenario tests of log agreement on ``SimCluster`` (after MIT 6.5840's Raft lab, part 3B).

Basic agreement, agreement with failures and without a majority, concurrent proposals, a
rejoining leader with a divergent log, fast backup over many conflicting entries, message counts,
an unreliable network, and ReadIndex. Every test runs on virtual time only.
"""

from __future__ import annotations

import random

import pytest
from sim_helpers import ELECTION, SEEDS, commands_applied

from raftly.core.config import Config
from raftly.testing import SimCluster

HEARTBEAT = Config().heartbeat_interval



@pytest.mark.parametrize("seed", SEEDS)
def test_basic_agreement_commits_each_command_at_the_next_index_on_every_node(seed: int) -> None:
    c = SimCluster(n=3, seed=seed)
    c.check_one_leader(timeout=5.0)
    previous = None
    for k in range(1, 4):
        cmd = b"cmd%d" % k
        index = c.one(cmd, 3, retry=False)
        if previous is not None:
            assert index == previous + 1, "indices skipped although the leader did not change"
        previous = index
        assert c.n_committed(index) == (3, cmd)
    for i in range(3):
        assert commands_applied(c, i) == [b"cmd1", b"cmd2", b"cmd3"]


@pytest.mark.parametrize("seed", SEEDS)
def test_nothing_is_committed_before_it_is_proposed(seed: int) -> None:
    c = SimCluster(n=3, seed=seed)
    leader = c.check_one_leader(timeout=5.0)
    index, _, ok = c.start(leader, b"late")
    assert ok
    assert c.n_committed(index) == (0, None)
    assert c.wait(index, 3, -1) == b"late"


@pytest.mark.parametrize("seed", SEEDS)
def test_commit_reaches_every_follower_without_waiting_for_a_heartbeat(seed: int) -> None:
    """Once a majority holds an entry, every follower learns it is committed within a few
    network round trips, not at the next heartbeat (which would add up to 100 ms per write on
    followers, and to every read served by a follower)."""
    c = SimCluster(n=3, seed=seed)
    c.check_one_leader(timeout=5.0)
    c.one(b"warm-up", 3, retry=True)
    c.run(1.0)
    worst = 0.0
    for k in range(10):
        leader = c.check_one_leader(timeout=0.0)
        # Wait for the quiet moment right after a heartbeat round.
        c.run(0.03)
        index, _, _ = c.start(leader, b"w%d" % k)
        took = c.run_until(lambda idx=index: c.n_committed(idx)[0] == 3, timeout=1.0, step=0.001)
        worst = max(worst, took)
    assert worst < HEARTBEAT / 2, f"a follower learned of a commit only after {worst:.3f}s"


@pytest.mark.parametrize("seed", SEEDS)
def test_agreement_continues_with_one_follower_disconnected_and_it_catches_up(seed: int) -> None:
    c = SimCluster(n=3, seed=seed)
    c.one(b"101", 3, retry=False)
    leader = c.check_one_leader(timeout=5.0)
    follower = (leader + 1) % 3
    c.disconnect(follower)

    # The leader and the remaining follower still agree.
    c.one(b"102", 2, retry=False)
    c.run(ELECTION)
    c.one(b"103", 2, retry=False)
    c.one(b"104", 2, retry=False)
    assert b"102" not in commands_applied(c, follower)

    # The follower comes back: it catches up and takes part again.
    c.connect(follower)
    last = c.one(b"105", 3, retry=True)
    c.wait(last, 3, -1)
    for i in range(3):
        assert commands_applied(c, i) == [b"101", b"102", b"103", b"104", b"105"]


@pytest.mark.parametrize("seed", SEEDS)
def test_no_agreement_without_a_majority_then_agreement_once_it_returns(seed: int) -> None:
    c = SimCluster(n=5, seed=seed)
    c.one(b"10", 5, retry=False)
    leader = c.check_one_leader(timeout=5.0)
    away = [(leader + k) % 5 for k in (1, 2, 3)]
    for i in away:
        c.disconnect(i)

    index, _, ok = c.start(leader, b"20")
    assert ok
    c.run(2 * ELECTION)
    assert c.n_committed(index) == (0, None), "committed without a majority"

    for i in away:
        c.connect(i)
    c.check_one_leader(timeout=10.0)
    c.one(b"30", 5, retry=True)
    c.one(b"1000", 5, retry=True)
    # Whatever happened to "20", every node applied the same sequence.
    logs = {tuple(commands_applied(c, i)) for i in range(5)}
    assert len(logs) == 1
    (log,) = logs
    assert log[0] == b"10" and log[-2:] == (b"30", b"1000")


@pytest.mark.parametrize("seed", SEEDS)
def test_concurrent_proposals_all_commit_at_consecutive_indices_in_one_term(seed: int) -> None:
    c = SimCluster(n=3, seed=seed)
    c.check_one_leader(timeout=5.0)
    c.one(b"first", 3, retry=True)
    leader = c.check_one_leader(timeout=0.0)
    term = c.term(leader)

    commands = [b"c%d" % k for k in range(50)]
    proposals = [c.start(leader, cmd) for cmd in commands]
    assert all(ok and t == term for _, t, ok in proposals)
    indices = [index for index, _, _ in proposals]
    assert indices == list(range(indices[0], indices[0] + 50))

    for index, cmd in zip(indices, commands, strict=True):
        assert c.wait(index, 3, term) == cmd
    assert c.term(leader) == term
    for i in range(3):
        assert commands_applied(c, i)[1:] == commands


@pytest.mark.parametrize("seed", SEEDS)
def test_rejoining_old_leader_with_divergent_log_adopts_the_new_leaders_log(seed: int) -> None:
    c = SimCluster(n=3, seed=seed)
    c.one(b"101", 3, retry=True)

    # The leader is cut off and takes proposals that can never commit.
    leader1 = c.check_one_leader(timeout=5.0)
    c.disconnect(leader1)
    for cmd in (b"102", b"103", b"104"):
        assert c.start(leader1, cmd)[2]
    c.run(0.1)

    # The others elect a new leader, which commits at those same indices.
    c.one(b"103b", 2, retry=True)
    leader2 = c.check_one_leader(timeout=10.0)
    c.disconnect(leader2)

    # The old leader returns, alongside the remaining follower.
    c.connect(leader1)
    c.one(b"104b", 2, retry=True)
    c.connect(leader2)
    last = c.one(b"105", 3, retry=True)
    c.wait(last, 3, -1)

    logs = {tuple(commands_applied(c, i)) for i in range(3)}
    assert logs == {(b"101", b"103b", b"104b", b"105")}


def _backup_scenario(seed: int, batch: int) -> tuple[SimCluster, int, float]:
    """MIT's TestBackup3B: leaders left with long, conflicting, uncommitted logs.

    Returns the cluster, the messages sent while the final agreement repaired every log, and the
    virtual time it took.
    """
    rng = random.Random(seed)
    c = SimCluster(n=5, seed=seed)
    c.one(b"start", 5, retry=True)

    # Put the leader and one follower in a partition; they take many entries that never commit.
    leader1 = c.check_one_leader(timeout=5.0)
    for k in (2, 3, 4):
        c.disconnect((leader1 + k) % 5)
    for k in range(batch):
        c.start(leader1, b"lost-a-%d" % k)
    c.run(ELECTION / 2)
    c.disconnect(leader1)
    c.disconnect((leader1 + 1) % 5)

    # The other partition commits many entries of its own at those indices.
    for k in (2, 3, 4):
        c.connect((leader1 + k) % 5)
    for k in range(batch):
        c.one(b"kept-b-%d" % k, 3, retry=True)

    # Now another partitioned leader, and one of its followers, take yet more lost entries.
    leader2 = c.check_one_leader(timeout=10.0)
    other = next((leader1 + k) % 5 for k in (2, 3, 4) if (leader1 + k) % 5 != leader2)
    c.disconnect(other)
    for k in range(batch):
        c.start(leader2, b"lost-c-%d" % k)
    c.run(ELECTION / 2)

    # Bring back the first partition's nodes and the "other" node: they must commit.
    for i in range(5):
        c.disconnect(i)
    for i in (leader1, (leader1 + 1) % 5, other):
        c.connect(i)
    for k in range(batch):
        c.one(b"kept-d-%d" % k, 3, retry=True)

    # Now everyone: the two nodes with long conflicting suffixes must be repaired fast.
    for i in range(5):
        c.connect(i)
    before, t0 = c.message_count(), c.now
    last = c.one(b"end-%d" % rng.randrange(10**6), 5, retry=True)
    c.wait(last, 5, -1)
    return c, c.message_count() - before, c.now - t0


@pytest.mark.parametrize("seed", SEEDS)
def test_fast_backup_repairs_logs_with_many_conflicting_entries_in_few_round_trips(
    seed: int,
) -> None:
    batch = 50
    c, messages, took = _backup_scenario(seed, batch)
    logs = {tuple(commands_applied(c, i)) for i in range(5)}
    assert len(logs) == 1
    (log,) = logs
    assert not any(cmd.startswith((b"lost-a", b"lost-c")) for cmd in log)
    kept_b = [cmd for cmd in log if cmd.startswith(b"kept-b")]
    assert kept_b == [b"kept-b-%d" % k for k in range(batch)]
    kept_d = [cmd for cmd in log if cmd.startswith(b"kept-d")]
    assert kept_d == [b"kept-d-%d" % k for k in range(batch)]
    # Backing up one entry per round trip would cost >= 2 * batch messages for each of the two
    # repaired followers; backing up a term per round trip costs a handful.
    assert messages <= 60, f"repair took {messages} messages"
    assert took <= 1.0, f"repair took {took:.2f}s"


@pytest.mark.parametrize("n", [3, 5])
def test_idle_leader_sends_at_most_ten_heartbeats_per_follower_per_second(n: int) -> None:
    c = SimCluster(n=n, seed=1)
    c.check_one_leader(timeout=5.0)
    c.one(b"x", n, retry=True)
    term = c.check_terms()
    c.run(1.0)
    before = c.message_count()
    seconds = 10.0
    c.run(seconds)
    sent = c.message_count() - before
    assert c.check_terms() == term
    # Each heartbeat is answered: at most 2 messages per follower per heartbeat.
    per_follower_per_second = sent / 2 / (n - 1) / seconds
    assert per_follower_per_second <= 10.5, f"{per_follower_per_second:.1f} heartbeats/follower/s"
    # ...but heartbeats do flow, or followers would start elections.
    assert per_follower_per_second >= 1.0


@pytest.mark.parametrize("n", [3, 5])
def test_one_agreement_costs_a_constant_number_of_messages_per_follower(n: int) -> None:
    c = SimCluster(n=n, seed=2)
    c.check_one_leader(timeout=5.0)
    c.one(b"x", n, retry=True)
    c.run(1.0)
    # The idle rate, to subtract heartbeats.
    before = c.message_count()
    c.run(10.0)
    idle_rate = (c.message_count() - before) / 10.0

    agreements = 20
    before, t0 = c.message_count(), c.now
    for k in range(agreements):
        c.one(b"a%d" % k, n, retry=False)
    extra = (c.message_count() - before) - idle_rate * (c.now - t0)
    per = extra / agreements / (n - 1)
    # AppendEntries + response, and at most one more round carrying the commit index.
    assert per <= 4.5, f"{per:.1f} messages per follower per agreement"


@pytest.mark.parametrize("n", [3, 5])
def test_many_proposals_between_steps_share_one_append_per_follower(n: int) -> None:
    c = SimCluster(n=n, seed=3)
    leader = c.check_one_leader(timeout=5.0)
    c.one(b"x", n, retry=True)
    c.run(1.0)
    before, t0 = c.message_count(), c.now
    indices = [c.start(leader, b"b%d" % k)[0] for k in range(100)]
    c.wait(indices[-1], n, -1)
    heartbeats = 2 * (n - 1) * (int((c.now - t0) / HEARTBEAT) + 1)
    extra = c.message_count() - before - heartbeats
    assert extra <= 4 * (n - 1), f"100 proposals cost {extra} messages beyond heartbeats"


@pytest.mark.parametrize("seed", SEEDS)
def test_agreement_over_unreliable_network(seed: int) -> None:
    c = SimCluster(n=5, seed=seed)
    c.set_unreliable(True)
    rng = random.Random(seed)
    expected = []
    for it in range(1, 31):
        # Like several clients at once: a few proposals land on whichever node leads.
        for j in range(4):
            for i in range(5):
                if c.start(i, b"u%d-%d" % (it, j))[2]:
                    break
            if rng.random() < 0.5:
                c.run(rng.uniform(0.0, 0.01))
        cmd = b"one%d" % it
        c.one(cmd, 1, retry=True)
        expected.append(cmd)
    c.set_unreliable(False)
    last = c.one(b"final", 5, retry=True)
    c.wait(last, 5, -1)
    logs = {tuple(commands_applied(c, i)) for i in range(5)}
    assert len(logs) == 1
    (log,) = logs
    acknowledged = [cmd for cmd in log if cmd.startswith(b"one")]
    assert sorted(set(acknowledged), key=expected.index) == expected


def test_five_node_unreliable_cluster_elects_and_commits_1000_commands() -> None:
    c = SimCluster(n=5, seed=42)
    c.set_unreliable(True)
    c.check_one_leader(timeout=10.0)
    commands = [b"cmd-%04d" % k for k in range(1000)]
    committed: set[bytes] = set()
    for lo in range(0, 1000, 10):
        pending = commands[lo:lo + 10]
        while pending:
            leader = c.check_one_leader(timeout=10.0)
            term = c.term(leader)
            placed = [(c.start(leader, cmd)[0], cmd) for cmd in pending]
            retry = []
            for index, cmd in placed:
                got = c.wait(index, 3, term) if index != -1 else None
                if got == cmd:
                    committed.add(cmd)
                elif cmd not in committed:
                    retry.append(cmd)
            pending = retry
    c.set_unreliable(False)
    last = c.one(b"final", 5, retry=True)
    c.wait(last, 5, -1)
    for i in range(5):
        applied = commands_applied(c, i)
        assert set(commands) <= set(applied), f"node {i} is missing commands"


# -- ReadIndex ----------------------------------------------------------------------------------


def _reads(c: SimCluster, i: int, ctx: bytes) -> list[int]:
    return [rs.index for rs in c.read_states(i) if rs.context == ctx]


@pytest.mark.parametrize("seed", SEEDS)
def test_read_index_on_leader_is_at_least_the_last_committed_write(seed: int) -> None:
    c = SimCluster(n=3, seed=seed)
    leader = c.check_one_leader(timeout=5.0)
    last_write = c.one(b"w1", 3, retry=True)
    last_write = max(last_write, c.one(b"w2", 1, retry=True))
    leader = c.check_one_leader(timeout=0.0)

    c.node(leader).read_index(b"r-leader")
    took = c.run_until(lambda: bool(_reads(c, leader, b"r-leader")), timeout=1.0, step=0.002)
    assert took < HEARTBEAT, f"read took {took:.3f}s"
    (index,) = _reads(c, leader, b"r-leader")
    assert index >= last_write


@pytest.mark.parametrize("seed", SEEDS)
def test_read_index_on_follower_is_forwarded_and_covers_the_last_committed_write(
    seed: int,
) -> None:
    c = SimCluster(n=3, seed=seed)
    c.check_one_leader(timeout=5.0)
    last_write = c.one(b"w1", 1, retry=True)
    leader = c.check_one_leader(timeout=0.0)
    follower = (leader + 1) % 3
    c.run(2 * HEARTBEAT)  # the follower has heard from the leader and knows it

    c.node(follower).read_index(b"r-follower")
    c.run_until(lambda: bool(_reads(c, follower, b"r-follower")), timeout=1.0, step=0.002)
    (index,) = _reads(c, follower, b"r-follower")
    assert index >= last_write
    # The follower can serve the read once it applied that far.
    c.wait(index, 3, -1)
    assert c.applied(follower)[-1][0] >= last_write


@pytest.mark.parametrize("seed", SEEDS)
def test_read_index_right_after_election_waits_for_the_new_leaders_commit(seed: int) -> None:
    c = SimCluster(n=3, seed=seed)
    c.check_one_leader(timeout=5.0)
    last_write = c.one(b"w1", 3, retry=True)
    old = c.check_one_leader(timeout=0.0)
    c.disconnect(old)
    leader = c.check_one_leader(timeout=10.0)
    c.node(leader).read_index(b"r")  # possibly before its no-op commits
    c.run_until(lambda: bool(_reads(c, leader, b"r")), timeout=1.0, step=0.002)
    (index,) = _reads(c, leader, b"r")
    assert index > last_write, "the read index must cover the new leader's no-op"


@pytest.mark.parametrize("seed", SEEDS)
def test_deposed_leader_cut_off_from_majority_never_serves_a_read(seed: int) -> None:
    c = SimCluster(n=5, seed=seed)
    c.check_one_leader(timeout=5.0)
    c.one(b"w1", 5, retry=True)
    old = c.check_one_leader(timeout=0.0)
    c.disconnect(old)
    c.node(old).read_index(b"stale?")  # it still believes it leads
    c.check_one_leader(timeout=10.0)
    c.one(b"w2", 4, retry=True)
    c.run(2 * ELECTION)
    assert _reads(c, old, b"stale?") == []

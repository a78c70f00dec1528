"""Membership changes in the core: refusals, learners, auto-promotion and removing the leader."""

from __future__ import annotations

import random

import pytest
from core_helpers import ELECTION, Net, ack, config, elect, flush, leader_with, new_node, tick

from raftly.core import (
    AppendEntries,
    ConfChange,
    ConfChangeRefused,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    InitialState,
    Member,
    NotLeader,
    ProposalDropped,
    RaftNode,
    RequestVote,
    RequestVoteResponse,
    Role,
    SnapshotMeta,
    TimeoutNow,
)

ADD, PROMOTE, REMOVE = ConfChangeType.ADD_LEARNER, ConfChangeType.PROMOTE, ConfChangeType.REMOVE


def change(kind: ConfChangeType, node: int, name: str = "", raft: str = "", api: str = "",
           promote: bool = True) -> ConfChange:
    return ConfChange(kind, Member(node, name, raft, api, promote))


def refusal(node: RaftNode, conf_change: ConfChange) -> str:
    last = node.log.last_index
    with pytest.raises(ConfChangeRefused) as info:
        node.propose_conf_change(conf_change)
    assert node.log.last_index == last, "a refused change appended something"
    return info.value.code


def test_only_the_leader_takes_a_change() -> None:
    with pytest.raises(NotLeader):
        new_node(2).propose_conf_change(change(ADD, 4))


def test_change_refused_until_an_entry_of_the_leaders_term_commits() -> None:
    leader = leader_with(replicate=False)
    assert refusal(leader, change(ADD, 4)) == "not_ready"
    leader.step(ack(leader, 2, leader.log.last_index))
    assert leader.propose_conf_change(change(ADD, 4)) == leader.log.last_index


def test_one_change_at_a_time() -> None:
    leader = leader_with()
    index = leader.propose_conf_change(change(ADD, 4))
    assert leader.log.entry(index).type is EntryType.CONFIG
    assert leader.conf == ConfState(frozenset({1, 2, 3}), frozenset({4}))
    assert refusal(leader, change(ADD, 5)) == "in_flight"
    flush(leader)
    leader.step(ack(leader, 2, index))
    flush(leader)
    leader.propose_conf_change(change(ADD, 5))
    assert leader.conf.learners == {4, 5}


def test_change_entry_of_a_previous_leader_counts_as_in_flight() -> None:
    conf = ConfState(frozenset({1, 2, 3}), frozenset({4})).encode()
    node = new_node(terms=(1,), term=1)
    node.step(AppendEntries(term=1, src=2, dst=1, prev_index=1, prev_term=1, commit=1,
                            entries=[Entry(2, 1, conf, EntryType.CONFIG)]))
    elect(node)
    flush(node)
    assert refusal(node, change(ADD, 5)) == "in_flight"


def test_adding_an_existing_id_name_or_address_is_refused() -> None:
    members = (Member(1, "n1", "h:1", "h:11"), Member(2, "n2", "h:2", "h:22"),
               Member(3, "n3", "h:3"))
    state = InitialState(HardState(), SnapshotMeta(conf=ConfState(frozenset({1, 2, 3}),
                                                                  members=members)))
    leader = RaftNode(1, state, config(), random.Random(0))
    elect(leader)
    flush(leader)
    for peer in (2, 3):
        leader.step(ack(leader, peer, leader.log.last_index))
    flush(leader)
    assert refusal(leader, change(ADD, 2, name="n9", raft="h:9")) == "exists"
    assert refusal(leader, change(ADD, 4, name="n2", raft="h:9")) == "exists"
    assert refusal(leader, change(ADD, 4, name="n4", raft="h:3")) == "exists"
    assert refusal(leader, change(ADD, 4, name="n4", raft="h:4", api="h:22")) == "exists"
    leader.propose_conf_change(change(ADD, 4, name="n4", raft="h:4", api="h:44"))
    assert leader.conf.member(4) == Member(4, "n4", "h:4", "h:44")
    assert leader.conf.by_name("n4") == Member(4, "n4", "h:4", "h:44")


def test_promoting_or_removing_an_unknown_node_is_refused() -> None:
    leader = leader_with()
    assert refusal(leader, change(PROMOTE, 9)) == "unknown"
    assert refusal(leader, change(REMOVE, 9)) == "unknown"


def test_promoting_a_voter_is_refused() -> None:
    assert refusal(leader_with(), change(PROMOTE, 2)) == "not_learner"


def test_removing_the_last_voter_is_refused() -> None:
    leader = leader_with(voters=(1,))
    assert refusal(leader, change(REMOVE, 1)) == "last_voter"


def _leader_with_learner(lag_entries: int, promote_lag: int = 5) -> RaftNode:
    """A leader of 1, 2, 3 with learner 4 committed; 4 acked everything but the last
    ``lag_entries`` entries. Auto-promotion is not ticked."""
    leader = leader_with(cfg=config(promote_lag=promote_lag))
    index = leader.propose_conf_change(change(ADD, 4, promote=False))
    flush(leader)
    leader.step(ack(leader, 2, index))
    for n in range(10):
        leader.propose(b"x%d" % n)
    flush(leader)
    leader.step(ack(leader, 4, leader.log.last_index - lag_entries))
    flush(leader)
    return leader


def test_promoting_a_learner_that_is_behind_is_refused_with_how_far() -> None:
    leader = _leader_with_learner(lag_entries=8)
    with pytest.raises(ConfChangeRefused, match="behind by 8 entries") as info:
        leader.propose_conf_change(change(PROMOTE, 4))
    assert info.value.code == "behind"
    caught_up = _leader_with_learner(lag_entries=5)
    caught_up.propose_conf_change(change(PROMOTE, 4))
    assert caught_up.voters == {1, 2, 3, 4} and caught_up.conf.learners == frozenset()


def test_learner_does_not_count_for_commit() -> None:
    leader = _leader_with_learner(lag_entries=0)
    commit = leader.log.commit
    leader.propose(b"y")
    flush(leader)
    leader.step(ack(leader, 4, leader.log.last_index))
    flush(leader)
    assert leader.log.commit == commit
    leader.step(ack(leader, 3, leader.log.last_index))
    assert leader.log.commit == leader.log.last_index


def test_status_reports_learners_and_snapshot_meta_carries_them() -> None:
    leader = _leader_with_learner(lag_entries=0)
    assert leader.status().learners == {4} and leader.status().voters == {1, 2, 3}
    assert leader.snapshot_meta(leader.log.applied).conf == leader.conf


def joiner(node_id: int) -> RaftNode:
    """A node started with empty storage: it learns the configuration from the leader."""
    return RaftNode(node_id, InitialState(HardState(), SnapshotMeta()), config(),
                    random.Random(node_id))


def test_learner_catches_up_is_promoted_by_the_leader_and_never_campaigns_before() -> None:
    net = Net()
    leader = net.elect(1)
    for n in range(5):
        leader.propose(b"c%d" % n)
    net.settle()
    net.nodes[4] = joiner(4)
    net.applied[4], net.read_states[4] = [], []
    leader.propose_conf_change(change(ADD, 4))
    net.settle()
    learner = net.nodes[4]
    assert learner.conf.learners == {4} and learner.log.last_index == leader.log.last_index
    net.tick(1)  # one tick of the leader promotes it
    assert leader.voters == {1, 2, 3, 4}
    assert learner.voters == {1, 2, 3, 4}


def test_learner_without_promote_stays_a_learner_is_never_asked_to_vote_nor_campaigns() -> None:
    net = Net()
    leader = net.elect(1)
    net.nodes[4] = joiner(4)
    net.applied[4], net.read_states[4] = [], []
    leader.propose_conf_change(change(ADD, 4, promote=False))
    net.settle()
    net.tick(ELECTION)
    assert leader.conf.learners == {4}
    net.isolate(1)  # an election among 2 and 3: nobody asks the learner
    net.tick(4 * ELECTION, only=[2, 3])
    assert {net.nodes[2].role, net.nodes[3].role} == {Role.LEADER, Role.FOLLOWER}
    votes = [m for m in net.delivered if isinstance(m, RequestVote)]
    assert votes and all(m.src != 4 and m.dst != 4 for m in votes)
    learner = net.nodes[4]
    tick(learner, 10 * ELECTION)
    assert learner.role is Role.FOLLOWER and not flush(learner).of(RequestVote)


def test_voter_rejects_a_non_voter_behind_it_without_taking_its_term() -> None:
    node = new_node(2, terms=(1, 1))
    node.step(RequestVote(term=7, src=9, dst=2, last_log_index=1, last_log_term=1))
    out = flush(node)
    assert node.term == 1 and node.vote is None
    assert out.of(RequestVoteResponse)[0].granted is False


def test_voter_votes_for_a_promoted_learner_ahead_of_it() -> None:
    # 4 was promoted by an entry this voter has yet to receive: refusing it could leave the
    # election 4 needs this vote for without end.
    node = new_node(2, terms=(1, 1))
    node.step(RequestVote(term=2, src=4, dst=2, last_log_index=3, last_log_term=1))
    assert flush(node).of(RequestVoteResponse)[0].granted is True
    assert node.term == 2 and node.vote == 4


def test_removed_leader_leads_until_the_change_commits_then_hands_over() -> None:
    net = Net()
    leader = net.elect(1)
    net.blocked |= {(1, 2), (1, 3)}
    index = leader.propose_conf_change(change(REMOVE, 1))
    assert leader.voters == {2, 3} and leader.role is Role.LEADER
    with pytest.raises(ProposalDropped):
        leader.propose(b"after removal")
    net.settle()
    assert leader.role is Role.LEADER and leader.log.commit < index
    net.blocked.clear()
    net.tick(2)
    handed = [m for m in net.delivered if isinstance(m, TimeoutNow)]
    assert [m.src for m in handed] == [1]
    new = net.nodes[handed[0].dst]
    assert new.role is Role.LEADER and leader.role is Role.FOLLOWER
    assert new.voters == {2, 3}
    tick(leader, 10 * ELECTION)
    assert not flush(leader).of(RequestVote), "a removed node campaigned"


def test_removed_leader_does_not_count_its_own_entries() -> None:
    leader = leader_with()
    index = leader.propose_conf_change(change(REMOVE, 1))
    flush(leader)
    leader.step(ack(leader, 2, index))
    assert leader.log.commit < index  # 2 of {2, 3} is not a majority without the leader
    leader.step(ack(leader, 3, index))
    assert leader.role is Role.FOLLOWER


def test_conf_committed_says_whether_the_configuration_in_use_is_committed() -> None:
    leader = leader_with()
    assert leader.conf_committed
    index = leader.propose_conf_change(change(ADD, 4))
    flush(leader)
    assert not leader.conf_committed  # in use from the moment it is appended
    leader.step(ack(leader, 2, index))
    assert leader.conf_committed

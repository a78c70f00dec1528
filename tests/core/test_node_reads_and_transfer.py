"""RaftNode ReadIndex (leader and follower) and leadership transfer (TimeoutNow).

Their multi-step scenarios live as transcripts in testdata/ (read_index*.txt,
transfer_leadership.txt); what remains here are the checks of single inputs."""

from __future__ import annotations

import pytest
from core_helpers import (
    ELECTION,
    ack,
    config,
    elect,
    flush,
    heartbeat,
    heartbeat_response,
    leader_with,
    new_node,
    tick,
)

from raftly.core import (
    Heartbeat,
    InitialState,
    NotLeader,
    RaftNode,
    ReadIndexResponse,
    ReadState,
    RequestVote,
    Role,
    TimeoutNow,
)

# -- ReadIndex on the leader --------------------------------------------------------------------


def read_beats(out_messages: list[object]) -> list[Heartbeat]:
    return [m for m in out_messages if isinstance(m, Heartbeat) and m.seq]


def test_leader_read_needs_a_majority_of_heartbeat_answers() -> None:
    leader = leader_with(voters=(1, 2, 3, 4, 5))
    commit = leader.log.commit
    leader.read_index(b"r")
    seq = read_beats(flush(leader).messages)[0].seq
    leader.step(heartbeat_response(leader, 2, seq))
    leader.step(heartbeat_response(leader, 2, seq))  # the same follower twice
    leader.step(heartbeat_response(leader, 4, 0))  # an answer to a plain heartbeat
    assert flush(leader).read_states == []
    leader.step(heartbeat_response(leader, 5, seq))
    assert flush(leader).read_states == [ReadState(commit, b"r")]


def test_leader_read_index_is_the_commit_when_the_read_arrived() -> None:
    leader = leader_with()
    commit = leader.log.commit
    leader.read_index(b"r")
    seq = read_beats(flush(leader).messages)[0].seq
    index = leader.propose(b"w")
    flush(leader)
    leader.step(ack(leader, 2, index))
    assert leader.log.commit == index
    leader.step(heartbeat_response(leader, 2, seq))
    assert flush(leader).read_states == [ReadState(commit, b"r")]


def test_read_is_dropped_when_leader_is_deposed_before_confirmation() -> None:
    leader = leader_with()
    leader.read_index(b"r")
    seq = read_beats(flush(leader).messages)[0].seq
    leader.step(heartbeat(leader, src=3, term=leader.term + 1))
    flush(leader)
    leader.step(heartbeat_response(leader, 2, seq))  # stale now: an older term
    assert flush(leader).read_states == []


def test_single_voter_leader_serves_reads_at_once() -> None:
    node = RaftNode(1, InitialState.bootstrap([1]), config())
    elect(node)
    flush(node)
    node.read_index(b"r")
    assert flush(node).read_states == [ReadState(1, b"r")]


# -- ReadIndex on a follower --------------------------------------------------------------------


def test_read_index_without_a_known_leader_raises_not_leader() -> None:
    with pytest.raises(NotLeader) as info:
        new_node().read_index(b"r")
    assert info.value.leader is None


# -- leadership transfer ------------------------------------------------------------------------


def test_timeout_now_makes_a_follower_campaign_at_once_without_pre_vote() -> None:
    node = new_node(terms=(1,), term=1)
    node.step(heartbeat(node, src=3))
    flush(node)
    node.step(TimeoutNow(term=1, src=3, dst=1))
    assert node.role is Role.CANDIDATE
    assert (node.term, node.vote) == (2, 1)
    rd = node.ready()
    assert rd.hard_state is not None and (rd.hard_state.term, rd.hard_state.vote) == (2, 1)
    asks = [m for m in rd.messages if isinstance(m, RequestVote)]
    assert sorted(m.dst for m in asks) == [2, 3]
    assert all(m.transfer and not m.pre_vote and m.term == 2 for m in asks)


def test_timeout_now_is_ignored_by_a_node_that_is_not_a_voter() -> None:
    node = new_node(4, voters=(1, 2, 3), term=1)
    node.step(TimeoutNow(term=1, src=1, dst=4))
    assert node.role is Role.FOLLOWER and node.term == 1
    assert flush(node).messages == []


def test_single_voter_read_before_its_noop_commits_waits_for_it() -> None:
    node = RaftNode(1, InitialState.bootstrap([1]), config())
    elect(node)  # the no-op is not durable yet
    node.read_index(b"r")
    rd = node.ready()
    assert rd.read_states == []
    node.advance(rd)
    assert flush(node).read_states == [ReadState(1, b"r")]


def test_transfer_does_not_postpone_check_quorum() -> None:
    leader = leader_with()
    for n in range(3 * ELECTION):
        # Transfers asked for over and over, while no follower answers at all.
        if leader.role is Role.LEADER:
            leader.transfer_leadership(2 + n % 2)
        tick(leader, 1)
    assert leader.role is Role.FOLLOWER


def test_follower_ignores_a_read_index_response_not_from_its_leader() -> None:
    follower = new_node(2, terms=(1,), term=1)
    follower.step(heartbeat(follower, src=1, commit=1))
    flush(follower)
    follower.step(ReadIndexResponse(term=1, src=3, dst=2, context=b"x", index=1))
    assert flush(follower).read_states == []
    follower.step(ReadIndexResponse(term=1, src=1, dst=2, context=b"x", index=1))
    assert flush(follower).read_states == [ReadState(1, b"x")]

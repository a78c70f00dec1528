"""RaftNode ReadIndex (leader and follower) and leadership transfer (TimeoutNow)."""

from __future__ import annotations

import pytest
from core_helpers import (
    ELECTION,
    HEARTBEAT,
    Net,
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
    AppendEntries,
    Heartbeat,
    InitialState,
    NotLeader,
    ProposalDropped,
    RaftNode,
    ReadIndexRequest,
    ReadIndexResponse,
    ReadState,
    RequestVote,
    Role,
    TimeoutNow,
)

# -- ReadIndex on the leader --------------------------------------------------------------------


def read_beats(out_messages: list[object]) -> list[Heartbeat]:
    return [m for m in out_messages if isinstance(m, Heartbeat) and m.seq]


def test_leader_read_waits_for_its_noop_to_commit_then_for_a_heartbeat_quorum() -> None:
    leader = new_node(terms=(1, 1), term=1)
    elect(leader)
    flush(leader)
    leader.read_index(b"ctx")
    out = flush(leader)
    assert read_beats(out.messages) == [] and out.read_states == []
    leader.step(ack(leader, 2, 3))  # the no-op of this term commits
    assert leader.log.commit == 3
    out = flush(leader)
    beats = read_beats(out.messages)
    assert sorted(m.dst for m in beats) == [2, 3]
    assert out.read_states == []
    leader.step(heartbeat_response(leader, 3, beats[0].seq))
    assert flush(leader).read_states == [ReadState(3, b"ctx")]


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


def test_answer_to_a_later_round_releases_earlier_reads_in_order() -> None:
    leader = leader_with()
    leader.read_index(b"a")
    first = read_beats(flush(leader).messages)[0].seq
    leader.read_index(b"b")
    second = read_beats(flush(leader).messages)[0].seq
    assert second > first
    leader.step(heartbeat_response(leader, 2, first))
    assert [r.context for r in flush(leader).read_states] == [b"a"]
    leader.read_index(b"c")
    third = read_beats(flush(leader).messages)[0].seq
    leader.step(heartbeat_response(leader, 3, third))
    assert [r.context for r in flush(leader).read_states] == [b"b", b"c"]


def test_answer_to_an_earlier_round_does_not_release_a_later_read() -> None:
    leader = leader_with()
    leader.read_index(b"a")
    first = read_beats(flush(leader).messages)[0].seq
    leader.read_index(b"b")
    flush(leader)
    leader.step(heartbeat_response(leader, 2, first))
    assert [r.context for r in flush(leader).read_states] == [b"a"]


def test_answers_to_different_rounds_combine_into_a_quorum() -> None:
    leader = leader_with(voters=(1, 2, 3, 4, 5))
    leader.read_index(b"a")
    first = read_beats(flush(leader).messages)[0].seq
    leader.read_index(b"b")
    second = read_beats(flush(leader).messages)[0].seq
    leader.step(heartbeat_response(leader, 2, first))
    leader.step(heartbeat_response(leader, 3, second))
    # Node 3 answered after read "a" began too: with the leader, three of five confirmed "a".
    assert [r.context for r in flush(leader).read_states] == [b"a"]
    leader.step(heartbeat_response(leader, 4, second))
    assert [r.context for r in flush(leader).read_states] == [b"b"]


def test_periodic_heartbeats_carry_the_pending_read_round() -> None:
    leader = leader_with()
    leader.read_index(b"r")
    flush(leader)  # that round's heartbeats are lost
    beats = read_beats(tick(leader, HEARTBEAT).messages)
    assert sorted(m.dst for m in beats) == [2, 3]
    leader.step(heartbeat_response(leader, 2, beats[0].seq))
    assert [r.context for r in flush(leader).read_states] == [b"r"]


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


def test_leader_answers_a_followers_read_request_after_a_heartbeat_quorum() -> None:
    leader = leader_with()
    commit = leader.log.commit
    leader.step(ReadIndexRequest(term=leader.term, src=3, dst=1, context=b"f"))
    seq = read_beats(flush(leader).messages)[0].seq
    leader.step(heartbeat_response(leader, 2, seq))
    out = flush(leader)
    assert out.read_states == []
    assert [(m.dst, m.index, m.context) for m in out.of(ReadIndexResponse)] == [(3, commit, b"f")]


# -- ReadIndex on a follower --------------------------------------------------------------------


def test_follower_forwards_read_index_to_the_leader() -> None:
    node = new_node(term=4)
    node.step(heartbeat(node, src=3))
    flush(node)
    node.read_index(b"ctx")
    out = flush(node)
    assert [(m.dst, m.term, m.context) for m in out.of(ReadIndexRequest)] == [(3, 4, b"ctx")]


def test_follower_turns_the_leaders_response_into_a_read_state() -> None:
    node = new_node(term=4)
    node.step(heartbeat(node, src=3))
    node.step(ReadIndexResponse(term=4, src=3, dst=1, context=b"ctx", index=7))
    assert flush(node).read_states == [ReadState(7, b"ctx")]


def test_read_index_without_a_known_leader_raises_not_leader() -> None:
    with pytest.raises(NotLeader) as info:
        new_node().read_index(b"r")
    assert info.value.leader is None


def test_follower_read_round_trip_through_the_leader() -> None:
    net = Net([1, 2, 3])
    leader = net.elect(1)
    leader.propose(b"w")
    net.settle()
    net.tick(HEARTBEAT)  # followers learn the commit index
    net.nodes[2].read_index(b"q")
    net.settle()
    assert net.read_states[2] == [ReadState(leader.log.commit, b"q")]
    assert leader.log.commit == 2


# -- leadership transfer ------------------------------------------------------------------------


def test_transfer_to_caught_up_target_sends_timeout_now_and_drops_proposals() -> None:
    leader = leader_with()
    leader.transfer_leadership(3)
    out = flush(leader)
    assert [(m.dst, m.term) for m in out.of(TimeoutNow)] == [(3, leader.term)]
    with pytest.raises(ProposalDropped):
        leader.propose(b"x")


def test_transfer_to_lagging_target_first_brings_it_up_to_date() -> None:
    leader = leader_with(replicate=False)
    leader.step(ack(leader, 2, 1))
    flush(leader)
    leader.step(ack(leader, 3, 0))  # 3 has nothing of this term
    flush(leader)
    index = leader.propose(b"x")
    flush(leader)
    leader.transfer_leadership(3)
    out = flush(leader)
    assert out.of(TimeoutNow) == []
    leader.step(ack(leader, 3, index - 1))
    assert flush(leader).of(TimeoutNow) == []
    leader.step(ack(leader, 3, index))
    assert [m.dst for m in flush(leader).of(TimeoutNow)] == [3]


def test_transfer_that_does_not_finish_is_abandoned_after_an_election_timeout() -> None:
    leader = leader_with(replicate=False)
    leader.step(ack(leader, 2, 1))
    leader.transfer_leadership(3)  # 3 never answers
    for _ in range(ELECTION - 1):
        leader.tick()
        for m in flush(leader).messages:
            if m.dst == 2:
                leader.step(heartbeat_response(leader, 2))
    with pytest.raises(ProposalDropped):
        leader.propose(b"x")
    tick(leader, 1)
    assert leader.role is Role.LEADER
    leader.propose(b"x")


def test_transfer_needs_leadership_and_a_voting_target() -> None:
    follower = new_node(term=1)
    follower.step(heartbeat(follower, src=2))
    with pytest.raises(NotLeader) as info:
        follower.transfer_leadership(3)
    assert info.value.leader == 2
    leader = leader_with()
    with pytest.raises(ValueError):
        leader.transfer_leadership(9)
    leader.transfer_leadership(1)  # to itself: nothing to do
    assert flush(leader).of(TimeoutNow) == []
    leader.propose(b"still accepted")


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


def test_transfer_hands_leadership_over_in_a_cluster() -> None:
    net = Net([1, 2, 3])
    leader = net.elect(1)
    term = leader.term
    leader.propose(b"x")
    net.settle()
    leader.transfer_leadership(2)
    net.settle()
    assert net.nodes[2].role is Role.LEADER and net.nodes[2].term == term + 1
    assert leader.role is Role.FOLLOWER and leader.leader == 2
    assert net.nodes[3].leader == 2
    net.nodes[2].propose(b"y")
    net.settle()
    assert [e.data for e in net.applied[2]][-1] == b"y"
    assert any(isinstance(m, AppendEntries) and m.src == 2 for m in net.delivered)


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


def test_reads_arriving_together_share_one_heartbeat_round() -> None:
    leader = leader_with()
    for ctx in (b"a", b"b", b"c"):
        leader.read_index(ctx)
    beats = flush(leader).of(Heartbeat)
    assert sorted(m.dst for m in beats) == [2, 3]  # one round, not three
    leader.step(heartbeat_response(leader, 2, beats[0].seq))
    assert [r.context for r in flush(leader).read_states] == [b"a", b"b", b"c"]


def test_a_periodic_heartbeat_confirms_reads_queued_before_it() -> None:
    leader = leader_with()
    leader.read_index(b"r")
    flush(leader)  # the read's own round is lost
    beat = tick(leader, HEARTBEAT).of(Heartbeat, dst=3)[-1]
    leader.step(heartbeat_response(leader, 3, beat.seq))
    assert [r.context for r in flush(leader).read_states] == [b"r"]


def test_follower_ignores_a_read_index_response_not_from_its_leader() -> None:
    follower = new_node(2, terms=(1,), term=1)
    follower.step(heartbeat(follower, src=1, commit=1))
    flush(follower)
    follower.step(ReadIndexResponse(term=1, src=3, dst=2, context=b"x", index=1))
    assert flush(follower).read_states == []
    follower.step(ReadIndexResponse(term=1, src=1, dst=2, context=b"x", index=1))
    assert flush(follower).read_states == [ReadState(1, b"x")]

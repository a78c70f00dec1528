"""RaftNode elections: timeouts, pre-vote, campaigns, vote rules, stepping down, check-quorum."""

from __future__ import annotations

import pytest
from core_helpers import (
    ELECTION,
    ack,
    append,
    config,
    elect,
    flush,
    grant,
    heartbeat,
    heartbeat_response,
    leader_with,
    new_node,
    tick,
    tick_until,
)

from raftly.core import (
    AppendEntries,
    AppendEntriesResponse,
    EntryType,
    HardState,
    InitialState,
    InvariantError,
    RaftNode,
    RequestVote,
    RequestVoteResponse,
    Role,
)


def vote_request(to: RaftNode, *, src: int = 2, term: int, last_index: int, last_term: int,
                 pre_vote: bool = False, transfer: bool = False) -> RequestVote:
    return RequestVote(term=term, src=src, dst=to.id, last_log_index=last_index,
                       last_log_term=last_term, pre_vote=pre_vote, transfer=transfer)


def responses(node: RaftNode) -> list[RequestVoteResponse]:
    return flush(node).of(RequestVoteResponse)


# -- timeouts -----------------------------------------------------------------------------------


def test_follower_times_out_within_one_to_two_election_timeouts() -> None:
    seen = set()
    for seed in range(60):
        node = new_node(seed=seed)
        ticks, _ = tick_until(node, lambda out: bool(out.of(RequestVote)))
        assert ELECTION <= ticks < 2 * ELECTION
        seen.add(ticks)
    assert len(seen) >= 5  # randomized, not one fixed timeout


def test_timeouts_come_from_the_injected_rng_so_runs_repeat() -> None:
    first = [tick_until(new_node(seed=s), lambda o: bool(o.of(RequestVote)))[0] for s in range(8)]
    again = [tick_until(new_node(seed=s), lambda o: bool(o.of(RequestVote)))[0] for s in range(8)]
    assert first == again


def test_hearing_from_the_leader_resets_the_election_timer() -> None:
    node = new_node(seed=2)  # times out after exactly ELECTION ticks
    for _ in range(3):
        assert not tick(node, ELECTION - 1).of(RequestVote)
        node.step(heartbeat(node, src=2, term=0))
        flush(node)
    assert node.role is Role.FOLLOWER
    assert tick(node, 1).of(RequestVote) == []
    assert tick(node, ELECTION).of(RequestVote)


# -- pre-vote and campaign ----------------------------------------------------------------------


def test_pre_vote_asks_at_next_term_without_changing_term_or_vote() -> None:
    node = new_node(terms=(1, 3), term=3, vote=2)
    _, out = tick_until(node, lambda o: bool(o.of(RequestVote)))
    asks = out.of(RequestVote)
    assert sorted(m.dst for m in asks) == [2, 3]
    assert all(m.pre_vote and not m.transfer and m.term == 4 for m in asks)
    assert all((m.last_log_index, m.last_log_term) == (2, 3) for m in asks)
    assert node.role is Role.PRE_CANDIDATE
    assert (node.term, node.vote) == (3, 2)
    assert out.hard_states == []


def test_campaign_increments_term_and_persists_vote_in_the_ready_that_asks_for_votes() -> None:
    node = new_node(terms=(1,), cfg=config(pre_vote=False))
    for _ in range(2 * ELECTION):
        node.tick()
        if node.has_ready():
            break
    rd = node.ready()
    assert rd.hard_state == HardState(term=2, vote=1, commit=0)
    asks = [m for m in rd.messages if isinstance(m, RequestVote)]
    assert sorted(m.dst for m in asks) == [2, 3]
    assert all(m.term == 2 and not m.pre_vote for m in asks)
    assert node.role is Role.CANDIDATE


def test_pre_vote_majority_starts_real_campaign_with_vote_in_same_ready() -> None:
    node = new_node(terms=(1,))
    _, out = tick_until(node, lambda o: bool(o.of(RequestVote)))
    node.step(grant(out.of(RequestVote, dst=2)[0]))
    rd = node.ready()
    assert rd.hard_state == HardState(term=2, vote=1, commit=0)
    asks = [m for m in rd.messages if isinstance(m, RequestVote)]
    assert sorted(m.dst for m in asks) == [2, 3]
    assert all(m.term == 2 and not m.pre_vote for m in asks)
    assert node.role is Role.CANDIDATE


def test_pre_vote_rejected_by_majority_goes_back_to_follower_at_same_term() -> None:
    node = new_node(terms=(1,), term=1)
    tick_until(node, lambda o: bool(o.of(RequestVote)))
    for peer in (2, 3):
        node.step(RequestVoteResponse(term=1, src=peer, dst=1, granted=False, pre_vote=True))
    assert node.role is Role.FOLLOWER
    assert (node.term, node.vote) == (1, None)
    assert flush(node).hard_states == []


def test_candidate_that_times_out_again_campaigns_at_the_next_term() -> None:
    node = new_node(cfg=config(pre_vote=False))
    tick_until(node, lambda o: bool(o.of(RequestVote)))
    assert node.term == 1
    _, out = tick_until(node, lambda o: bool(o.of(RequestVote)))
    assert node.term == 2 and node.vote == 1
    assert {m.term for m in out.of(RequestVote)} == {2}


def test_stale_pre_vote_grant_does_not_count_in_the_real_election() -> None:
    node = new_node(voters=(1, 2, 3, 4, 5))
    _, out = tick_until(node, lambda o: bool(o.of(RequestVote)))
    pre = out.of(RequestVote)
    node.step(grant(pre[0]))
    node.step(grant(pre[1]))
    assert node.role is Role.CANDIDATE and node.term == 1
    node.step(grant(pre[2]))  # a late pre-vote grant at the candidate's term
    node.step(grant(pre[3]))
    assert node.role is Role.CANDIDATE


# -- becoming leader ----------------------------------------------------------------------------


def test_candidate_with_majority_becomes_leader_and_appends_noop_of_its_term() -> None:
    node = new_node(terms=(1, 1), term=1, cfg=config(pre_vote=False))
    _, out = tick_until(node, lambda o: bool(o.of(RequestVote)))
    node.step(grant(out.of(RequestVote, dst=3)[0]))
    assert node.role is Role.LEADER and node.leader == 1
    out = flush(node)
    assert [(e.index, e.term, e.type) for e in out.entries] == [(3, 2, EntryType.NOOP)]
    sends = out.of(AppendEntries)
    assert sorted(m.dst for m in sends) == [2, 3]
    for m in sends:
        assert (m.term, m.prev_index, m.prev_term) == (2, 2, 1)
        assert [e.index for e in m.entries] == [3]


def test_candidate_needs_a_majority_and_each_voter_counts_once() -> None:
    node = new_node(voters=(1, 2, 3, 4, 5), cfg=config(pre_vote=False))
    _, out = tick_until(node, lambda o: bool(o.of(RequestVote)))
    to2 = out.of(RequestVote, dst=2)[0]
    node.step(grant(to2))
    node.step(grant(to2))  # duplicated response
    assert node.role is Role.CANDIDATE
    node.step(RequestVoteResponse(term=1, src=9, dst=1, granted=True))  # not a member
    assert node.role is Role.CANDIDATE
    node.step(grant(out.of(RequestVote, dst=4)[0]))
    assert node.role is Role.LEADER


def test_candidate_rejected_by_majority_becomes_follower_keeping_its_vote() -> None:
    node = new_node(cfg=config(pre_vote=False))
    tick_until(node, lambda o: bool(o.of(RequestVote)))
    for peer in (2, 3):
        node.step(RequestVoteResponse(term=1, src=peer, dst=1, granted=False))
    assert node.role is Role.FOLLOWER
    assert (node.term, node.vote) == (1, 1)


def test_single_node_cluster_elects_itself_and_commits_proposals() -> None:
    node = RaftNode(1, InitialState.bootstrap([1]), config())
    ticks, out = tick_until(node, lambda o: bool(o.hard_states))
    assert ELECTION <= ticks < 2 * ELECTION
    assert node.role is Role.LEADER and node.term == 1
    assert out.messages == []
    index = node.propose(b"x")
    committed = out.committed
    out = flush(node)
    committed += out.committed
    assert [(e.index, e.type, e.data) for e in committed] == [
        (1, EntryType.NOOP, b""), (2, EntryType.COMMAND, b"x")]
    assert index == 2 and node.log.commit == 2
    assert out.hard_states[-1] == HardState(1, 1, 2)


# -- vote rules ---------------------------------------------------------------------------------


def test_vote_is_granted_to_up_to_date_candidate_and_persisted_with_the_response() -> None:
    node = new_node(terms=(1, 2), term=2)
    node.step(vote_request(node, term=3, last_index=2, last_term=2))
    rd = node.ready()
    assert rd.hard_state == HardState(term=3, vote=2, commit=0)
    assert [(m.dst, m.term, m.granted) for m in rd.messages] == [(2, 3, True)]


def test_only_one_vote_per_term_but_the_same_candidate_may_ask_again() -> None:
    node = new_node(terms=(1,), term=1)
    node.step(vote_request(node, src=2, term=2, last_index=1, last_term=1))
    assert [r.granted for r in responses(node)] == [True]
    node.step(vote_request(node, src=3, term=2, last_index=5, last_term=1))
    assert [r.granted for r in responses(node)] == [False]
    node.step(vote_request(node, src=2, term=2, last_index=1, last_term=1))
    assert [r.granted for r in responses(node)] == [True]
    assert node.vote == 2


def test_vote_recovered_from_hard_state_is_honoured_after_restart() -> None:
    node = new_node(term=5, vote=3)
    node.step(vote_request(node, src=2, term=5, last_index=9, last_term=5))
    assert [r.granted for r in responses(node)] == [False]
    assert node.vote == 3


@pytest.mark.parametrize(
    ("last_index", "last_term", "granted"),
    [
        (3, 2, True),  # same log
        (4, 2, True),  # same last term, longer
        (2, 2, False),  # same last term, shorter
        (1, 3, True),  # higher last term wins though shorter
        (9, 1, False),  # lower last term loses though longer
    ],
)
def test_vote_requires_candidate_log_at_least_as_up_to_date(
    last_index: int, last_term: int, granted: bool
) -> None:
    node = new_node(terms=(1, 2, 2), term=2)
    node.step(vote_request(node, term=3, last_index=last_index, last_term=last_term))
    assert [r.granted for r in responses(node)] == [granted]
    assert node.term == 3  # the higher term is adopted either way
    assert node.vote == (2 if granted else None)


def test_vote_request_of_lower_term_is_not_granted_and_changes_nothing() -> None:
    node = new_node(terms=(1, 4), term=4)
    node.step(vote_request(node, term=3, last_index=9, last_term=4))
    out = flush(node)
    assert not any(r.granted for r in out.of(RequestVoteResponse))
    assert (node.term, node.vote) == (4, None) and out.hard_states == []


def test_pre_vote_of_lower_term_is_answered_with_a_rejection_at_our_term() -> None:
    node = new_node(terms=(1, 4), term=4)
    node.step(vote_request(node, term=3, last_index=9, last_term=4, pre_vote=True))
    assert [(r.term, r.granted, r.pre_vote) for r in responses(node)] == [(4, False, True)]


def test_pre_vote_is_granted_without_changing_term_or_vote() -> None:
    node = new_node(terms=(1, 2), term=2, vote=1)
    node.step(vote_request(node, term=3, last_index=2, last_term=2, pre_vote=True))
    out = flush(node)
    assert [(r.term, r.granted, r.pre_vote) for r in out.of(RequestVoteResponse)] == [
        (3, True, True)]
    assert (node.term, node.vote) == (2, 1) and out.hard_states == []
    # A real vote request from another candidate in term 3 can still be granted.
    node.step(vote_request(node, src=3, term=3, last_index=2, last_term=2))
    assert [r.granted for r in responses(node)] == [True]


def test_pre_vote_is_refused_for_a_log_that_is_behind() -> None:
    node = new_node(terms=(1, 2), term=2)
    node.step(vote_request(node, term=3, last_index=5, last_term=1, pre_vote=True))
    assert [r.granted for r in responses(node)] == [False]
    assert node.term == 2


@pytest.mark.parametrize("pre_vote", [False, True])
def test_vote_request_of_higher_term_is_ignored_while_leader_is_in_lease(pre_vote: bool) -> None:
    node = new_node(terms=(1,), term=1, seed=0)  # times out after more than ELECTION ticks
    node.step(heartbeat(node, src=3))
    flush(node)
    tick(node, ELECTION - 1)
    node.step(vote_request(node, term=2, last_index=1, last_term=1, pre_vote=pre_vote))
    out = flush(node)
    assert out.messages == [] and out.hard_states == []
    assert (node.term, node.leader, node.role) == (1, 3, Role.FOLLOWER)
    # Once a whole election timeout passed without the leader, the lease is over.
    tick(node, 1)
    assert node.role is Role.FOLLOWER
    node.step(vote_request(node, term=2, last_index=1, last_term=1, pre_vote=pre_vote))
    assert [r.granted for r in responses(node)] == [True]


def test_vote_request_with_transfer_flag_is_considered_despite_the_lease() -> None:
    node = new_node(terms=(1,), term=1)
    node.step(heartbeat(node, src=3))
    flush(node)
    node.step(vote_request(node, term=2, last_index=1, last_term=1, transfer=True))
    assert [r.granted for r in responses(node)] == [True]
    assert (node.term, node.vote) == (2, 2)


def test_without_check_quorum_there_is_no_lease() -> None:
    node = new_node(terms=(1,), term=1, cfg=config(check_quorum=False))
    node.step(heartbeat(node, src=3))
    flush(node)
    node.step(vote_request(node, term=2, last_index=1, last_term=1))
    assert [r.granted for r in responses(node)] == [True]


def test_leader_in_lease_ignores_a_disruptive_vote_request() -> None:
    leader = leader_with()
    term = leader.term
    leader.step(vote_request(leader, src=3, term=term + 5, last_index=99, last_term=term))
    assert leader.role is Role.LEADER and leader.term == term
    assert flush(leader).of(RequestVoteResponse) == []


# -- stepping down ------------------------------------------------------------------------------


def test_leader_steps_down_on_a_response_of_higher_term() -> None:
    leader = leader_with()
    term = leader.term
    leader.step(AppendEntriesResponse(term=term + 1, src=2, dst=1, success=False, index=0))
    assert leader.role is Role.FOLLOWER
    assert (leader.term, leader.vote, leader.leader) == (term + 1, None, None)
    assert flush(leader).hard_states == [HardState(term + 1, None, leader.log.commit)]


def test_leader_steps_down_on_heartbeat_of_higher_term_and_follows_its_sender() -> None:
    leader = leader_with()
    leader.step(heartbeat(leader, src=3, term=leader.term + 1, commit=0))
    assert leader.role is Role.FOLLOWER and leader.leader == 3
    assert leader.progress(2) is None


def test_candidate_steps_down_on_vote_rejection_of_higher_term() -> None:
    node = new_node(cfg=config(pre_vote=False))
    tick_until(node, lambda o: bool(o.of(RequestVote)))
    node.step(RequestVoteResponse(term=7, src=2, dst=1, granted=False))
    assert node.role is Role.FOLLOWER and node.term == 7 and node.vote is None


@pytest.mark.parametrize("pre_vote", [False, True])
def test_candidate_hearing_a_leader_of_its_term_becomes_its_follower(pre_vote: bool) -> None:
    node = new_node(terms=(1,), term=1, cfg=config(pre_vote=pre_vote))
    tick_until(node, lambda o: bool(o.of(RequestVote)))
    node.step(append(node, src=3, prev_index=1, prev_term=1, commit=1))
    assert node.role is Role.FOLLOWER and node.leader == 3
    out = flush(node)
    assert [(m.dst, m.success, m.index) for m in out.of(AppendEntriesResponse)] == [(3, True, 1)]


# -- check-quorum -------------------------------------------------------------------------------


def test_leader_without_contact_from_a_majority_steps_down_after_election_timeout() -> None:
    leader = leader_with()
    assert leader.role is Role.LEADER
    tick(leader, ELECTION - 1)
    assert leader.role is Role.LEADER
    # The first check also counts the acks that made it leader; a full silent window follows.
    tick(leader, ELECTION + 1)
    assert leader.role is Role.FOLLOWER and leader.leader is None


def test_leader_hearing_from_a_majority_keeps_leading() -> None:
    leader = leader_with(voters=(1, 2, 3, 4, 5))
    for _ in range(5 * ELECTION):
        leader.tick()
        for m in flush(leader).messages:
            if m.dst in (2, 3):  # two followers plus the leader: a majority of five
                leader.step(heartbeat_response(leader, m.dst))
    assert leader.role is Role.LEADER


def test_leader_hearing_from_a_minority_steps_down() -> None:
    leader = leader_with(voters=(1, 2, 3, 4, 5))
    for _ in range(3 * ELECTION):
        leader.tick()
        for m in flush(leader).messages:
            if m.dst == 2:
                leader.step(heartbeat_response(leader, 2))
    assert leader.role is Role.FOLLOWER


def test_without_check_quorum_an_isolated_leader_keeps_leading() -> None:
    node = new_node(cfg=config(check_quorum=False))
    elect(node)
    tick(node, 10 * ELECTION)
    assert node.role is Role.LEADER


def test_freshly_elected_leader_counts_voters_heard_during_its_first_window() -> None:
    node = new_node()
    elect(node)
    flush(node)
    node.step(ack(node, 2, 0))
    tick(node, ELECTION)
    assert node.role is Role.LEADER


def test_impossible_role_transitions_raise() -> None:
    # Only a candidate becomes leader, and a leader can only step down to follower.
    follower = new_node()
    with pytest.raises(InvariantError, match="follower -> leader"):
        follower._become_leader()
    leader = new_node(1, voters=[1])
    tick(leader, 2 * ELECTION)
    assert leader.role is Role.LEADER
    with pytest.raises(InvariantError, match="leader -> candidate"):
        leader._become_candidate()
    with pytest.raises(InvariantError, match="leader -> pre-candidate"):
        leader._become_pre_candidate()


# -- reasons ------------------------------------------------------------------------------------


def test_each_change_of_role_or_term_says_why_in_role_reason() -> None:
    node = new_node(terms=(1,), term=1)
    assert node.role_reason == "started"
    _, out = tick_until(node, lambda o: bool(o.of(RequestVote)))
    assert node.role_reason == "election timeout: no message from a leader"
    node.step(grant(out.of(RequestVote, dst=2)[0]))
    assert node.role is Role.CANDIDATE and node.role_reason == "won the pre-vote"
    refused = new_node(terms=(1,), term=1)
    tick_until(refused, lambda o: bool(o.of(RequestVote)))
    for peer in (2, 3):
        refused.step(RequestVoteResponse(term=1, src=peer, dst=1, granted=False, pre_vote=True))
    assert refused.role_reason == "a majority refused its pre-vote"
    leader = leader_with()
    assert leader.role_reason == "won the election"
    tick(leader, 2 * ELECTION)
    assert leader.role is Role.FOLLOWER
    assert leader.role_reason == "check-quorum: no majority heard within an election timeout"
    deposed = leader_with()
    deposed.step(AppendEntriesResponse(term=deposed.term + 1, src=2, dst=1, success=False,
                                       index=0))
    assert deposed.role_reason == (f"higher term {deposed.term} from node 2 "
                                   "(AppendEntriesResponse)")
    candidate = new_node(terms=(1,), term=1, cfg=config(pre_vote=False))
    tick_until(candidate, lambda o: bool(o.of(RequestVote)))
    candidate.step(append(candidate, src=3, prev_index=1, prev_term=1, commit=1))
    assert candidate.role_reason == "node 3 leads term 2"
    follower = new_node(terms=(1,), term=1)
    follower.step(heartbeat(follower, src=2, term=1, commit=0))
    assert follower.role_reason == "heard from leader 2"

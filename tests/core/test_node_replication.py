"""RaftNode log replication: consistency check, backtracking, truncation, commit, pipelining,
batching, and the Ready/advance contract.

Multi-node scenarios live as transcripts in testdata/: Figure 8 (figure8.txt), fast
backtracking (fast_backtracking*.txt) and replication with slow disks (slow_disk.txt)."""

from __future__ import annotations

import pytest
from core_helpers import (
    ELECTION,
    HEARTBEAT,
    Net,
    ack,
    append,
    config,
    elect,
    entries_of,
    flush,
    heartbeat,
    heartbeat_response,
    leader_with,
    new_node,
    tick,
)

from raftly.core import (
    AppendEntries,
    AppendEntriesResponse,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InitialState,
    NotLeader,
    RaftNode,
    Role,
    SnapshotMeta,
)
from raftly.core.progress import ProgressState


def log_terms(node: RaftNode) -> list[int]:
    return [node.log.entry(i).term for i in range(1, node.log.last_index + 1)]


def replies(node: RaftNode) -> list[tuple[bool, int, int, int]]:
    return [(m.success, m.index, m.conflict_term, m.conflict_index)
            for m in flush(node).of(AppendEntriesResponse)]


# -- commit ------------------------------------------------------------------------------------


def test_leader_commits_only_once_its_own_copy_is_durable() -> None:
    node = RaftNode(1, InitialState.bootstrap([1]), config())
    elect(node)
    flush(node)
    node.propose(b"x")
    rd = node.ready()
    assert [e.data for e in rd.entries] == [b"x"]
    assert node.log.commit == 1  # only the no-op: 2 is not durable yet
    node.advance(rd)
    assert node.log.commit == 2
    assert [e.data for e in node.ready().committed_entries] == [b"x"]


# -- consistency check and hints -----------------------------------------------------------------


def test_follower_accepts_entries_after_matching_prev_and_acks_in_the_same_ready() -> None:
    node = new_node(terms=(1, 1), term=2)
    node.step(append(node, prev_index=2, prev_term=1, entries=entries_of(2, 2, start=3)))
    rd = node.ready()
    assert [(e.index, e.term) for e in rd.entries] == [(3, 2), (4, 2)]
    assert [(m.success, m.index) for m in rd.messages] == [(True, 4)]


def test_follower_rejects_mismatched_prev_with_conflict_term_and_its_first_index() -> None:
    node = new_node(terms=(1, 1, 2, 2, 2), term=3)
    node.step(append(node, prev_index=4, prev_term=3, entries=entries_of(3, start=5)))
    assert replies(node) == [(False, 4, 2, 3)]
    assert log_terms(node) == [1, 1, 2, 2, 2]


def test_follower_with_short_log_hints_its_last_index_plus_one() -> None:
    node = new_node(terms=(1, 1, 2), term=3)
    node.step(append(node, prev_index=7, prev_term=3))
    assert replies(node) == [(False, 7, 0, 4)]


def test_append_after_index_zero_always_matches() -> None:
    node = new_node(term=1)
    node.step(append(node, prev_index=0, prev_term=0, entries=entries_of(1, 1)))
    assert replies(node) == [(True, 2, 0, 0)]


def probing_leader() -> RaftNode:
    """Leader of term 5 with log 1@1 2@1 3@4 4@4 5@4, no-op 6@5, followers still probed."""
    leader = new_node(terms=(1, 1, 4, 4, 4), term=4)
    elect(leader)
    assert leader.term == 5
    out = flush(leader)
    first = out.of(AppendEntries, dst=2)
    assert [(m.prev_index, m.prev_term) for m in first] == [(5, 4)]
    return leader


def test_leader_ignores_stale_rejections() -> None:
    leader = probing_leader()
    reject = AppendEntriesResponse(term=5, src=2, dst=1, success=False, index=5,
                                   conflict_term=2, conflict_index=3)
    leader.step(reject)
    flush(leader)
    pr = leader.progress(2)
    assert pr is not None and pr.next == 3
    leader.step(reject)  # duplicated: the probe now in flight is for prev_index 2
    assert pr.next == 3 and flush(leader).of(AppendEntries, dst=2) == []
    leader.step(ack(leader, 2, 6))
    leader.step(AppendEntriesResponse(term=5, src=2, dst=1, success=False, index=4))
    assert (pr.match, pr.state) == (6, ProgressState.REPLICATE)


# -- truncation --------------------------------------------------------------------------------


def test_duplicated_append_never_truncates() -> None:
    node = new_node(terms=(1, 1, 1), term=1, commit=1)
    node.step(append(node, prev_index=1, prev_term=1, entries=entries_of(1, start=2)))
    assert replies(node) == [(True, 2, 0, 0)]
    assert log_terms(node) == [1, 1, 1]


def test_reordered_shorter_append_never_truncates_newer_entries() -> None:
    node = new_node(terms=(1,), term=1)
    longer = append(node, prev_index=1, prev_term=1, entries=entries_of(1, 1, 1, start=2))
    shorter = append(node, prev_index=1, prev_term=1, entries=entries_of(1, 1, start=2))
    node.step(longer)
    node.step(shorter)
    out = flush(node)
    assert [(m.success, m.index) for m in out.of(AppendEntriesResponse)] == [(True, 4), (True, 3)]
    assert log_terms(node) == [1, 1, 1, 1]
    assert [e.index for e in out.entries] == [2, 3, 4]  # each handed out to persist once


def test_real_conflict_truncates_the_suffix_and_appends() -> None:
    node = new_node(terms=(1, 1, 1, 1), term=1, commit=1)
    node.step(append(node, term=2, prev_index=2, prev_term=1, entries=entries_of(2, start=3)))
    out = flush(node)
    assert log_terms(node) == [1, 1, 2]
    assert [(e.index, e.term) for e in out.entries] == [(3, 2)]


def test_append_overlapping_committed_entries_never_truncates_below_commit() -> None:
    node = new_node(terms=(1, 1, 1, 1), term=2, commit=3)
    # A stale message from before the commit, claiming other terms under it: skipped, not merged.
    node.step(append(node, prev_index=0, prev_term=0, entries=entries_of(1, 2)))
    assert replies(node) == [(True, 2, 0, 0)]
    assert log_terms(node) == [1, 1, 1, 1]
    node.step(append(node, prev_index=1, prev_term=1, entries=entries_of(1, 1, 1, start=2)))
    assert replies(node) == [(True, 4, 0, 0)]
    assert log_terms(node) == [1, 1, 1, 1]


# -- commit on followers ------------------------------------------------------------------------


def test_follower_commit_is_capped_at_the_last_entry_the_append_vouched_for() -> None:
    # 3@2 and 4@2 are left over from a deposed leader: the new leader's commit 4 must not
    # commit them, since this message only proves entries up to 2 match.
    node = new_node(terms=(1, 1, 2, 2), term=3)
    node.step(append(node, term=3, prev_index=2, prev_term=1, commit=4))
    out = flush(node)
    assert node.log.commit == 2
    assert [e.index for e in out.committed] == [1, 2]
    node.step(append(node, term=3, prev_index=2, prev_term=1, entries=entries_of(3, start=3),
                     commit=4))
    out = flush(node)
    assert log_terms(node) == [1, 1, 3]
    assert node.log.commit == 3
    assert [(e.index, e.term) for e in out.committed] == [(3, 3)]


def test_heartbeat_advances_follower_commit_up_to_its_last_entry() -> None:
    node = new_node(terms=(1, 1, 1), term=1)
    node.step(heartbeat(node, commit=2))
    out = flush(node)
    assert node.log.commit == 2 and [e.index for e in out.committed] == [1, 2]
    assert out.hard_states == [HardState(1, None, 2)]
    node.step(heartbeat(node, commit=10))
    assert node.log.commit == 3
    node.step(heartbeat(node, commit=1))
    assert node.log.commit == 3  # never backwards


def test_leader_heartbeat_commit_is_capped_at_each_followers_match() -> None:
    leader = leader_with(replicate=False)
    leader.step(ack(leader, 2, 1))
    flush(leader)
    assert leader.log.commit == 1
    beats = tick(leader, HEARTBEAT).of(Heartbeat)
    assert sorted((m.dst, m.commit) for m in beats) == [(2, 1), (3, 0)]


def test_committed_entries_are_handed_out_exactly_once_and_in_order() -> None:
    node = new_node(term=1)
    applied: list[int] = []
    node.step(append(node, prev_index=0, prev_term=0, entries=entries_of(1, 1, 1)))
    applied += [e.index for e in flush(node).committed]
    for commit in (1, 1, 3, 2, 3):
        node.step(heartbeat(node, commit=commit))
        applied += [e.index for e in flush(node).committed]
    node.step(append(node, prev_index=3, prev_term=1, entries=entries_of(1, 1, start=4),
                     commit=5))
    applied += [e.index for e in flush(node).committed]
    node.step(append(node, prev_index=0, prev_term=0, entries=entries_of(1, 1), commit=5))
    applied += [e.index for e in flush(node).committed]
    assert applied == [1, 2, 3, 4, 5]


def test_every_node_applies_every_entry_once_in_order() -> None:
    net = Net([1, 2, 3])
    leader = net.elect(1)
    for n in range(20):
        leader.propose(f"c{n}".encode())
        if n % 3 == 0:
            net.settle()
    net.tick(HEARTBEAT)
    for i in (1, 2, 3):
        assert [e.index for e in net.applied[i]] == list(range(1, 22))
        assert [e.data for e in net.applied[i] if e.type is EntryType.COMMAND] == [
            f"c{n}".encode() for n in range(20)]


# -- proposals ----------------------------------------------------------------------------------


def test_propose_on_follower_raises_not_leader_naming_the_leader() -> None:
    node = new_node(term=1)
    node.step(heartbeat(node, src=3))
    with pytest.raises(NotLeader) as info:
        node.propose(b"x")
    assert info.value.leader == 3


def test_propose_without_known_leader_raises_not_leader_with_no_hint() -> None:
    with pytest.raises(NotLeader) as info:
        new_node().propose(b"x")
    assert info.value.leader is None


def test_proposals_between_two_readies_become_one_append_per_follower() -> None:
    leader = leader_with()
    first = leader.log.last_index + 1
    for n in range(10):
        assert leader.propose(f"c{n}".encode()) == first + n
    rd = leader.ready()
    assert [e.index for e in rd.entries] == list(range(first, first + 10))
    sends = [m for m in rd.early_messages if isinstance(m, AppendEntries)]
    assert sorted(m.dst for m in sends) == [2, 3]
    for m in sends:
        assert [e.index for e in m.entries] == list(range(first, first + 10))
        assert m.prev_index == first - 1


def test_append_respects_max_entries_per_message() -> None:
    leader = leader_with(cfg=config(max_entries_per_message=4))
    first = leader.log.last_index + 1
    for n in range(10):
        leader.propose(f"c{n}".encode())
    sends = flush(leader).of(AppendEntries, dst=2)
    assert sends and all(len(m.entries) <= 4 for m in sends)
    assert sends[0].entries[0].index == first


def test_replication_is_pipelined_up_to_max_inflight_messages() -> None:
    leader = leader_with(cfg=config(max_inflight_messages=3))
    first = leader.log.last_index + 1
    sent: list[AppendEntries] = []
    for n in range(5):
        leader.propose(f"c{n}".encode())
        sent += flush(leader).of(AppendEntries, dst=2)
    # Three messages went out without any ack; the window is full for entries 4 and 5.
    assert [[e.index for e in m.entries] for m in sent] == [[first], [first + 1], [first + 2]]
    leader.step(ack(leader, 2, first))
    more = flush(leader).of(AppendEntries, dst=2)
    assert [[e.index for e in m.entries] for m in more] == [[first + 3, first + 4]]


def test_lost_appends_are_resent_after_a_heartbeat_round_without_acks() -> None:
    leader = leader_with()
    first = leader.log.last_index + 1
    leader.propose(b"x")
    flush(leader)  # the AppendEntries to 2 is lost
    beat = tick(leader, HEARTBEAT).of(Heartbeat, dst=2)[-1]
    leader.step(heartbeat_response(leader, 2, beat.seq - 1))  # an older round proves nothing
    pr = leader.progress(2)
    assert pr is not None and pr.state is ProgressState.REPLICATE
    leader.step(heartbeat_response(leader, 2, beat.seq))
    assert pr is not None and pr.state is ProgressState.PROBE
    resent = flush(leader).of(AppendEntries, dst=2)
    assert [[e.index for e in m.entries] for m in resent] == [[first]]


def test_leader_sends_the_new_commit_index_to_a_follower_with_nothing_in_flight() -> None:
    leader = leader_with()
    index = leader.propose(b"x")
    flush(leader)
    leader.step(ack(leader, 2, index))
    assert leader.log.commit == index
    sends = flush(leader).of(AppendEntries)
    assert [(m.dst, m.commit, m.entries) for m in sends] == [(2, index, [])]


def test_stale_success_does_not_move_match_backwards() -> None:
    leader = leader_with()
    pr = leader.progress(2)
    assert pr is not None
    match = pr.match
    leader.step(ack(leader, 2, match - 1))
    assert pr.match == match


# -- stale terms --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["append", "heartbeat"])
def test_message_from_stale_leader_is_answered_with_our_higher_term(kind: str) -> None:
    node = new_node(terms=(1, 5), term=5)
    if kind == "append":
        node.step(append(node, src=3, term=3, prev_index=1, prev_term=1,
                         entries=entries_of(3, start=2)))
    else:
        node.step(heartbeat(node, src=3, term=3, commit=2))
    out = flush(node)
    assert [(m.dst, m.term, m.success) for m in out.of(AppendEntriesResponse)] == [(3, 5, False)]
    assert log_terms(node) == [1, 5] and node.log.commit == 0 and node.leader is None


def test_stale_leader_steps_down_on_that_answer() -> None:
    leader = leader_with()
    term = leader.term
    leader.step(AppendEntriesResponse(term=term + 2, src=3, dst=1, success=False, index=0))
    assert leader.role is Role.FOLLOWER and leader.term == term + 2


def test_without_pre_vote_and_check_quorum_stale_appends_are_dropped_silently() -> None:
    node = new_node(terms=(1, 5), term=5, cfg=config(pre_vote=False, check_quorum=False))
    node.step(heartbeat(node, src=3, term=3))
    assert flush(node).messages == []


@pytest.mark.parametrize("kind", ["append", "heartbeat"])
def test_node_that_cannot_campaign_answers_a_stale_leader_even_without_those_options(
        kind: str) -> None:
    # Node 4, a voter in the leader's configuration, has yet to receive its promotion: having
    # voted for a node ahead of it, its term rose. It will never campaign to tell the leader.
    node = new_node(4, voters=(1, 2, 3), terms=(1, 1), term=5,
                    cfg=config(pre_vote=False, check_quorum=False))
    if kind == "append":
        node.step(append(node, src=1, term=3, prev_index=2, prev_term=1))
    else:
        node.step(heartbeat(node, src=1, term=3))
    out = flush(node)
    assert [(m.dst, m.term, m.success) for m in out.of(AppendEntriesResponse)] == [(1, 5, False)]


# -- Ready / advance -----------------------------------------------------------------------------


def test_ready_twice_without_advance_raises() -> None:
    node = new_node()
    node.ready()
    with pytest.raises(RuntimeError):
        node.ready()


def test_advance_of_a_ready_that_is_not_outstanding_raises() -> None:
    node = new_node()
    rd = node.ready()
    node.advance(rd)
    with pytest.raises(RuntimeError):
        node.advance(rd)


def test_nothing_to_do_means_empty_ready() -> None:
    node = new_node(terms=(1,), term=1, commit=0)
    assert not node.has_ready()
    rd = node.ready()
    assert (rd.hard_state, rd.entries, rd.messages, rd.committed_entries, rd.read_states) == (
        None, [], [], [], [])


def test_advance_of_truncated_away_batch_does_not_mark_replacements_stable() -> None:
    node = new_node(terms=(1,), term=2)
    node.step(append(node, term=2, prev_index=1, prev_term=1, entries=entries_of(1, 1, start=2)))
    rd = node.ready()
    assert [(e.index, e.term) for e in rd.entries] == [(2, 1), (3, 1)]
    # Before the driver reports that batch durable, a new leader replaces entry 3.
    node.step(append(node, term=3, src=3, prev_index=2, prev_term=1,
                     entries=[Entry(3, 3, b"new")]))
    node.advance(rd)
    assert node.log.stable_index < 3
    rd2 = node.ready()
    assert [(e.index, e.term) for e in rd2.entries] == [(3, 3)]
    node.advance(rd2)
    assert node.log.stable_index == 3


def test_leader_own_entry_counts_for_commit_only_once_advanced() -> None:
    # Also in the slow_disk transcript; kept as a named property test so that a regression
    # fails with this name, not only as a transcript diff.
    leader = leader_with()
    index = leader.propose(b"x")
    rd = leader.ready()
    leader.step(ack(leader, 2, index))
    assert leader.log.commit == index - 1  # the leader's own copy is not durable yet
    leader.advance(rd)
    assert leader.log.commit == index


def test_hard_state_goes_out_only_when_it_changed() -> None:
    node = new_node(terms=(1,), term=1)
    node.step(heartbeat(node, commit=1))
    assert flush(node).hard_states == [HardState(1, None, 1)]
    node.step(heartbeat(node, commit=1))
    assert flush(node).hard_states == []


def test_heartbeat_answered_before_an_append_sent_after_it_keeps_the_follower_replicating() -> None:
    leader = leader_with()
    tick(leader, HEARTBEAT - 1)
    index = leader.propose(b"x")
    leader.tick()
    out = flush(leader)  # one Ready: heartbeats first, then the AppendEntries
    kinds = [type(m) for m in out.messages if m.dst == 2]
    assert kinds == [Heartbeat, AppendEntries]
    # The follower answers in order: the heartbeat, then the append (not yet seen by the leader).
    leader.step(heartbeat_response(leader, 2))
    pr = leader.progress(2)
    assert pr is not None and pr.state is ProgressState.REPLICATE
    assert flush(leader).of(AppendEntries, dst=2) == []  # nothing is resent
    leader.step(ack(leader, 2, index))
    assert pr.match == index


# -- recovery and membership ---------------------------------------------------------------------


def test_restarted_node_hands_out_recovered_committed_entries_once_without_new_hard_state() -> None:
    node = new_node(terms=(1, 1, 1), term=1, commit=2)
    out = flush(node)
    assert [e.index for e in out.committed] == [1, 2]
    assert out.hard_states == [] and out.entries == []


def test_node_outside_the_voters_never_campaigns() -> None:
    node = new_node(4, voters=(1, 2, 3))
    assert tick(node, 10 * ELECTION).messages == []
    assert node.role is Role.FOLLOWER


def test_config_entry_takes_effect_when_appended_and_reverts_when_truncated() -> None:
    node = new_node(terms=(1,), term=1)
    conf = Entry(2, 1, ConfState(frozenset({1, 2, 3, 4})).encode(), EntryType.CONFIG)
    node.step(append(node, prev_index=1, prev_term=1, entries=[conf]))
    assert node.voters == {1, 2, 3, 4}
    node.step(append(node, term=2, src=3, prev_index=1, prev_term=1,
                     entries=entries_of(2, start=2)))
    assert node.voters == {1, 2, 3}


def test_config_entry_in_the_recovered_log_sets_the_voters() -> None:
    conf = Entry(2, 1, ConfState(frozenset({1, 2})).encode(), EntryType.CONFIG)
    state = InitialState(HardState(1, None, 0), SnapshotMeta(conf=ConfState(frozenset({1, 2, 3}))),
                         [Entry(1, 1), conf])
    assert RaftNode(1, state, config()).voters == {1, 2}


def test_message_for_another_node_is_refused() -> None:
    node = new_node()
    with pytest.raises(ValueError):
        node.step(heartbeat(new_node(2)))


def test_status_reports_role_term_leader_and_positions() -> None:
    leader = leader_with()
    status = leader.status()
    assert (status.id, status.role, status.term, status.leader) == (1, Role.LEADER, 1, 1)
    assert (status.commit, status.applied, status.last_index) == (1, 1, 1)
    assert status.voters == {1, 2, 3}


def test_a_follower_far_behind_gets_a_full_window_of_appends_per_ack() -> None:
    leader = leader_with(cfg=config(max_entries_per_message=2, max_inflight_messages=3))
    first = leader.log.last_index + 1
    for n in range(12):
        leader.propose(f"c{n}".encode())
    sent = flush(leader).of(AppendEntries, dst=2)
    assert [len(m.entries) for m in sent] == [2, 2, 2]  # the window, not one message
    leader.step(ack(leader, 2, first + 1))  # frees one slot
    more = flush(leader).of(AppendEntries, dst=2)
    assert [[e.index for e in m.entries] for m in more] == [[first + 6, first + 7]]


def test_acknowledgements_of_entries_never_sent_are_ignored() -> None:
    leader = leader_with()
    last = leader.log.last_index
    leader.step(ack(leader, 2, last + 1000))
    leader.step(AppendEntriesResponse(term=leader.term, src=3, dst=1, success=False,
                                      index=last + 1000, conflict_index=last + 999))
    leader.propose(b"x")
    flush(leader)  # would raise if match or next had been pushed past the log
    pr = leader.progress(2)
    assert pr is not None and pr.match <= last


def test_a_lost_append_is_resent_even_when_heartbeat_answers_lag_a_round() -> None:
    leader = leader_with()
    leader.propose(b"x")
    flush(leader)  # the AppendEntries to 2 is lost
    late: list[Heartbeat] = []  # heartbeats to 2, each answered one round late
    for _ in range(10 * HEARTBEAT):
        out = tick(leader, 1)
        late += out.of(Heartbeat, dst=2)
        if out.of(AppendEntries, dst=2):
            return
        if len(late) >= 2:
            leader.step(heartbeat_response(leader, 2, late.pop(0).seq))
            if flush(leader).of(AppendEntries, dst=2):
                return
    raise AssertionError("the lost append was never resent")


def test_a_full_window_whose_acks_were_lost_is_resent_when_the_follower_answers() -> None:
    # The follower took the append but its ack was lost: nothing else would ever free the
    # window (the fuzzer found this once it drew windows of one or two messages).
    leader = leader_with(cfg=config(max_inflight_messages=1))
    first = leader.log.last_index + 1
    leader.propose(b"x")
    flush(leader)  # 2 takes the AppendEntries; its ack is lost
    leader.propose(b"y")
    assert flush(leader).of(AppendEntries, dst=2) == []  # the window is full
    beat = tick(leader, HEARTBEAT).of(Heartbeat, dst=2)[-1]
    leader.step(HeartbeatResponse(term=leader.term, src=2, dst=1, seq=beat.seq, accepted=first))
    # An empty append after what is in flight: its answer says how far 2 holds.
    past = flush(leader).of(AppendEntries, dst=2)
    assert [(m.prev_index, m.entries) for m in past] == [(first, [])]
    pr = leader.progress(2)
    assert pr is not None and len(pr.inflight) == 1  # the window is still a bound
    leader.step(ack(leader, 2, first))
    assert pr.match == first and not pr.inflight
    resumed = flush(leader).of(AppendEntries, dst=2)
    assert [[e.index for e in m.entries] for m in resumed] == [[first + 1]]


def test_a_follower_answering_heartbeats_never_gets_more_than_its_window() -> None:
    leader = leader_with(cfg=config(max_inflight_messages=2))
    for n in range(20):
        leader.propose(b"%d" % n)
        flush(leader)
        beat = tick(leader, HEARTBEAT).of(Heartbeat, dst=2)[-1]
        leader.step(HeartbeatResponse(term=leader.term, src=2, dst=1, seq=beat.seq,
                                      accepted=leader.log.last_index))
        flush(leader)
        pr = leader.progress(2)
        assert pr is not None and len(pr.inflight) <= 2


def test_a_full_window_with_nothing_new_sends_an_empty_append_to_learn_how_far_it_holds() -> None:
    leader = leader_with(cfg=config(max_inflight_messages=1))
    first = leader.log.last_index + 1
    leader.propose(b"x")
    flush(leader)  # 2 takes the AppendEntries; its ack is lost; nothing else is proposed
    beat = tick(leader, HEARTBEAT).of(Heartbeat, dst=2)[-1]
    leader.step(HeartbeatResponse(term=leader.term, src=2, dst=1, seq=beat.seq, accepted=first))
    past = flush(leader).of(AppendEntries, dst=2)
    assert [(m.prev_index, m.entries) for m in past] == [(first, [])]
    leader.step(ack(leader, 2, first))
    pr = leader.progress(2)
    assert pr is not None and pr.match == first and not pr.inflight


def test_acks_still_missing_a_round_later_with_room_in_the_window_get_one_empty_append() -> None:
    # A leader removing itself takes no proposals: if the ack of its last entry is lost, only
    # this empty append ever moves the follower's match (fuzz seeds 2696, 2927, 3151).
    leader = leader_with()
    first = leader.log.last_index + 1
    leader.propose(b"x")
    flush(leader)  # 2 takes the AppendEntries; its ack is lost; the window has room
    beats = []
    for _ in range(3):
        beat = tick(leader, HEARTBEAT).of(Heartbeat, dst=2)[-1]
        answer = HeartbeatResponse(term=leader.term, src=2, dst=1, seq=beat.seq, accepted=first)
        leader.step(answer)
        leader.step(answer)  # a duplicate answer of a round asks nothing more
        beats.append(flush(leader).of(AppendEntries, dst=2))
    # The first round may just be ahead of an ack still being fsynced: nothing is sent then.
    assert beats[0] == []
    assert [[(m.prev_index, m.entries) for m in sent] for sent in beats[1:]] == [
        [(first, [])], [(first, [])]]
    leader.step(ack(leader, 2, first))
    pr = leader.progress(2)
    assert pr is not None and pr.match == first and not pr.inflight


def test_a_lost_append_is_resent_under_steady_read_load() -> None:
    leader = leader_with()
    leader.propose(b"x")
    flush(leader)  # the AppendEntries to 2 is lost
    previous: Heartbeat | None = None
    for n in range(50):
        leader.read_index(f"r{n}".encode())  # each read opens a round before 2 answers
        beat = flush(leader).of(Heartbeat, dst=2)[-1]
        if previous is not None:
            leader.step(heartbeat_response(leader, 2, previous.seq))
            if flush(leader).of(AppendEntries, dst=2):
                return
        previous = beat
    raise AssertionError("the lost append was never resent")


def test_a_followers_heartbeat_answer_goes_early_and_says_what_it_took() -> None:
    follower = new_node(2, terms=(1,), term=1)
    follower.step(append(follower, src=1, prev_index=1, prev_term=1,
                         entries=[Entry(2, 1, b"x")]))
    follower.step(heartbeat(follower, src=1, seq=4))
    rd = follower.ready()
    answers = [m for m in rd.early_messages if isinstance(m, HeartbeatResponse)]
    assert [(m.seq, m.accepted) for m in answers] == [(4, 2)]  # before the fsync of entry 2
    assert [type(m) for m in rd.messages] == [AppendEntriesResponse]


def test_must_sync_for_entries_and_votes_but_not_for_a_commit_index_alone() -> None:
    follower = new_node(2, terms=(1,), term=1)
    follower.step(append(follower, src=1, prev_index=1, prev_term=1,
                         entries=[Entry(2, 1, b"x")]))
    rd = follower.ready()
    assert rd.must_sync  # an entry
    follower.advance(rd)
    follower.step(heartbeat(follower, src=1, commit=2))
    rd = follower.ready()
    assert rd.hard_state is not None and rd.hard_state.commit == 2
    assert not rd.must_sync  # only the commit index moved
    follower.advance(rd)
    follower.step(heartbeat(follower, src=3, term=2))  # a new term
    rd = follower.ready()
    assert rd.must_sync

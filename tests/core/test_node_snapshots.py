"""RaftNode snapshots and compaction: the driver's API (restored=, snapshot_meta, snapshot_saved,
compact, report_snapshot), a follower taking a snapshot from InstallSnapshot, and a leader
sending one to a follower that needs compacted entries.

The whole exchange between a leader and a far-behind follower is a transcript:
testdata/snapshot.txt."""

from __future__ import annotations

import random

import pytest
from core_helpers import (
    Output,
    ack,
    config,
    elect,
    flush,
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
    InstallSnapshot,
    InvariantError,
    RaftNode,
    Snapshot,
    SnapshotMeta,
)
from raftly.core.progress import ProgressState
from raftly.storage.memory import MemoryStorage


def _conf(*voters: int) -> Entry:
    return Entry(0, 0, ConfState(frozenset(voters)).encode(), EntryType.CONFIG)


def _node_with(entries: list[Entry], *, commit: int, voters: tuple[int, ...] = (1, 2, 3),
               restored: SnapshotMeta | None = None) -> RaftNode:
    """A follower recovered with ``entries`` (index and term given by position, term 1)."""
    log = [Entry(i, 1, e.data, e.type) for i, e in enumerate(entries, 1)]
    state = InitialState(HardState(1, None, commit),
                         SnapshotMeta(0, 0, ConfState(frozenset(voters))), log)
    return RaftNode(1, state, config(), random.Random(0), restored=restored)


def _install(node: RaftNode, meta: SnapshotMeta, *, src: int = 2, term: int = 1) -> None:
    node.step(InstallSnapshot(term=term, src=src, dst=node.id, snapshot=Snapshot(meta)))


def _commands(n: int) -> list[Entry]:
    return [Entry(0, 0, f"c{i}".encode()) for i in range(n)]


def _compacted_leader(entries: int = 6, compact_to: int = 4) -> RaftNode:
    """A leader of term 1 with ``entries`` commands acked by node 2 (node 3 holds the no-op
    only), a snapshot at the last one and its log compacted to ``compact_to``."""
    leader = leader_with()
    for i in range(entries):
        leader.propose(f"c{i}".encode())
    flush(leader)
    leader.step(ack(leader, 2, leader.log.last_index))
    flush(leader)
    applied = leader.status().applied
    leader.snapshot_saved(leader.snapshot_meta(applied))
    assert leader.compact(compact_to) is not None
    return leader


def _answer_heartbeat(leader: RaftNode, src: int = 3, accepted: int = 1) -> Output:
    """Tick a heartbeat round out of ``leader``; ``src`` answers it having taken ``accepted``."""
    out = tick(leader, leader.config.heartbeat_ticks)
    seq = out.of(Heartbeat, src)[-1].seq
    leader.step(HeartbeatResponse(term=leader.term, src=src, dst=leader.id, seq=seq,
                                  accepted=accepted))
    return flush(leader)


def _sending_snapshot_to_3() -> RaftNode:
    """A compacted leader that found node 3 lost its appends, and sent it the snapshot at 7."""
    leader = _compacted_leader()
    out = _answer_heartbeat(leader)
    assert [m.snapshot.meta.index for m in out.of(InstallSnapshot, 3)] == [7]
    return leader


# -- restored= ---------------------------------------------------------------------------------

def test_a_node_restored_from_a_snapshot_applies_only_after_it() -> None:
    meta = SnapshotMeta(3, 1, ConfState(frozenset({1, 2, 3})))
    node = _node_with(_commands(5), commit=1, restored=meta)
    status = node.status()
    assert (status.commit, status.applied, status.snapshot_index) == (3, 3, 3)
    assert [e.index for e in flush(node).committed] == []


@pytest.mark.parametrize("meta", [SnapshotMeta(6, 1), SnapshotMeta(3, 2)],
                         ids=["beyond the log", "term disagrees"])
def test_a_restored_snapshot_must_agree_with_the_log(meta: SnapshotMeta) -> None:
    with pytest.raises(InvariantError):
        _node_with(_commands(5), commit=5, restored=meta)


# -- snapshot_meta, snapshot_saved, compact ----------------------------------------------------

def test_snapshot_meta_names_the_configuration_in_effect_at_its_index() -> None:
    node = _node_with([Entry(0, 0), _conf(1, 2), *_commands(2), _conf(1, 2, 3, 4)], commit=5)
    flush(node)
    assert node.snapshot_meta(1).conf.voters == {1, 2, 3}
    assert node.snapshot_meta(3).conf.voters == {1, 2}
    assert node.snapshot_meta(5) == SnapshotMeta(5, 1, ConfState(frozenset({1, 2, 3, 4})))
    with pytest.raises(ValueError):
        node.snapshot_meta(6)  # not applied


def test_compact_needs_a_saved_snapshot_covering_it() -> None:
    node = _node_with(_commands(5), commit=5)
    flush(node)
    with pytest.raises(ValueError):
        node.compact(3)
    node.snapshot_saved(node.snapshot_meta(3))
    with pytest.raises(ValueError):
        node.compact(4)
    assert node.compact(3) == SnapshotMeta(3, 1, ConfState(frozenset({1, 2, 3})))
    assert node.compact(2) is None
    assert (node.status().first_index, node.log.term_at(2), node.log.term_at(3)) == (4, None, 1)


def test_an_older_snapshot_saved_later_is_ignored() -> None:
    node = _node_with(_commands(5), commit=5)
    flush(node)
    node.snapshot_saved(node.snapshot_meta(4))
    node.snapshot_saved(node.snapshot_meta(2))
    assert node.status().snapshot_index == 4


def test_after_compaction_the_log_start_configuration_is_the_fallback() -> None:
    # The configuration entry at 2 is compacted away; when a later configuration entry is
    # truncated, the node must fall back to it, not to the bootstrap configuration.
    node = _node_with([Entry(0, 0), _conf(1, 2), *_commands(2)], commit=4)
    flush(node)
    node.snapshot_saved(node.snapshot_meta(4))
    node.compact(3)
    new_conf = Entry(5, 1, ConfState(frozenset({1, 2, 3, 4})).encode(), EntryType.CONFIG)
    node.step(AppendEntries(term=1, src=2, dst=1, prev_index=4, prev_term=1,
                            entries=[new_conf], commit=4))
    assert node.voters == {1, 2, 3, 4}
    node.step(AppendEntries(term=2, src=3, dst=1, prev_index=4, prev_term=1,
                            entries=[Entry(5, 2, b"x")], commit=4))
    assert node.voters == {1, 2}


# -- a follower receiving InstallSnapshot -------------------------------------------------------

def test_a_follower_restores_a_snapshot_beyond_its_log() -> None:
    node = _node_with([Entry(0, 0), _conf(1, 2), *_commands(3)], commit=2)
    flush(node)
    meta = SnapshotMeta(9, 1, ConfState(frozenset({1, 2, 3, 4, 5})))
    _install(node, meta)
    assert node.voters == {1, 2, 3, 4, 5}
    rd = node.ready()
    assert rd.snapshot == meta and rd.must_sync
    assert rd.hard_state is not None and rd.hard_state.commit == 9
    assert rd.committed_entries == [] and rd.entries == [] and rd.early_messages == []
    assert rd.messages == [AppendEntriesResponse(term=1, src=1, dst=2, success=True, index=9)]
    node.advance(rd)
    status = node.status()
    assert (status.commit, status.applied, status.last_index, status.first_index,
            status.snapshot_index) == (9, 9, 9, 10, 9)
    # It goes on from the snapshot, and a truncated configuration falls back to the snapshot's.
    node.step(AppendEntries(term=1, src=2, dst=1, prev_index=9, prev_term=1,
                            entries=[Entry(10, 1, _conf(1, 2).data, EntryType.CONFIG)], commit=9))
    assert node.voters == {1, 2}
    node.step(AppendEntries(term=2, src=3, dst=1, prev_index=9, prev_term=1,
                            entries=[Entry(10, 2, b"x")], commit=9))
    assert node.voters == {1, 2, 3, 4, 5}
    rd = node.ready()
    assert rd.snapshot is None and [e.index for e in rd.entries] == [10]
    node.advance(rd)
    assert node.log.stable_index == 10 and node.log.entry(10).data == b"x"


def test_a_follower_replaces_a_conflicting_uncommitted_log_with_the_snapshot() -> None:
    node = _node_with(_commands(5), commit=2)
    flush(node)
    _install(node, SnapshotMeta(4, 2), term=2)
    rd = node.ready()
    assert rd.snapshot == SnapshotMeta(4, 2)
    node.advance(rd)
    assert (node.log.last_index, node.log.last_term) == (4, 2)


@pytest.mark.parametrize("index", [2, 3])
def test_a_stale_snapshot_changes_nothing(index: int) -> None:
    node = _node_with(_commands(5), commit=3)
    flush(node)
    _install(node, SnapshotMeta(index, 1))
    out = flush(node)
    assert out.hard_states == [] and out.entries == [] and node.status().snapshot_index == 0
    assert out.messages == [AppendEntriesResponse(term=1, src=1, dst=2, success=True, index=3)]


def test_a_snapshot_the_log_holds_only_commits_up_to_it() -> None:
    node = _node_with(_commands(5), commit=1)
    flush(node)
    _install(node, SnapshotMeta(4, 1))
    rd = node.ready()
    assert rd.snapshot is None and [e.index for e in rd.committed_entries] == [2, 3, 4]
    assert rd.messages == [AppendEntriesResponse(term=1, src=1, dst=2, success=True, index=4)]
    node.advance(rd)
    assert node.log.last_index == 5


def test_a_candidate_receiving_a_snapshot_of_its_term_follows_the_sender() -> None:
    node = new_node(1, terms=[1], cfg=config(pre_vote=False))
    for _ in range(100):
        node.tick()
        if node.role.value == "candidate":
            break
    assert node.role.value == "candidate"
    _install(node, SnapshotMeta(7, node.term), term=node.term)
    assert node.role.value == "follower" and node.leader == 2
    assert node.ready().snapshot == SnapshotMeta(7, node.term)


# -- a leader sending snapshots ------------------------------------------------------------------

def test_a_leader_sends_a_snapshot_to_a_follower_that_needs_compacted_entries() -> None:
    leader = _compacted_leader()
    # Node 3 answers a heartbeat without the appends sent to it: it needs entries from 2 on,
    # which are gone. The snapshot goes out as metadata: the driver attaches the data.
    out = _answer_heartbeat(leader)
    snapshots = out.of(InstallSnapshot, 3)
    assert [m.snapshot for m in snapshots] == [Snapshot(leader.snapshot_meta(7))]
    assert out.of(AppendEntries, 3) == []
    pr = leader.progress(3)
    assert pr is not None and pr.state is ProgressState.SNAPSHOT and pr.pending_snapshot == 7


def test_a_leader_does_not_compact_past_a_snapshot_it_is_still_sending() -> None:
    leader = _sending_snapshot_to_3()
    for i in range(5):
        leader.propose(f"more{i}".encode())
    flush(leader)
    leader.step(ack(leader, 2, leader.log.last_index))
    flush(leader)
    newest = leader.snapshot_meta(leader.status().applied)
    leader.snapshot_saved(newest)
    # Node 3 will need the entries after 7 once it installs the snapshot on its way.
    start = leader.compact(newest.index)
    assert start is not None and start.index == 7
    # Delivered, but not yet installed (a large restore): still needed after the snapshot.
    leader.report_snapshot(3, True)
    assert leader.compact(newest.index) is None
    leader.step(AppendEntriesResponse(term=1, src=3, dst=1, success=True, index=7))
    start = leader.compact(newest.index)
    assert start is not None and start.index == newest.index


def _with_newer_snapshot(leader: RaftNode) -> SnapshotMeta:
    leader.propose(b"more")
    flush(leader)
    leader.step(ack(leader, 2, leader.log.last_index))
    flush(leader)
    newest = leader.snapshot_meta(leader.status().applied)
    leader.snapshot_saved(newest)
    return newest


def test_a_failed_snapshot_transfer_does_not_hold_compaction_back() -> None:
    leader = _sending_snapshot_to_3()
    newest = _with_newer_snapshot(leader)
    leader.report_snapshot(3, False)
    start = leader.compact(newest.index)
    assert start is not None and start.index == newest.index


def test_a_follower_silent_for_an_election_timeout_does_not_hold_compaction_back() -> None:
    leader = _sending_snapshot_to_3()
    newest = _with_newer_snapshot(leader)
    leader.report_snapshot(3, True)  # delivered; then node 3 goes silent
    for _ in range(2 * leader.config.election_ticks):
        leader.tick()
        leader.step(HeartbeatResponse(term=1, src=2, dst=1, seq=0, accepted=0))
    assert leader.is_leader
    start = leader.compact(newest.index)
    assert start is not None and start.index == newest.index


def test_a_follower_receiving_a_snapshot_gets_heartbeats_and_no_appends() -> None:
    leader = _sending_snapshot_to_3()
    leader.propose(b"more")
    out = flush(leader)
    for _ in range(3):
        out = _answer_heartbeat(leader)
        assert out.of(AppendEntries, 3) == []
        assert out.of(InstallSnapshot, 3) == []  # one transfer at a time
    # A rejection that predates the snapshot does not send it back to probing.
    leader.step(AppendEntriesResponse(term=1, src=3, dst=1, success=False, index=7,
                                      conflict_index=2))
    assert flush(leader).messages == []
    # Its answer to the snapshot: replicate from there.
    leader.step(ack(leader, 3, 7))
    out = flush(leader)
    assert [e.index for m in out.of(AppendEntries, 3) for e in m.entries] == [8]
    assert leader.progress(3).state is ProgressState.REPLICATE


@pytest.mark.parametrize("ok", [True, False])
def test_report_snapshot_probes_again_after_the_followers_next_answer(ok: bool) -> None:
    leader = _sending_snapshot_to_3()
    leader.report_snapshot(3, ok)
    pr = leader.progress(3)
    assert pr is not None and pr.state is ProgressState.PROBE
    assert pr.next == (8 if ok else 2)
    assert flush(leader).messages == []  # waits for an answer: no storm of snapshots
    out = _answer_heartbeat(leader)
    if ok:
        assert [m.prev_index for m in out.of(AppendEntries, 3)] == [7]
    else:
        assert [m.snapshot.meta.index for m in out.of(InstallSnapshot, 3)] == [7]


def test_report_snapshot_is_ignored_unless_a_snapshot_is_on_its_way() -> None:
    leader = _compacted_leader()
    leader.report_snapshot(2, False)
    assert leader.progress(2).state is ProgressState.REPLICATE
    follower = new_node(2)
    follower.report_snapshot(1, True)  # not leading: nothing to do


def test_a_new_leader_with_a_compacted_log_sends_its_snapshot() -> None:
    node = _node_with(_commands(6), commit=6)
    flush(node)
    node.snapshot_saved(node.snapshot_meta(6))
    node.compact(5)
    elect(node)
    flush(node)
    node.step(AppendEntriesResponse(term=node.term, src=2, dst=1, success=False, index=6,
                                    conflict_index=1))
    out = flush(node)
    assert [m.snapshot.meta for m in out.of(InstallSnapshot, 2)] == [node.snapshot_meta(6)]


@pytest.mark.parametrize("driver_storage", [False, True], ids=["own-log", "driver-storage"])
def test_a_snapshot_restored_while_a_save_is_under_way_leaves_a_consistent_log(
        driver_storage: bool) -> None:
    storage = MemoryStorage()
    storage.bootstrap(ConfState(frozenset({1, 2, 3})))
    storage.save(HardState(1, None, 1), [Entry(i, 1, b"old") for i in range(1, 4)])
    state = storage.load()
    if driver_storage:
        state = InitialState(state.hard_state, state.snapshot)
    node = RaftNode(1, state, config(), random.Random(0),
                    storage=storage if driver_storage else None)
    node.step(AppendEntries(term=1, src=2, dst=1, prev_index=3, prev_term=1,
                            entries=[Entry(i, 1, b"slow") for i in range(4, 7)], commit=1))
    slow = node.ready()  # its save is under way while the snapshot arrives
    _install(node, SnapshotMeta(10, 2), term=2)
    node.step(AppendEntries(term=2, src=2, dst=1, prev_index=10, prev_term=2,
                            entries=[Entry(11, 2, b"new"), Entry(12, 2, b"new")], commit=10))
    storage.save(slow.hard_state, slow.entries)
    node.advance(slow)
    assert node.log.stable_index == 10  # the slow save holds nothing of the current log
    rd = node.ready()
    assert rd.snapshot == SnapshotMeta(10, 2) and [e.index for e in rd.entries] == [11, 12]
    storage.compact(rd.snapshot)
    storage.save(rd.hard_state, rd.entries)
    node.advance(rd)
    log = node.log
    assert (log.stable_index, log.last_index, log.term_at(10), log.term_at(6)) == (12, 12, 2, None)
    assert [e.data for e in log.slice(11, 12)] == [b"new", b"new"]
    assert (storage.first_index, storage.last_index) == (11, 12)

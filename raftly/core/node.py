"""``RaftNode``: the Raft algorithm as a pure, deterministic state machine (sans-IO).

The node is fed inputs (``tick``, ``step``, ``propose``, ``read_index``,
``transfer_leadership``) and hands back, through ``ready()``, everything the driver must do: the
hard state and entries to persist, the messages to send once they are durable, the committed
entries to apply and the reads that may now be served. The driver calls ``advance(ready)`` when it
has persisted that batch. There is no clock, no I/O and no global randomness here: the same
inputs and the same seeded ``random.Random`` always give the same outputs.

Beyond the Raft paper: pre-vote and check-quorum (so a node that was cut off cannot depose a
healthy leader, and a leader cut off from the majority steps down), fast log backtracking by
conflict term, pipelined replication with a bounded window, ReadIndex and leadership transfer.

Snapshots (Raft thesis, chapter 5): the driver snapshots its state machine and tells the node
(``snapshot_meta``, ``snapshot_saved``, ``compact``, ``RaftNode(restored=...)``); the node decides
when a follower needs one, sends the metadata in ``InstallSnapshot`` (the driver carries the
data and reports the transfer with ``report_snapshot``), and on a follower hands an accepted
snapshot out in ``Ready.snapshot``.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from operator import attrgetter

from raftly.core.config import Config
from raftly.core.errors import ConfChangeRefused, InvariantError, NotLeader, ProposalDropped
from raftly.core.log import LogReader, RaftLog
from raftly.core.membership import apply_change
from raftly.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from raftly.core.progress import Progress, ProgressState
from raftly.core.quorum import MajorityConfig, VoteResult
from raftly.core.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    InitialState,
    Member,
    NodeId,
    Snapshot,
    SnapshotMeta,
)


class Role(Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


# Enum members read for every message, as module constants: on Python 3.11 each ``Role.LEADER``
# goes through the enum metaclass's __getattr__ hook (about 70 ns; gone in Python 3.12).
_LEADER = Role.LEADER
_COMMAND = EntryType.COMMAND
_CONFIG = EntryType.CONFIG
_REPLICATE = ProgressState.REPLICATE
_PROBE = ProgressState.PROBE
_SNAPSHOT = ProgressState.SNAPSHOT
_entry_type = attrgetter("type")


@dataclass(slots=True, frozen=True)
class ReadState:
    """A read may be served once the state machine has applied ``index``."""

    index: int
    context: bytes


@dataclass(slots=True)
class Ready:
    """One batch of work for the driver, to be done in this order:

    1. send ``early_messages``: they may go before or while step 2 runs;
    2. persist ``entries`` (replacing any stored suffix they overlap), then ``hard_state`` if set,
       durably, in one group commit;
    3. send ``messages`` (they may depend on what step 2 made durable);
    4. apply ``committed_entries`` in order, and serve ``read_states`` once applied;
    5. call ``advance(ready)``.

    ``early_messages`` are a leader's AppendEntries and heartbeats, and a follower's answers to
    heartbeats. The leader writes its log in parallel with replicating it (Raft thesis, 10.2.1),
    which is safe because it counts itself towards a commit only for entries reported durable
    through ``advance``. A heartbeat answer only says "I follow you in this term" (and what it
    has taken from you so far), so a slow disk on a follower cannot make the leader step down.
    """

    hard_state: HardState | None
    entries: list[Entry]
    messages: list[Message]
    committed_entries: list[Entry]
    read_states: list[ReadState]
    early_messages: list[Message] = field(default_factory=list)
    must_sync: bool = False
    """Whether step 2 needs an fsync: entries, or a new term or vote. A change of the commit
    index alone may be written lazily (Raft keeps it volatile)."""
    snapshot: SnapshotMeta | None = None
    """A snapshot received from the leader that the node accepted. Before anything else of this
    Ready the driver makes its data durable as the newest snapshot, calls
    ``storage.compact(snapshot)`` (which drops every entry: the node accepts only a snapshot its
    log does not hold) and restores the state machine from it. ``must_sync`` is then True."""


@dataclass(slots=True, frozen=True)
class Status:
    """A snapshot of a node's volatile state, for operators and tests."""

    id: NodeId
    role: Role
    term: int
    leader: NodeId | None
    commit: int
    applied: int
    last_index: int
    voters: frozenset[NodeId]
    snapshot_index: int = 0
    """The index the newest snapshot the node holds covers (0 if none)."""
    first_index: int = 1
    """The first index the log can hold: the one after the log start."""
    learners: frozenset[NodeId] = frozenset()
    """The members that receive the log but do not vote."""


@dataclass(slots=True)
class _PendingRead:
    seq: int
    index: int
    requester: NodeId
    context: bytes


class RaftNode:
    """One Raft participant. Not thread-safe: a single driver feeds it."""

    def __init__(self, node_id: NodeId, state: InitialState, config: Config | None = None,
                 rng: random.Random | None = None, *, storage: LogReader | None = None,
                 restored: SnapshotMeta | None = None) -> None:
        """A node recovered from ``state``.

        With ``storage``, the node reads its durable entries through it, and the driver saves
        every Ready's entries into it before ``advance`` (``state.entries`` is then empty).
        Without, the node keeps ``state.entries`` and what the driver makes durable in memory.

        ``restored`` is the newest snapshot the driver holds, already restored into the state
        machine: the node applies from after it, and offers it to followers that need entries
        before the log start. It must lie within the log (from the log start to the last entry)
        and agree with the log's term there.
        """
        self.id = node_id
        self.config = config or Config()
        self._rng = rng if rng is not None else random.Random(node_id)
        hs = state.hard_state
        self.term = hs.term
        self.vote: NodeId | None = hs.vote
        self.log = RaftLog(state.snapshot, state.entries, hs.commit, storage)
        self.role = Role.FOLLOWER
        self._step_role: Callable[[Message], None] = self._step_follower
        self._tick_role: Callable[[], None] = self._tick_election
        self.leader: NodeId | None = None
        self.role_reason = "started"
        """Why the last change of role, term or known leader happened, in words for a log line
        (a higher term and who sent it, an election timeout, a check-quorum step-down, ...).
        Read-only for drivers; it changes nothing in the protocol."""
        self._votes: dict[NodeId, bool] = {}
        self._progress: dict[NodeId, Progress] = {}
        self._snapshot_conf = state.snapshot.conf
        self._conf_index = state.snapshot.index
        self.conf: ConfState = self._snapshot_conf
        """The configuration in use: the newest in the log, committed or not."""
        self.voters: frozenset[NodeId] = self.conf.voters
        self._quorum = MajorityConfig(self.voters)
        self._refresh_conf()
        self._snapshot: SnapshotMeta | None = None
        """The newest snapshot the driver holds durably: the one sent to followers."""
        self._received_snapshot: SnapshotMeta | None = None
        """A snapshot from the leader accepted and not yet handed out in a Ready."""
        if restored is not None:
            self.log.restored_at(restored)
            self._snapshot = restored
        self._pending_append: set[NodeId] = set()
        self._transferee: NodeId | None = None
        self._transfer_elapsed = 0

        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = 0
        self._reset_election_timer()

        self._messages: list[Message] = []
        self._early_messages: list[Message] = []
        self._accepted = 0
        """As a follower, the last index taken from this term's leader (durable or not)."""
        self._read_states: list[ReadState] = []
        self._heartbeat_seq = 0
        """The newest heartbeat round broadcast (it only grows, across terms too)."""
        self._heartbeat_acked: dict[NodeId, int] = {}
        """Per follower, the newest heartbeat round it answered while we lead."""
        self._read_round_needed = False
        self._pending_reads: deque[_PendingRead] = deque()
        self._reads_awaiting_commit: list[tuple[bytes, NodeId]] = []
        self._handed_out_hs = hs
        self._durable_term = hs.term
        self._outstanding: Ready | None = None

    # -- inspection -----------------------------------------------------------------------------

    @property
    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.commit)

    @property
    def conf_committed(self) -> bool:
        """Whether the configuration in use is committed (it is used from when it is appended,
        and an uncommitted one may still be undone by a new leader)."""
        return self._conf_index <= self.log.commit

    @property
    def is_leader(self) -> bool:
        return self.role is _LEADER

    def status(self) -> Status:
        return Status(self.id, self.role, self.term, self.leader, self.log.commit,
                      self.log.applied, self.log.last_index, self.voters,
                      self._snapshot.index if self._snapshot is not None else 0,
                      self.log.first_index, self.conf.learners)

    @property
    def snapshot_to_install(self) -> SnapshotMeta | None:
        """A snapshot this follower accepted from a leader that the next Ready will name: the
        driver must keep that snapshot's data until then."""
        return self._received_snapshot

    def progress(self, peer: NodeId) -> Progress | None:
        """The leader's view of ``peer``'s replication (None on a non-leader)."""
        return self._progress.get(peer)

    # -- inputs ---------------------------------------------------------------------------------

    def tick(self) -> None:
        """Advance logical time by one tick."""
        self._election_elapsed += 1
        self._tick_role()

    def propose(self, data: bytes) -> int:
        """Append a command to the leader's log; return its index. Raises NotLeader elsewhere."""
        return self._propose(data, _COMMAND)

    def propose_conf_change(self, change: ConfChange) -> int:
        """Append a CONFIG entry with the configuration after ``change``; return its index.

        Leader only (NotLeader elsewhere). One server changes at a time, and only once an
        entry of this leader's term is committed and no other change is uncommitted (the fix
        to single-server changes: a change decided under an older leader can no longer be in
        flight). Refusals raise ConfChangeRefused and change nothing. The configuration is used
        as soon as it is appended.
        """
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)
        refusal = self._conf_change_blocked()
        if refusal is not None:
            raise refusal
        new = apply_change(self.conf, change)
        if change.type is ConfChangeType.PROMOTE:
            lag = self._learner_lag(change.member.id)
            if lag is None or lag > self.config.promote_lag:
                behind = self.log.last_index - self._match_of(change.member.id)
                raise ConfChangeRefused(
                    "behind", f"learner {change.member.id} is behind by {behind} entries "
                              f"(at most {self.config.promote_lag} allowed)")
        return self._propose(new.encode(), EntryType.CONFIG)

    def read_index(self, context: bytes) -> None:
        """Ask for a linearizable read point; a ``ReadState`` with ``context`` comes in a Ready.

        ``context`` is the caller's and comes back untouched. On a follower the request is
        forwarded to the leader. A request is dropped if leadership changes before it is
        confirmed, so callers time out and retry.
        """
        if self.role is Role.LEADER:
            self._leader_read_index(context, self.id)
        elif self.leader is not None:
            self._send(ReadIndexRequest(term=self.term, src=self.id, dst=self.leader,
                                        context=context))
        else:
            raise NotLeader(None)

    def transfer_leadership(self, target: NodeId) -> None:
        """Hand leadership to ``target``: bring it up to date, then tell it to campaign at once.

        New proposals are refused until the transfer completes or times out (one election
        timeout), so it can never block the cluster for long.
        """
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)
        if target not in self.voters:
            raise ValueError(f"node {target} is not a voting member")
        if target == self.id or target == self._transferee:
            return
        self._transferee = target
        self._transfer_elapsed = 0
        if self._progress[target].match == self.log.last_index:
            self._send(TimeoutNow(term=self.term, src=self.id, dst=target))
        else:
            self._pending_append.add(target)

    # -- snapshots and compaction ------------------------------------------------------------------

    def snapshot_meta(self, index: int) -> SnapshotMeta:
        """The metadata of a snapshot of the state at applied ``index``: its term, and the
        configuration in effect there (log start <= ``index`` <= applied)."""
        log = self.log
        if not log.snapshot_index <= index <= log.applied:
            raise ValueError(f"no snapshot at {index}: the log starts at {log.snapshot_index} "
                             f"and {log.applied} is applied")
        term = log.term_at(index)
        assert term is not None  # held: between the log start and the applied index
        return SnapshotMeta(index, term, self._conf_at(index))

    def snapshot_saved(self, meta: SnapshotMeta) -> None:
        """The driver now holds ``meta`` durably: followers that need compacted entries get it.

        Ignored unless newer than the snapshot the node already offers.
        """
        if meta.index > self.log.applied:
            raise ValueError(f"snapshot at {meta.index} beyond the applied index "
                             f"{self.log.applied}")
        if self._snapshot is None or meta.index > self._snapshot.index:
            self._snapshot = meta

    def compact(self, index: int) -> SnapshotMeta | None:
        """Forget the log entries up to ``index``; return the new log start, or None if the
        log already starts there or later.

        ``index`` must be covered by the newest saved snapshot and durable. The driver passes
        the returned meta to ``storage.compact`` right after. A leader keeps the entries after
        a snapshot on its way to a follower until that follower confirms it: compacting past
        it would leave the follower needing another snapshot as soon as it installed this one,
        forever under a steady write load (hashicorp/raft #212). A failed transfer, or a
        follower silent for an election timeout (with check-quorum), releases that hold.
        """
        log = self.log
        for pr in self._progress.values():
            if pr.pending_snapshot > pr.match:
                index = min(index, pr.pending_snapshot)
        if index <= log.snapshot_index:
            return None
        if self._snapshot is None or index > self._snapshot.index or index > log.stable_index:
            raise ValueError(f"cannot compact to {index}: the newest snapshot covers "
                             f"{self._snapshot.index if self._snapshot else 0}, the log is "
                             f"durable to {log.stable_index}")
        meta = self.snapshot_meta(index)
        log.compact(meta)
        self._snapshot_conf = meta.conf
        return meta

    def report_snapshot(self, peer: NodeId, ok: bool) -> None:
        """The driver finished sending (``ok``) or gave up on the snapshot sent to ``peer``.

        Either way the leader probes that follower again: after the snapshot on success, from
        its match on failure. The probe waits for the follower's next answer (to the snapshot,
        or to a heartbeat), so that an unreachable follower is not sent snapshot after snapshot
        and a reachable one is not sent the same entries twice.
        """
        pr = self._progress.get(peer) if self.role is Role.LEADER else None
        if pr is None or pr.state is not ProgressState.SNAPSHOT:
            return
        pending = pr.pending_snapshot
        pr.become_probe()
        if ok:
            pr.next = max(pr.next, pending + 1)
        else:
            pr.pending_snapshot = 0  # nothing on its way: no reason to keep its entries
        pr.probe_sent = True

    def step(self, msg: Message) -> None:
        """Handle a message from another node."""
        if msg.dst != self.id:
            raise ValueError(f"message for node {msg.dst} delivered to node {self.id}")
        if (isinstance(msg, RequestVote) and msg.src not in self.voters
                and not self.log.is_up_to_date(msg.last_log_index, msg.last_log_term)):
            # A removed node that never learnt it lacks the committed entry that removed it, so
            # it is behind us: refused without taking its term, it cannot disrupt the voters.
            # One ahead of us may be a learner promoted by an entry we have yet to receive: it
            # is judged as any candidate, or the election it needs us for could never end.
            self._send(RequestVoteResponse(term=self.term, src=self.id, dst=msg.src,
                                           granted=False, pre_vote=msg.pre_vote))
            return
        if msg.term > self.term:
            if not self._accept_higher_term(msg):
                return
        elif msg.term < self.term:
            self._answer_stale(msg)
            return
        if isinstance(msg, RequestVote):
            self._handle_request_vote(msg)
        else:
            self._step_role(msg)

    # -- the Ready / advance contract ------------------------------------------------------------

    def has_ready(self) -> bool:
        """Whether ``ready()`` would return any work."""
        # Called after every input by every driver: kept free of allocations.
        if self._pending_append or self._read_round_needed:
            self._flush_appends()
        if self._messages or self._early_messages or self._read_states:
            return True
        log = self.log
        if (log.unstable_from <= log.last_index or log.applied < log.commit
                or self._received_snapshot is not None):
            return True
        hs = self._handed_out_hs
        return hs.term != self.term or hs.vote != self.vote or hs.commit != log.commit

    def take_early_messages(self) -> list[Message]:
        """A leader's appends and heartbeats, to send now rather than with the next Ready.

        A driver calls this after each input while a Ready is still being persisted, so that
        heartbeats and replication keep flowing however slow the disk is. What it returns
        depends on nothing that is not yet durable (see ``Ready``).
        """
        self._flush_appends()
        messages, self._early_messages = self._early_messages, []
        return messages

    def ready(self) -> Ready:
        """Hand out the pending work. The previous Ready must have been advanced."""
        if self._outstanding is not None:
            raise RuntimeError("ready() called before advance() of the previous Ready")
        self._flush_appends()
        log = self.log
        handed = self._handed_out_hs
        if handed.term == self.term and handed.vote == self.vote and handed.commit == log.commit:
            hs, changed = handed, False  # the common case, without building a HardState
        else:
            hs, changed = self.hard_state, True
        entries = log.take_unstable()
        snapshot = self._received_snapshot
        rd = Ready(
            hard_state=hs if changed else None,
            entries=entries,
            messages=self._messages,
            early_messages=self._early_messages,
            committed_entries=log.take_committed(),
            read_states=self._read_states,
            must_sync=(bool(entries) or snapshot is not None or not hs.same_election(handed)),
            snapshot=snapshot,
        )
        self._received_snapshot = None
        self._handed_out_hs = hs
        self._messages = []
        self._early_messages = []
        self._read_states = []
        self._outstanding = rd
        return rd

    def advance(self, rd: Ready) -> None:
        """The driver has persisted, sent and applied ``rd``."""
        if rd is not self._outstanding:
            raise RuntimeError("advance() of a Ready that is not the outstanding one")
        self._outstanding = None
        if rd.hard_state is not None:
            self._durable_term = rd.hard_state.term
        if rd.entries:
            last = rd.entries[-1]
            self.log.stable_to(last.index, last.term)
        if self.role is _LEADER:
            own = self._progress[self.id]
            if own.acknowledge(self.log.stable_index):
                self._maybe_commit()

    # -- role transitions -------------------------------------------------------------------------
    # Each sets the role, resets what belongs to the role it leaves, and swaps in the step and
    # tick handlers of the role it enters (etcd's becomeX), so no handler asks which role it is.

    def _reset(self, term: int) -> None:
        """Forget everything that belongs to one role or one term; keep the vote within a term."""
        if term != self.term:
            self.term = term
            self.vote = None
            self._accepted = 0
        self.leader = None
        self._votes = {}
        self._heartbeat_elapsed = 0
        self._progress.clear()
        self._pending_append.clear()
        self._transferee = None
        self._heartbeat_acked.clear()
        self._read_round_needed = False
        self._pending_reads.clear()
        self._reads_awaiting_commit.clear()

    def _become_follower(self, term: int, leader: NodeId | None, reason: str) -> None:
        self.role_reason = reason
        self._reset(term)
        self._reset_election_timer()
        self.role = Role.FOLLOWER
        self.leader = leader
        self._step_role, self._tick_role = self._step_follower, self._tick_election

    def _become_pre_candidate(self) -> None:
        """Ask whether we could win an election, without changing our term (pre-vote)."""
        if self.role is Role.LEADER:
            raise InvariantError("invalid transition: leader -> pre-candidate")
        self._reset(self.term)
        self._reset_election_timer()
        self.role = Role.PRE_CANDIDATE
        self._step_role, self._tick_role = self._step_candidate, self._tick_election
        self._votes[self.id] = True

    def _become_candidate(self) -> None:
        if self.role is Role.LEADER:
            raise InvariantError("invalid transition: leader -> candidate")
        self._reset(self.term + 1)
        self._reset_election_timer()
        self.role = Role.CANDIDATE
        self.vote = self.id
        self._step_role, self._tick_role = self._step_candidate, self._tick_election
        self._votes[self.id] = True

    def _become_leader(self) -> None:
        if self.role is not Role.CANDIDATE:
            raise InvariantError(f"invalid transition: {self.role.value} -> leader")
        self._reset(self.term)
        # A leader's election timer only paces check-quorum: it is not randomized.
        self._election_elapsed = 0
        self.role = Role.LEADER
        self.leader = self.id
        self._step_role, self._tick_role = self._step_leader, self._tick_leader
        next_index = self.log.last_index + 1
        self._progress = {peer: Progress(next_index) for peer in self.conf.ids}
        own = self._progress[self.id]
        own.acknowledge(self.log.stable_index)
        own.recent_active = True
        # The no-op of our term: once it commits, every earlier entry is committed too.
        self._append(EntryType.NOOP, b"")

    # -- elections ------------------------------------------------------------------------------

    def _promotable(self) -> bool:
        return self.id in self.voters

    def _reset_election_timer(self) -> None:
        self._election_elapsed = 0
        ticks = self.config.election_ticks
        self._randomized_timeout = self._rng.randrange(ticks, 2 * ticks)

    def _tick_election(self) -> None:
        if self._election_elapsed >= self._randomized_timeout and self._promotable():
            self._campaign(pre_vote=self.config.pre_vote, transfer=False,
                           reason="election timeout: no message from a leader")

    def _campaign(self, *, pre_vote: bool, transfer: bool, reason: str) -> None:
        self.role_reason = reason
        if pre_vote:
            self._become_pre_candidate()
            term = self.term + 1
        else:
            self._become_candidate()
            term = self.term
        if self._won_election():
            return
        for peer in sorted(self.voters - {self.id}):
            self._send(RequestVote(term=term, src=self.id, dst=peer,
                                   last_log_index=self.log.last_index,
                                   last_log_term=self.log.last_term,
                                   pre_vote=pre_vote, transfer=transfer))

    def _won_election(self) -> bool:
        """Count votes; move on if a majority granted or refused. Return whether decided."""
        result = self._quorum.vote_result(self._votes)
        if result is VoteResult.WON:
            if self.role is Role.PRE_CANDIDATE:
                self._campaign(pre_vote=False, transfer=False, reason="won the pre-vote")
            else:
                self.role_reason = "won the election"
                self._become_leader()
            return True
        if result is VoteResult.LOST:
            self._become_follower(self.term, None, "a majority refused its " + (
                "pre-vote" if self.role is Role.PRE_CANDIDATE else "vote"))
            return True
        return False

    def _accept_higher_term(self, msg: Message) -> bool:
        """Handle a message from a higher term; return whether to process it further."""
        if isinstance(msg, RequestVote):
            in_lease = (self.config.check_quorum and self.leader is not None
                        and self._election_elapsed < self.config.election_ticks)
            if in_lease and not msg.transfer:
                # A leader is alive: a candidate that cannot hear it must not depose it.
                return False
            if msg.pre_vote:
                return True  # a pre-vote never changes our term
        if isinstance(msg, RequestVoteResponse) and msg.pre_vote and msg.granted:
            return True  # granted pre-votes carry the term the candidate is about to take
        leader = msg.src if isinstance(msg, (AppendEntries, Heartbeat, InstallSnapshot)) else None
        self._become_follower(msg.term, leader,
                              f"higher term {msg.term} from node {msg.src} ({type(msg).__name__})")
        return True

    def _answer_stale(self, msg: Message) -> None:
        """Answer a message from an older term so its sender can catch up, or drop it."""
        from_leader = isinstance(msg, (AppendEntries, Heartbeat, InstallSnapshot))
        if from_leader and (self.config.check_quorum or self.config.pre_vote
                            or not self._promotable()):
            # A deposed or partitioned leader learns our term from this and steps down. Without
            # it a node whose term rose while cut off could never rejoin: its vote requests are
            # ignored by nodes that still hear the leader. Without either option a voter's own
            # campaign tells the leader our term instead; a node that cannot campaign (a voter
            # whose log still lacks its promotion, after voting for a removed node ahead of it)
            # has only this answer, or the leader would never reach it again.
            self._send(AppendEntriesResponse(term=self.term, src=self.id, dst=msg.src,
                                             success=False, index=0))
        elif isinstance(msg, RequestVote) and msg.pre_vote:
            self._send(RequestVoteResponse(term=self.term, src=self.id, dst=msg.src,
                                           granted=False, pre_vote=True))

    def _handle_request_vote(self, msg: RequestVote) -> None:
        if msg.pre_vote:
            could_vote = msg.term > self.term or self.vote == msg.src or (
                self.vote is None and self.leader is None)
        else:
            could_vote = self.vote == msg.src or (self.vote is None and self.leader is None)
        granted = could_vote and self.log.is_up_to_date(msg.last_log_index, msg.last_log_term)
        if granted and not msg.pre_vote:
            self.vote = msg.src
            self._election_elapsed = 0
        self._send(RequestVoteResponse(term=msg.term if granted else self.term, src=self.id,
                                       dst=msg.src, granted=granted, pre_vote=msg.pre_vote))

    def _step_candidate(self, msg: Message) -> None:
        if isinstance(msg, (AppendEntries, Heartbeat, InstallSnapshot)):
            self._become_follower(msg.term, msg.src, f"node {msg.src} leads term {msg.term}")
            self._step_follower(msg)
        elif isinstance(msg, RequestVoteResponse):
            if msg.pre_vote != (self.role is Role.PRE_CANDIDATE) or msg.src not in self.voters:
                return
            self._votes.setdefault(msg.src, msg.granted)
            self._won_election()
        elif isinstance(msg, TimeoutNow):
            self._handle_timeout_now(msg.src)

    def _handle_timeout_now(self, leader: NodeId) -> None:
        if self._promotable():
            self._campaign(pre_vote=False, transfer=True,
                           reason=f"leadership transfer from node {leader}")

    # -- leader ---------------------------------------------------------------------------------

    def _propose(self, data: bytes, kind: EntryType) -> int:
        if self.role is not _LEADER:
            raise NotLeader(self.leader)
        if self._transferee is not None:
            raise ProposalDropped(f"leadership transfer to node {self._transferee} in progress")
        if self.id not in self.voters:
            raise ProposalDropped("this leader is being removed from the configuration")
        return self._append(kind, data)

    def _append(self, kind: EntryType, data: bytes) -> int:
        index = self.log.last_index + 1
        entry = Entry(index, self.term, data, kind)
        self.log.append([entry])
        if kind is _CONFIG:
            self._refresh_conf()
        self._pending_append.update(self._progress)
        self._pending_append.discard(self.id)
        return index

    def _tick_leader(self) -> None:
        self._heartbeat_elapsed += 1
        if self._heartbeat_elapsed >= self.config.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._broadcast_heartbeat()
        if self._transferee is not None:
            self._transfer_elapsed += 1
            if self._transfer_elapsed >= self.config.election_ticks:
                self._transferee = None  # a transfer that did not finish in time is abandoned
        if self._election_elapsed >= self.config.election_ticks:
            self._election_elapsed = 0
            if self.config.check_quorum:
                self._release_silent_snapshot_holds()
                if not self._quorum_active():
                    self._become_follower(self.term, None, "check-quorum: no majority heard "
                                                           "within an election timeout")
                    return
        self._promote_caught_up_learner()

    def _release_silent_snapshot_holds(self) -> None:
        """A follower that said nothing for a whole election timeout is not installing the
        snapshot it was sent: its entries need not be kept from compaction (see compact)."""
        for pr in self._progress.values():
            if not pr.recent_active and pr.state is not ProgressState.SNAPSHOT:
                pr.pending_snapshot = 0

    def _quorum_active(self) -> bool:
        """Whether a majority was heard from since the last check; starts the next period."""
        active = {peer: pr.recent_active or peer == self.id for peer, pr in self._progress.items()}
        for pr in self._progress.values():
            pr.recent_active = False
        return self._quorum.vote_result(active) is VoteResult.WON

    def _broadcast_heartbeat(self) -> None:
        self._heartbeat_seq += 1
        self._read_round_needed = False  # this round confirms every read queued so far
        seq = self._heartbeat_seq
        for peer, pr in self._progress.items():
            if peer == self.id:
                continue
            if not pr.inflight or pr.match >= pr.heartbeat_mark:
                # A new mark only once the previous one is resolved: a follower whose answers
                # always lag a round behind must still have its lost appends found.
                pr.heartbeat_seq = seq
                pr.heartbeat_mark = pr.inflight[-1] if pr.inflight else 0
            self._send(Heartbeat(term=self.term, src=self.id, dst=peer,
                                 commit=min(pr.match, self.log.commit), seq=seq))

    def _flush_appends(self) -> None:
        """Send what inputs left waiting: one heartbeat round for all the reads queued since
        the last round, and to every follower marked as needing it, its appends."""
        if self._read_round_needed:
            self._broadcast_heartbeat()
        pending = self._pending_append
        if not pending:
            return
        for peer in sorted(pending) if len(pending) > 1 else pending:
            self._send_append(peer)
        pending.clear()

    def _send_append(self, peer: NodeId) -> None:
        pr = self._progress.get(peer)
        if pr is None:
            return
        window = self.config.max_inflight_messages
        # A replicating follower gets messages until its window is full, so one far behind
        # catches up at the pipeline's pace rather than one message per round trip.
        while (pr.can_send(window) and self._send_one_append(peer, pr)
               and pr.state is _REPLICATE):
            pass

    def _send_one_append(self, peer: NodeId, pr: Progress, *, empty: bool = False) -> bool:
        """Send one AppendEntries; return whether it carried entries.

        ``empty`` sends none, whatever is waiting: such a message takes no room in the window,
        and its answer says whether the follower holds everything sent so far.
        """
        log = self.log
        if (not empty and pr.state is _REPLICATE and pr.next > log.last_index
                and (pr.inflight or min(log.commit, pr.next - 1) <= pr.sent_commit)):
            # Nothing new to send (the common case after an ack), checked before any work. An
            # empty AppendEntries only to carry the commit index goes out when nothing is in
            # flight, so that it cannot overtake entries and be rejected.
            return False
        prev_index = pr.next - 1
        prev_term = log.term_at(prev_index)
        if prev_term is None:
            # The follower needs entries at or before the log start: only a snapshot helps.
            self._send_snapshot(peer, pr)
            return False
        entries = [] if empty else log.slice(pr.next, log.last_index,
                                             self.config.max_entries_per_message,
                                             self.config.max_bytes_per_message)
        last = prev_index + len(entries)
        commit = min(log.commit, last)
        pr.sent(last, bool(entries))
        pr.sent_commit = max(pr.sent_commit, commit)
        self._send(AppendEntries(term=self.term, src=self.id, dst=peer, prev_index=prev_index,
                                 prev_term=prev_term, entries=entries, commit=commit))
        return bool(entries)

    def _send_snapshot(self, peer: NodeId, pr: Progress) -> None:
        """Send the newest snapshot (metadata only: the driver attaches the data) and stop
        appending to ``peer`` until the driver reports the transfer done or failed."""
        snapshot = self._snapshot
        if snapshot is None or snapshot.index < self.log.snapshot_index:
            raise InvariantError(f"node {peer} needs entries at or before the log start "
                                 f"{self.log.snapshot_index}, and no snapshot covers them")
        pr.become_snapshot(snapshot.index)
        self._send(InstallSnapshot(term=self.term, src=self.id, dst=peer,
                                   snapshot=Snapshot(snapshot)))

    def _step_leader(self, msg: Message) -> None:
        pr = self._progress.get(msg.src)
        if pr is None:
            return  # not a member (any more)
        if isinstance(msg, AppendEntriesResponse):
            pr.recent_active = True
            self._handle_append_response(msg, pr)
        elif isinstance(msg, HeartbeatResponse):
            pr.recent_active = True
            pr.probe_sent = False
            behind = pr.match < self.log.last_index
            if (pr.state is ProgressState.REPLICATE and msg.seq >= pr.heartbeat_seq
                    and msg.accepted < pr.heartbeat_mark):
                # A round sent after those appends came back, yet the follower never took
                # them: on an ordered connection, they were lost. Resend from match.
                pr.become_probe()
            elif (behind and pr.state is not ProgressState.SNAPSHOT
                  and not pr.can_send(self.config.max_inflight_messages)):
                # A full window, yet the follower answers: if the acks of what it took were
                # lost, no other message would ever free the window. An empty append after all
                # that is in flight makes it say how far it holds; its answer frees the window.
                self._send_one_append(msg.src, pr, empty=True)
            elif (pr.state is ProgressState.REPLICATE and msg.seq >= pr.heartbeat_seq
                  and pr.match < pr.heartbeat_mark <= msg.accepted):
                # The follower took all that was in flight when the round went out, but the
                # acks are not here: not yet durable (they follow its fsync, this answer does
                # not), or lost. With room in the window nothing else would ask again if they
                # were lost, and with no new entry to send (a leader being removed takes no
                # proposals) match would never move. So if a later round finds them still
                # missing, an empty append makes it say how far it holds: at most one per
                # round, and none while acks are merely a round behind.
                if pr.settle_seq >= pr.heartbeat_seq and msg.seq > pr.settle_seq:
                    self._send_one_append(msg.src, pr, empty=True)
                pr.settle_seq = max(pr.settle_seq, msg.seq)
            if behind:
                self._pending_append.add(msg.src)
            self._ack_heartbeat(msg.seq, msg.src)
        elif isinstance(msg, ReadIndexRequest):
            self._leader_read_index(msg.context, msg.src)

    def _handle_append_response(self, msg: AppendEntriesResponse, pr: Progress) -> None:
        if msg.index > self.log.last_index:
            return  # about entries we never sent: a confused or hostile peer, not to be trusted
        if msg.success:
            moved = pr.acknowledge(msg.index)
            if pr.state is _SNAPSHOT and (
                    pr.match >= pr.pending_snapshot or pr.match >= self.log.snapshot_index):
                # It holds the snapshot, or enough of the log to go on from the log.
                pr.become_replicate()
            if moved:
                self._maybe_commit()
                if msg.src == self._transferee and pr.match == self.log.last_index:
                    self._send(TimeoutNow(term=self.term, src=self.id, dst=msg.src))
            # More entries, or the commit index, may be waiting for it: _send_append decides.
            self._pending_append.add(msg.src)
            return
        if (msg.index <= pr.match or pr.state is _SNAPSHOT
                or (pr.state is _PROBE and msg.index != pr.next - 1)):
            # A stale rejection: we already know better, or it predates the snapshot on its way
            # (which report_snapshot resolves).
            return
        next_index = msg.conflict_index
        if msg.conflict_term:
            ours = self.log.last_index_of_term(msg.conflict_term, msg.index)
            if ours is not None:
                next_index = ours + 1
        pr.become_probe()
        pr.next = max(min(next_index, msg.index), pr.match + 1)
        self._pending_append.add(msg.src)

    def _maybe_commit(self) -> None:
        quorum_index = self._quorum.committed_index(self._match_of)
        # Figure 8: only an entry of our own term commits by counting replicas.
        if quorum_index > self.log.commit and self.log.term_at(quorum_index) == self.term:
            self.log.commit_to(quorum_index)
            self._pending_append.update(p for p in self._progress if p != self.id)
            if self._reads_awaiting_commit:
                waiting, self._reads_awaiting_commit = self._reads_awaiting_commit, []
                for context, requester in waiting:
                    self._leader_read_index(context, requester)
            if self.id not in self.voters and self.log.commit >= self._conf_index:
                self._hand_over_and_step_down()

    def _match_of(self, peer: NodeId) -> int:
        pr = self._progress.get(peer)
        return pr.match if pr is not None else 0

    # -- reads ----------------------------------------------------------------------------------

    def _leader_read_index(self, context: bytes, requester: NodeId) -> None:
        if self.log.term_at(self.log.commit) != self.term:
            # Until our no-op commits we do not know the commit index of the cluster.
            self._reads_awaiting_commit.append((context, requester))
            return
        if self.voters == {self.id}:
            self._release_read(_PendingRead(0, self.log.commit, requester, context))
            return
        # The read is confirmed by the next heartbeat round: a quorum answering it proves we
        # still led after the read arrived. Reads arriving together share one round.
        seq = self._heartbeat_seq + 1
        self._pending_reads.append(_PendingRead(seq, self.log.commit, requester, context))
        self._read_round_needed = True

    def _ack_heartbeat(self, seq: int, peer: NodeId) -> None:
        if seq <= self._heartbeat_acked.get(peer, 0) or seq > self._heartbeat_seq:
            return  # old news, or an answer to a round never sent: a confused peer
        self._heartbeat_acked[peer] = seq
        if not self._pending_reads:
            return
        # A follower that answered round s acknowledged us after every round <= s began, so
        # the newest round answered by a quorum (counting ourselves) confirms all before it.
        confirmed = self._quorum.committed_index(self._heartbeat_round_answered)
        while self._pending_reads and self._pending_reads[0].seq <= confirmed:
            self._release_read(self._pending_reads.popleft())

    def _heartbeat_round_answered(self, peer: NodeId) -> int:
        return self._heartbeat_seq if peer == self.id else self._heartbeat_acked.get(peer, 0)

    def _release_read(self, read: _PendingRead) -> None:
        if read.requester == self.id:
            self._read_states.append(ReadState(read.index, read.context))
        else:
            self._send(ReadIndexResponse(term=self.term, src=self.id, dst=read.requester,
                                         context=read.context, index=read.index))

    # -- follower -------------------------------------------------------------------------------

    def _step_follower(self, msg: Message) -> None:
        if isinstance(msg, AppendEntries):
            self._heard_from_leader(msg.src)
            self._handle_append(msg)
        elif isinstance(msg, Heartbeat):
            self._heard_from_leader(msg.src)
            self.log.commit_to(min(msg.commit, self.log.last_index))
            self._send(HeartbeatResponse(term=self.term, src=self.id, dst=msg.src,
                                         seq=msg.seq, accepted=self._accepted))
        elif isinstance(msg, ReadIndexResponse):
            if msg.src == self.leader:
                self._read_states.append(ReadState(msg.index, msg.context))
        elif isinstance(msg, TimeoutNow):
            self._handle_timeout_now(msg.src)
        elif isinstance(msg, InstallSnapshot):
            self._heard_from_leader(msg.src)
            self._handle_install_snapshot(msg)

    def _heard_from_leader(self, leader: NodeId) -> None:
        if leader != self.leader:
            self.role_reason = f"heard from leader {leader}"
        self.leader = leader
        self._election_elapsed = 0

    def _handle_append(self, msg: AppendEntries) -> None:
        log = self.log
        prev_index, entries = msg.prev_index, msg.entries
        if prev_index < log.commit:
            # Entries up to our commit index are known to match the leader's: skip them.
            skip = min(log.commit - prev_index, len(entries))
            prev_index, entries = prev_index + skip, entries[skip:]
            if not entries:
                self._send(AppendEntriesResponse(term=self.term, src=self.id, dst=msg.src,
                                                 success=True, index=prev_index))
                self._accepted = max(self._accepted, prev_index)
                return
        elif not log.matches(prev_index, msg.prev_term):
            self._reject_append(msg)
            return
        last_new = log.merge(prev_index, entries)
        if not self._conf_is_current() or _has_config(entries):
            self._refresh_conf()
        log.commit_to(min(msg.commit, last_new))
        self._send(AppendEntriesResponse(term=self.term, src=self.id, dst=msg.src,
                                         success=True, index=last_new))
        self._accepted = max(self._accepted, last_new)

    def _handle_install_snapshot(self, msg: InstallSnapshot) -> None:
        """Take a snapshot from the leader unless the log already covers it.

        A snapshot holds only committed entries, so one the log holds (same index and term) is
        committed up to there by log matching, and one at or below the commit index is stale
        or a duplicate: neither replaces anything.
        """
        meta = msg.snapshot.meta
        log = self.log
        if meta.index > log.commit and not log.matches(meta.index, meta.term):
            log.restore(meta)
            self._snapshot_conf = meta.conf
            self._refresh_conf()
            self._received_snapshot = self._snapshot = meta
        elif meta.index > log.commit:
            log.commit_to(meta.index)
        self._send(AppendEntriesResponse(term=self.term, src=self.id, dst=msg.src,
                                         success=True, index=log.commit))
        self._accepted = max(self._accepted, log.commit)

    def _reject_append(self, msg: AppendEntries) -> None:
        log = self.log
        if msg.prev_index > log.last_index:
            conflict_term, conflict_index = 0, log.last_index + 1
        else:
            conflict_term = log.term_at(msg.prev_index) or 0
            conflict_index = log.first_index_of_term(msg.prev_index)
        self._send(AppendEntriesResponse(term=self.term, src=self.id, dst=msg.src, success=False,
                                         index=msg.prev_index, conflict_term=conflict_term,
                                         conflict_index=conflict_index))

    # -- membership -----------------------------------------------------------------------------

    def _conf_is_current(self) -> bool:
        """Whether the entry our configuration came from is still in the log."""
        index = self._conf_index
        return index <= self.log.snapshot_index or (
            index <= self.log.last_index and self.log.entry(index).type is _CONFIG)

    def _conf_at(self, index: int) -> ConfState:
        """The configuration in effect at ``index`` (log start <= ``index`` <= last index)."""
        if self._conf_index <= index:
            return self.conf  # the newest configuration in the log is at or before it
        return self._newest_conf(index)[0]

    def _newest_conf(self, index: int) -> tuple[ConfState, int]:
        """The newest configuration at or before ``index`` and where it is: the log start's
        if the log holds none there."""
        log = self.log
        for i in range(index, log.snapshot_index, -1):
            entry = log.entry(i)
            if entry.type is EntryType.CONFIG:
                return ConfState.decode(entry.data), i
        return self._snapshot_conf, log.snapshot_index

    def _refresh_conf(self) -> None:
        """Use the newest configuration in the log, or the snapshot's if the log holds none.

        Raft uses a configuration as soon as it is in the log, committed or not, and falls back
        when a conflicting suffix that held it is truncated.
        """
        log = self.log
        self.conf, self._conf_index = self._newest_conf(log.last_index)
        self.voters = self.conf.voters
        if self._quorum.voters != self.voters:
            self._quorum = MajorityConfig(self.voters)
        if self.role is Role.LEADER:
            members = self.conf.ids
            for peer in members - self._progress.keys():
                self._progress[peer] = Progress(log.last_index + 1)
            for peer in self._progress.keys() - members - {self.id}:
                del self._progress[peer]

    def _conf_change_blocked(self) -> ConfChangeRefused | None:
        """Why a leader may not start a change now, if it may not."""
        if self._conf_index > self.log.commit:
            return ConfChangeRefused("in_flight", "a configuration change is not yet committed")
        if self.term != self.log.term_at(self.log.commit):
            return ConfChangeRefused("not_ready", "no entry of this leader's term is committed "
                                                  "yet")
        return None

    def _learner_lag(self, peer: NodeId) -> int | None:
        """How many entries a learner the leader replicates to lacks (None: not known yet)."""
        pr = self._progress.get(peer)
        if pr is None or pr.state is not ProgressState.REPLICATE:
            return None
        return self.log.last_index - pr.match

    def _promote_caught_up_learner(self) -> None:
        """Promote the first learner that wants it and is caught up, if no change is due.

        Done by whichever node leads, on its own clock, so that a promotion survives leader
        changes and needs no operator.
        """
        if (not self.conf.learners or self._transferee is not None
                or self.id not in self.voters or self._conf_change_blocked() is not None):
            return
        for peer in sorted(self.conf.learners):
            member = self.conf.member(peer)
            lag = self._learner_lag(peer)
            if (member is None or member.promote) and lag is not None \
                    and lag <= self.config.promote_lag:
                self.propose_conf_change(ConfChange(ConfChangeType.PROMOTE, Member(peer)))
                return

    def _hand_over_and_step_down(self) -> None:
        """This leader's removal committed: let the most up-to-date voter take over at once
        (if one holds our whole log) rather than after an election timeout, and step down."""
        best = max(sorted(self.voters), key=self._match_of)
        if self._match_of(best) == self.log.last_index:
            self._send(TimeoutNow(term=self.term, src=self.id, dst=best))
        self._become_follower(self.term, None, "removed from the configuration")

    # -- plumbing -------------------------------------------------------------------------------

    def _send(self, msg: Message) -> None:
        if isinstance(msg, HeartbeatResponse) or (
                self.role is _LEADER and isinstance(msg, (AppendEntries, Heartbeat))
                and self._durable_term == self.term):
            # Replication depends on nothing this node has yet to make durable once its term
            # is (a leader's term became durable before it asked for votes, unless it needed
            # none), and its own entries count only once durable. A heartbeat answer promises
            # nothing at all (see Ready).
            self._early_messages.append(msg)
        else:
            self._messages.append(msg)


def _has_config(entries: list[Entry]) -> bool:
    """Whether any of ``entries`` is a CONFIG entry (iterated in C: no generator per call)."""
    return _CONFIG in map(_entry_type, entries)

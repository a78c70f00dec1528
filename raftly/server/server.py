"""``RaftServer``: the asyncio driver that runs one Raft node for real.

It owns the node's timers and the persist -> send -> apply -> advance loop of the core's Ready
contract, and the futures of callers waiting on proposals and reads. Disk writes run on a
dedicated thread, so timers and incoming messages keep being handled while an fsync is under way:
a leader's heartbeats and appends go out at once (they depend on nothing not yet durable), while
replies wait for the save they depend on. New proposals pile up in the core's log meanwhile and
the next Ready carries them all (group commit: one fsync for the whole batch).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import os
import random
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from raftly.core.config import Config
from raftly.core.errors import ConfChangeRefused, NotLeader, ProposalDropped
from raftly.core.messages import AppendEntries, Heartbeat, InstallSnapshot, Message
from raftly.core.node import RaftNode, Ready, Role
from raftly.core.state_machine import StateMachine, supports_snapshots
from raftly.core.types import ConfChange, ConfState, Entry, EntryType, Member, NodeId
from raftly.logevents import event, role_event
from raftly.server.disk import DiskThread
from raftly.server.observer import Observers, ProposalOutcome, ServerObserver
from raftly.server.snapshots import DEFAULT_SNAPSHOT_ENTRIES, SnapshotManager, SnapshotSettings
from raftly.storage.base import Storage, StorageError
from raftly.storage.snapshots import SnapshotStore
from raftly.transport.base import Transport

logger = logging.getLogger("raftly.server")

COMMIT_NOTICE_DELAY = 0.001
"""Seconds a leader holds an AppendEntries without entries (it only tells a follower the new
commit index, or asks how far it holds) before sending it, unless an append with entries to the
same follower supersedes it meanwhile: see ``RaftServer._send``."""


class ServerError(Exception):
    """Base of the errors a ``RaftServer`` raises to callers."""


class Busy(ServerError):
    """Too many proposals are waiting already; try again shortly."""


class OutcomeUnknown(ServerError):
    """The proposal may or may not be applied (timeout, or leadership lost while it was open)."""


class ServerStopped(ServerError):
    """The server is closed, or stopped after a fatal error (see its log)."""


class MembershipError(ServerError):
    """The leader refused a membership change; nothing changed.

    ``code`` is the core's reason (``ConfChangeRefused.code``): "in_flight", "not_ready",
    "exists", "unknown", "not_learner", "behind" or "last_voter".
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class TransferTimedOut(ServerError):
    """The leadership transfer's target did not lead within the timeout."""


@runtime_checkable
class PeerBook(Protocol):
    """A transport whose peer addresses can change at run time (``TcpTransport``)."""

    def set_peers(self, peers: Mapping[int, tuple[str, int]]) -> None: ...


@dataclass(slots=True, frozen=True)
class ServerStatus:
    id: NodeId
    role: str
    term: int
    leader: NodeId | None
    commit_index: int
    applied_index: int
    last_index: int
    voters: tuple[NodeId, ...]
    snapshot_index: int = 0
    """The last index the newest snapshot covers (0: none)."""
    first_index: int = 1
    """The first log entry held (entries before it are only in the snapshot)."""
    log_bytes: int = 0
    """The log's size in storage."""
    learners: tuple[NodeId, ...] = ()
    """The non-voting members of the configuration in use."""


@dataclass(slots=True)
class _Proposal:
    term: int
    future: asyncio.Future[object]


class RaftServer:
    """Runs a ``RaftNode`` with real storage and transport, applying to ``state_machine``.

    ``bootstrap`` is the initial membership (voter ids, or a whole ``ConfState`` with the
    members' names and addresses), used only if the storage is empty. Call
    ``await start()`` before anything else and ``await close()`` at the end.

    With a ``snapshots`` store and a state machine that has the snapshot hooks
    (``SnapshottingStateMachine``), the server snapshots once ``snapshot_entries`` entries were
    applied since the last snapshot and keeps ``snapshot_retain`` entries (default: as many)
    behind it; a restart restores the newest snapshot and replays the log after it. Without
    either, the log is never compacted.

    The configuration in use is ``conf``; each time it changes, a transport that can
    (``PeerBook``) gets the members' Raft addresses, and the ``on_conf_change`` callbacks run.
    Once a configuration that no longer holds this node commits, ``removed`` is set.
    """

    def __init__(
        self,
        node_id: NodeId,
        *,
        storage: Storage,
        transport: Transport,
        state_machine: StateMachine,
        bootstrap: frozenset[NodeId] | ConfState | None = None,
        config: Config | None = None,
        max_pending: int = 50_000,
        rng: random.Random | None = None,
        snapshots: SnapshotStore | None = None,
        snapshot_entries: int = DEFAULT_SNAPSHOT_ENTRIES,
        snapshot_retain: int | None = None,
        observers: Sequence[ServerObserver] = (),
    ) -> None:
        self.id = node_id
        self.config = config or Config()
        self.state_machine = state_machine
        self._storage = storage
        self._transport = transport
        self._bootstrap = bootstrap
        self._max_pending = max_pending
        self._rng = rng
        self._node: RaftNode | None = None
        self._disk = DiskThread(f"raftly-disk-{node_id}")
        self._last_leader_contact = 0.0
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._proposals: dict[int, _Proposal] = {}
        self._deadlines: list[tuple[float, int, int, _Proposal]] = []
        self._deadline_ids = itertools.count()  # ties never reach the unorderable _Proposal
        self._reads: dict[bytes, asyncio.Future[int]] = {}
        self._read_ids = itertools.count(1)
        # Read contexts must never repeat, not even across restarts: a late answer to a
        # previous incarnation's read must not satisfy a new one.
        self._read_nonce = os.urandom(8)
        self._applied = 0
        self._apply_waiters: dict[int, list[asyncio.Future[None]]] = {}
        self._fatal: BaseException | None = None
        self._early_scheduled = False
        self._held_appends: dict[NodeId, AppendEntries] = {}
        self._held_timer: asyncio.TimerHandle | None = None
        self._failed = asyncio.Event()
        self._closed = False
        self._role: Role | None = None
        self._leader: NodeId | None = None
        self._term = 0
        self._conf = ConfState()
        # A node only counts as removed after it was a member: a joining node's log holds the
        # configurations from before it was added.
        self._was_member = False
        self._removed = asyncio.Event()
        self._peer_book: dict[NodeId, tuple[str, int]] = {}
        self.on_conf_change: list[Callable[[ConfState], None]] = []
        # fsyncs counts the saves that must reach the disk (entries, or a new term or vote).
        self.stats = {"fsyncs": 0, "entries_persisted": 0, "readies": 0}
        self._observers = Observers(observers)
        settings = SnapshotSettings(snapshot_entries, snapshot_retain)  # validated even if unused
        self._snapshots: SnapshotManager | None = None
        if snapshots is not None:
            if supports_snapshots(state_machine):
                self._snapshots = SnapshotManager(
                    node_id, store=snapshots, state_machine=state_machine, storage=storage,
                    disk=self._disk, transport=transport, settings=settings, wake=self._wake.set,
                    observers=self._observers)
            else:
                logger.warning("node %s: %s has no snapshot hooks (capture, restore): log "
                               "compaction is off", node_id, type(state_machine).__name__)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._last_leader_contact = loop.time()
        if self._bootstrap is not None and not self._storage.bootstrapped:
            conf = (self._bootstrap if isinstance(self._bootstrap, ConfState)
                    else ConfState(frozenset(self._bootstrap)))
            await loop.run_in_executor(self._disk, self._storage.bootstrap, conf)
        state = await loop.run_in_executor(self._disk, self._storage.load)
        restored = None
        if self._snapshots is not None:
            state, restored = await self._snapshots.recover(state)
        elif state.snapshot.index > 0:
            # The entries up to there are only in a snapshot this server cannot restore:
            # starting would serve an empty state as if it were the real one.
            raise StorageError(
                f"node {self.id}: the log was compacted up to index {state.snapshot.index}, "
                "but this server has no snapshot store or its state machine no snapshot hooks "
                "(capture, restore), so it cannot restore the state")
        self._node = RaftNode(self.id, state, self.config, self._rng, restored=restored)
        if self._snapshots is not None and restored is not None:
            await self._snapshots.compact(self._node, restored.index)
        self._applied = self._node.log.applied
        logger.info("node %s starting: term %d, snapshot %d, %d entries, commit %d, members %s",
                    self.id, state.hard_state.term, restored.index if restored else 0,
                    len(state.entries), state.hard_state.commit, sorted(self._node.voters))
        self._track_conf(self._node)
        sink = self._snapshots.sink if self._snapshots is not None else None
        await self._transport.start(self._on_message, snapshot_sink=sink)
        self._spawn(self._tick_loop(), "ticker")
        self._spawn(self._ready_loop(), "ready loop")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._held_timer is not None:
            self._held_timer.cancel()
        for task in self._tasks:
            task.cancel()
        # A task that died has been reported by _stop_on_fatal already.
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._transport.close()
        if self._snapshots is not None:
            await self._snapshots.close()
        self._fail_waiters(ServerStopped("server closed"))
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._disk, self._storage.close)
        self._disk.shutdown(wait=True)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=f"raftly node {self.id}: {name}")
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._closed:
            return
        exc = task.exception()
        self._stop_on_fatal(exc or RuntimeError(f"{task.get_name()} returned unexpectedly"))

    def _stop_on_fatal(self, exc: BaseException) -> None:
        """A supervised task died: stop loudly rather than keep running half a node."""
        if self._fatal is not None:
            return
        self._fatal = exc
        self._failed.set()
        logger.critical("node %s stopped: %s", self.id, exc, exc_info=exc)
        for task in self._tasks:
            task.cancel()
        self._fail_waiters(ServerStopped(f"node stopped after a fatal error: {exc}"))

    @property
    def failure(self) -> BaseException | None:
        """The error that stopped the node, if one did."""
        return self._fatal

    async def wait_failed(self) -> BaseException:
        """Return (the error) once the node has stopped after a fatal error."""
        await self._failed.wait()
        assert self._fatal is not None
        return self._fatal

    @property
    def node(self) -> RaftNode:
        if self._node is None:
            raise ServerStopped("server not started")
        return self._node

    def _check_running(self) -> RaftNode:
        if self._fatal is not None:
            raise ServerStopped(f"node stopped after a fatal error: {self._fatal}")
        if self._closed:
            raise ServerStopped("server closed")
        return self.node

    # -- public API -----------------------------------------------------------------------------

    async def propose(self, command: bytes, *, timeout: float | None = 10.0) -> object:
        """Replicate ``command``; return what the state machine's ``apply`` returned for it.

        Raises NotLeader (with the leader's id if known), Busy, ProposalDropped (definitely not
        applied), or OutcomeUnknown on ``timeout`` (it may still be applied).
        """
        node = self._check_running()
        if len(self._proposals) >= self._max_pending:
            raise Busy(f"{len(self._proposals)} proposals already pending")
        index = node.propose(command)
        if not self._observers:
            return await self._await_entry(node, index, timeout)
        loop = asyncio.get_running_loop()
        began = loop.time()
        outcome = ProposalOutcome.TIMED_OUT
        try:
            result = await self._await_entry(node, index, timeout)
            outcome = ProposalOutcome.OK
            return result
        except ProposalDropped:
            outcome = ProposalOutcome.DROPPED
            raise
        finally:
            self._observers.proposal_finished(loop.time() - began, outcome)

    async def _await_entry(self, node: RaftNode, index: int, timeout: float | None) -> object:
        """Wait for this term's entry at ``index`` to be applied; see ``propose``."""
        loop = asyncio.get_running_loop()
        proposal = _Proposal(node.term, loop.create_future())
        earlier = self._proposals.get(index)
        if earlier is not None and not earlier.future.done():
            # Our log lost that entry, yet another leader may still hold and commit it.
            earlier.future.set_exception(OutcomeUnknown(
                f"entry {index} of term {earlier.term} was replaced in this node's log"))
        self._proposals[index] = proposal
        self._schedule_early()
        self._wake.set()
        if timeout is not None:
            # Swept by the ticker: cheaper than a timer per proposal on this hot path.
            heapq.heappush(self._deadlines,
                           (loop.time() + timeout, next(self._deadline_ids), index, proposal))
        try:
            return await proposal.future
        finally:
            if proposal.future.cancelled() and self._proposals.get(index) is proposal:
                del self._proposals[index]  # the caller gave up: stop counting it as pending

    def _expire_proposals(self, now: float) -> None:
        """Proposals past their deadline may still commit later: their outcome is unknown."""
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, _, index, proposal = heapq.heappop(deadlines)
            if not proposal.future.done():
                proposal.future.set_exception(
                    OutcomeUnknown(f"no outcome for entry {index} before its deadline"))
            if self._proposals.get(index) is proposal:
                del self._proposals[index]

    async def read(self, query: Callable[[StateMachine], object] | None = None, *,
                   timeout: float | None = 10.0) -> object:
        """A linearizable read: confirm leadership (ReadIndex), wait until applied, then query.

        ``query`` is called with the state machine; without it the state machine is returned.
        Works on followers too (the leader confirms the read index).
        """
        await self.wait_read_index(timeout=timeout)
        return query(self.state_machine) if query is not None else self.state_machine

    async def wait_read_index(self, *, timeout: float | None = 10.0) -> int:
        """Wait until the local state machine may serve a linearizable read; return the index."""
        node = self._check_running()
        context = self._read_nonce + next(self._read_ids).to_bytes(8, "big")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        node.read_index(context)  # raises NotLeader when no leader is known
        self._reads[context] = future
        self._schedule_early()
        self._wake.set()
        try:
            async with asyncio.timeout(timeout):
                index = await future
                await self.wait_applied(index)
        except TimeoutError:
            raise OutcomeUnknown(f"read not confirmed within {timeout}s") from None
        finally:
            self._reads.pop(context, None)
        return index

    async def wait_applied(self, index: int) -> None:
        """Return once the state machine has applied everything up to ``index``."""
        if self._applied >= index:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._apply_waiters.setdefault(index, []).append(future)
        await future

    def transfer_leadership(self, target: NodeId) -> None:
        self._check_running().transfer_leadership(target)
        self._wake.set()

    async def transfer_leadership_and_wait(self, target: NodeId, *,
                                           timeout: float = 10.0) -> None:
        """Hand leadership to ``target`` and return once this node sees it lead.

        Raises NotLeader (this node does not lead), ValueError (``target`` is not a voter) or
        TransferTimedOut.
        """
        if self.leader == target and (target != self.id or self.is_leader):
            return
        self.transfer_leadership(target)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # Polled once a tick: the transfer takes at least a round trip and an election.
        while not (self.leader == target and self._node is not None
                   and self._node.role is not Role.LEADER):
            if loop.time() > deadline:
                raise TransferTimedOut(f"node {target} did not take the lead within {timeout}s")
            self._check_running()
            await asyncio.sleep(self.config.tick_interval)

    async def change_membership(self, change: ConfChange, *, timeout: float | None = 10.0
                                ) -> int:
        """Propose ``change`` and return the index of its CONFIG entry once committed.

        Raises NotLeader, MembershipError (refused, nothing changed), ProposalDropped, or
        OutcomeUnknown on ``timeout`` (the change may still take effect).
        """
        node = self._check_running()
        try:
            index = node.propose_conf_change(change)
        except ConfChangeRefused as exc:
            raise MembershipError(exc.code, str(exc)) from None
        await self._await_entry(node, index, timeout)
        return index

    @property
    def conf(self) -> ConfState:
        """The configuration in use (the newest in the log, committed or not)."""
        return self._conf

    @property
    def removed(self) -> bool:
        """Whether a committed configuration no longer holds this node."""
        return self._removed.is_set()

    def note_removed(self, why: str) -> None:
        """Another member says this node is no longer in the configuration (``why``).

        A removed follower may never receive the entry that removed it: the leader stops
        replicating to it. Its driver learns it from the cluster instead and reports it here.
        """
        if not self._removed.is_set():
            logger.warning("node %s was removed from the cluster (%s)", self.id, why,
                           extra=event("node_removed", reason=why))
            self._removed.set()

    async def wait_removed(self) -> None:
        """Return once a committed configuration no longer holds this node."""
        await self._removed.wait()

    def status(self) -> ServerStatus:
        node = self.node
        st = node.status()
        role = "candidate" if st.role is Role.PRE_CANDIDATE else st.role.value
        return ServerStatus(self.id, role, st.term, st.leader, st.commit, self._applied,
                            st.last_index, tuple(sorted(st.voters)), st.snapshot_index,
                            st.first_index, self._log_bytes(), tuple(sorted(st.learners)))

    def _log_bytes(self) -> int:
        # The disk thread changes the segment list this sums; a read from the loop may be a
        # moment old, which a status may be.
        try:
            return self._storage.log_bytes
        except StorageError:
            return 0  # closed or failed: the status says so elsewhere

    @property
    def is_leader(self) -> bool:
        return self._node is not None and self._node.is_leader

    @property
    def pending_proposals(self) -> int:
        """Proposals accepted and still waiting for their outcome (at most ``max_pending``)."""
        return len(self._proposals)

    @property
    def leader(self) -> NodeId | None:
        return self._node.leader if self._node is not None else None

    @property
    def last_leader_contact(self) -> float:
        """The event loop's time of the last message a leader sent this node (its start if
        none): a learner keeps naming a leader that went silent, as it never campaigns."""
        return self._last_leader_contact

    # -- the driver -----------------------------------------------------------------------------

    def _on_message(self, msg: Message) -> None:
        if self._fatal is not None or self._closed or self._node is None:
            return
        if isinstance(msg, InstallSnapshot) and (self._snapshots is None
                                                 or not self._snapshots.arrived(msg)):
            logger.warning("node %s: dropped an InstallSnapshot from %s without its file",
                           self.id, msg.src, extra=event(
                               "snapshot_dropped", peer=msg.src, index=msg.snapshot.meta.index,
                               reason="its file did not arrive"))
            return
        try:
            self._node.step(msg)
        except Exception as exc:  # a bug, or a broken invariant: never go on half-working
            self._stop_on_fatal(exc)
            return
        if isinstance(msg, InstallSnapshot):
            assert self._snapshots is not None  # checked above
            self._snapshots.settle(self._node)
        if isinstance(msg, (AppendEntries, Heartbeat, InstallSnapshot)) and (
                msg.src == self._node.leader):
            self._last_leader_contact = asyncio.get_running_loop().time()
        self._send_early()
        self._wake.set()

    def _send_early(self) -> None:
        """Send a leader's appends and heartbeats now, even while a save is under way."""
        self._early_scheduled = False
        if self._node is None or self._closed or self._fatal is not None:
            return
        self._send(self._node.take_early_messages())

    def _send(self, messages: list[Message]) -> None:
        for msg in messages:
            if type(msg) is AppendEntries:
                # An append without entries only tells a follower the new commit; the caller
                # woken by that commit usually proposes again a few loop iterations later, and
                # that append carries the commit too: see _hold_append.
                if not msg.entries:
                    self._hold_append(msg)
                    continue
                if self._held_appends:
                    self._held_appends.pop(msg.dst, None)
            if isinstance(msg, InstallSnapshot):
                # The core names the snapshot; its data travels on the side, in chunks.
                assert self._snapshots is not None and self._node is not None
                self._snapshots.send(msg, self._node)
            else:
                self._transport.send(msg)

    def _hold_append(self, msg: AppendEntries) -> None:
        """Send ``msg`` (an append without entries) after COMMIT_NOTICE_DELAY, unless an append
        with entries to the same follower, or a newer empty one, supersedes it meanwhile.

        This saves two messages and two answers per commit at low concurrency. The superseding
        append carries min(commit, its last index), usually the whole commit; if not (a probe
        capped by the message limits), the follower learns the rest from its successors or the
        next heartbeat: dropping a message is always safe in Raft.
        """
        self._held_appends[msg.dst] = msg
        if self._held_timer is None:
            self._held_timer = asyncio.get_running_loop().call_later(
                COMMIT_NOTICE_DELAY, self._send_held_appends)

    def _send_held_appends(self) -> None:
        self._held_timer = None
        held, self._held_appends = self._held_appends, {}
        if self._closed or self._fatal is not None:
            return
        try:
            for msg in held.values():
                self._transport.send(msg)
        except Exception as exc:  # a bug (a timer callback has no supervisor): stop, as _send would
            self._stop_on_fatal(exc)

    def _schedule_early(self) -> None:
        """Send early messages once this loop iteration's other callers have had their turn,
        so that proposals made together still share one AppendEntries per follower."""
        if not self._early_scheduled:
            self._early_scheduled = True
            asyncio.get_running_loop().call_soon(self._send_early)

    async def _tick_loop(self) -> None:
        interval = self.config.tick_interval
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while True:
            next_tick += interval
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
            self.node.tick()
            self._send_early()
            self._expire_proposals(loop.time())
            self._wake.set()

    async def _ready_loop(self) -> None:
        node = self.node
        loop = asyncio.get_running_loop()
        snapshots = self._snapshots
        while True:
            await self._wake.wait()
            self._wake.clear()
            if snapshots is not None:
                await snapshots.finish_taken(node, self._applied)
            while node.has_ready():
                rd = node.ready()
                self._send(rd.early_messages)
                if rd.snapshot is not None:
                    assert snapshots is not None  # only a leader that snapshots sends one
                    await snapshots.install(rd.snapshot)
                    self._installed(rd.snapshot.index)
                    self._check_removed(node, rd.snapshot.conf)
                if rd.must_sync:
                    began = loop.time()
                    await self._disk.run(self._storage.save, rd.hard_state, rd.entries)
                    if self._observers.wants_saves:
                        self._observers.saved(loop.time() - began, len(rd.entries))
                    self.stats["fsyncs"] += 1
                    self.stats["entries_persisted"] += len(rd.entries)
                elif rd.hard_state is not None:
                    # A change of the commit index alone does no I/O (Storage contract: it is
                    # written lazily), so it skips the thread hop of a real save. Nothing else
                    # calls the storage meanwhile: every save is awaited here, in order.
                    self._storage.save(rd.hard_state, ())
                self.stats["readies"] += 1
                self._track_conf(node)
                self._send(rd.messages)
                if rd.committed_entries:
                    await self._apply(rd.committed_entries)
                    if snapshots is not None:
                        snapshots.maybe_take(node, self._applied)
                self._resolve_reads(rd)
                node.advance(rd)
                self._note_role_change(node)

    async def _apply(self, entries: list[Entry]) -> None:
        apply = self.state_machine.apply
        proposals = self._proposals
        for n, entry in enumerate(entries):
            result: object = None
            if entry.type is EntryType.COMMAND:
                result = apply(entry.index, entry.data)
            elif entry.type is EntryType.CONFIG:
                self._check_removed(self.node, ConfState.decode(entry.data))
            self._applied = entry.index
            waiting = proposals.pop(entry.index, None)
            if waiting is not None and not waiting.future.done():
                if waiting.term == entry.term:
                    waiting.future.set_result(result)
                else:
                    waiting.future.set_exception(
                        ProposalDropped(f"entry {entry.index} was replaced by a new leader's"))
            if n % 512 == 511:
                await asyncio.sleep(0)  # a long catch-up must not starve the timers
        self._wake_appliers()

    def _installed(self, index: int) -> None:
        """The state machine jumped to ``index`` by a leader's snapshot."""
        self._applied = index
        for entry_index in [i for i in self._proposals if i <= index]:
            proposal = self._proposals.pop(entry_index)
            if not proposal.future.done():
                # Whether this node's entry is the one the snapshot holds cannot be told.
                proposal.future.set_exception(OutcomeUnknown(
                    f"entry {entry_index} was overtaken by a snapshot from the leader"))
        self._wake_appliers()

    def _wake_appliers(self) -> None:
        for index in [i for i in self._apply_waiters if i <= self._applied]:
            for future in self._apply_waiters.pop(index):
                if not future.done():
                    future.set_result(None)

    def _resolve_reads(self, rd: Ready) -> None:
        for rs in rd.read_states:
            future = self._reads.get(rs.context)
            if future is not None and not future.done():
                future.set_result(rs.index)

    def learn_addresses(self, members: Iterable[Member]) -> None:
        """Raft addresses learned elsewhere than from this node's log (a node whose log lags
        may hear from a leader added after it): added to the transport's peers."""
        if not isinstance(self._transport, PeerBook):
            return
        found = {m.id: split_host_port(m.raft) for m in members if m.raft and m.id != self.id}
        if any(self._peer_book.get(i) != a for i, a in found.items()):
            self._peer_book.update(found)
            self._transport.set_peers(self._peer_book)

    def _track_conf(self, node: RaftNode) -> None:
        """Follow the configuration in use: peers' addresses, listeners, was-member."""
        conf = node.conf
        if conf == self._conf:
            return
        self._conf = conf
        if self.id in conf.voters or self.id in conf.learners:
            self._was_member = True
        if conf.members and isinstance(self._transport, PeerBook):
            # Added, never dropped: a leader being removed still needs the followers' answers
            # until its removal commits, and they use the new configuration already.
            self._peer_book.update({m.id: split_host_port(m.raft) for m in conf.members
                                    if m.raft})
            self._transport.set_peers(self._peer_book)
        logger.info("node %s: configuration voters %s, learners %s", self.id,
                    sorted(conf.voters), sorted(conf.learners), extra=event(
                        "membership_changed", voters=sorted(conf.voters),
                        learners=sorted(conf.learners)))
        for callback in self.on_conf_change:
            callback(conf)

    def _check_removed(self, node: RaftNode, committed: ConfState) -> None:
        """A committed configuration without this node, still the one in use: it is removed.

        (A later configuration in the log may add it back; then it stays.)
        """
        self._track_conf(node)
        if (self._removed.is_set() or not self._was_member or self.id in committed.voters
                or self.id in committed.learners or self.id in self._conf.voters
                or self.id in self._conf.learners):
            return
        logger.warning("node %s was removed from the cluster (voters now %s)", self.id,
                       sorted(committed.voters), extra=event(
                           "node_removed", reason="committed configuration without it",
                           voters=sorted(committed.voters)))
        self._removed.set()

    def _note_role_change(self, node: RaftNode) -> None:
        if (node.role is not self._role or node.leader != self._leader
                or node.term != self._term):
            logger.info("node %s is %s in term %d (leader: %s): %s", self.id, node.role.value,
                        node.term, node.leader, node.role_reason,
                        extra=role_event(self._role, self._term, node.role, node.term, node.leader,
                                         node.role_reason))
            self._role, self._leader, self._term = node.role, node.leader, node.term
            self._observers.role_changed(node.role, node.term, node.leader)

    def _fail_waiters(self, exc: ServerError) -> None:
        for proposal in self._proposals.values():
            if not proposal.future.done():
                proposal.future.set_exception(exc)
        self._proposals.clear()
        for future in self._reads.values():
            if not future.done():
                future.set_exception(exc)
        for waiters in self._apply_waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
        self._apply_waiters.clear()


def split_host_port(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6host]:port`` as a (host, port) pair; ValueError if malformed."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"not a host:port address: {text!r}")
    return host, int(port)


async def wait_for_agreed_leader(servers: Sequence[RaftServer], timeout: float = 10.0,
                                 poll: float = 0.01) -> RaftServer:
    """The one server of ``servers`` that leads and whose leadership all the others agree on.

    For in-process clusters (tests, benchmarks, ``kv.service.LocalCluster``); real node
    processes are polled over HTTP by ``raftly.localcluster.ProcessCluster.wait_for_leader``.
    Raises TimeoutError when there is none within ``timeout`` seconds.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        leaders = [s for s in servers if s.is_leader]
        if len(leaders) == 1 and all(s.leader == leaders[0].id for s in servers):
            return leaders[0]
        if loop.time() > deadline:
            raise TimeoutError(f"no agreed leader within {timeout}s")
        await asyncio.sleep(poll)


__all__ = ["Busy", "MembershipError", "NotLeader", "OutcomeUnknown", "PeerBook",
           "ProposalDropped", "RaftServer", "ServerError", "ServerStatus", "ServerStopped",
           "TransferTimedOut", "split_host_port", "wait_for_agreed_leader"]

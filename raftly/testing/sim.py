"""``SimCluster``: many Raft nodes in one process, on a virtual clock, over a faulty network.

The simulator drives the same ``RaftNode`` the server drives, through the same Ready/advance
contract, with each node's durable state in a ``Storage``. It jumps from event to event (a
message delivery or a tick) instead of sleeping, so minutes of cluster time take moments, and all
of its randomness comes from one seed: the same seed gives the same run, step for step.

With ``snapshot_every=N`` each node snapshots its state machine every N applied entries and
compacts its log to N entries behind the snapshot; a follower that needs compacted entries gets
InstallSnapshot through the simulated network, and a restarted node restores its newest snapshot
(kept across crashes like durable storage) and replays its log after it.

Membership changes go through the leader like any proposal: ``add_node`` opens a new slot with
empty storage whose node joins as a learner (catching up by appends, or InstallSnapshot) and is
promoted by the leader once caught up; ``remove_node`` removes one. A removed node keeps running
(it may never learn it was removed) but no longer counts when the simulator looks for the leader
or the terms of the cluster.

After every event it checks Raft's safety properties (``SafetyChecker``) and raises
``SafetyViolation`` with the seed and the step where one broke. It also keeps the run within a
``SimBudget`` of work per virtual second, so a runaway core fails with ``BudgetExceeded`` and the
last few events instead of hanging.
"""

from __future__ import annotations

import heapq
import io
import random
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from raftly.core.config import Config
from raftly.core.errors import NotLeader, RaftError
from raftly.core.messages import InstallSnapshot, Message
from raftly.core.node import RaftNode, ReadState, Ready
from raftly.core.state_machine import (
    SnapshotCapture,
    StateMachine,
    SupportsRead,
    SupportsWrite,
    supports_snapshots,
)
from raftly.core.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    InitialState,
    Member,
    Snapshot,
    SnapshotMeta,
)
from raftly.storage.base import Storage, StorageError
from raftly.storage.memory import MemoryStorage
from raftly.testing.budget import BudgetExceeded, SimBudget
from raftly.testing.safety import SafetyChecker, SafetyViolation

# Enum members as module constants: on Python 3.11 ``EntryType.COMMAND`` costs a metaclass
# __getattr__ hook (~70 ns), and these are read for every entry applied.
_COMMAND = EntryType.COMMAND
_CONFIG = EntryType.CONFIG

_TICK = 0
_DELIVER = 1
_SAVED = 2
_SNAPSHOT_SAVED = 3
_SNAPSHOT_FAILED = 4

_LINK_LO, _LINK_HI = 0.0005, 0.002
"""A reliable link delivers in a uniform random time in this range (seconds), in order."""
_LINK_SPAN = _LINK_HI - _LINK_LO

_REPORT_DELAY = (0.01, 0.1)
"""How long a sender takes to notice that a snapshot transfer failed (a transport timeout)."""

_RECENT_EVENTS = 12
"""How many of the last events a violation report lists."""

_Event = tuple[float, int, int, object]
"""(due time, sequence number, kind, payload): the simulator's event queue entries."""


_RECORDING_MAGIC = b"RSM1"
_RECORD = struct.Struct(">QI")


class RecordingStateMachine:
    """The default state machine: remembers the commands it applied, returns the index.

    Its snapshot is every command it holds, so the safety checker can compare a snapshot with
    what was applied at each index.
    """

    def __init__(self) -> None:
        self.commands: list[tuple[int, bytes]] = []

    def apply(self, index: int, command: bytes) -> object:
        self.commands.append((index, command))
        return index

    def capture(self) -> SnapshotCapture:
        return _RecordingCapture(tuple(self.commands))

    def restore(self, source: SupportsRead) -> None:
        self.commands = decode_recording(source.read())


@dataclass(slots=True, frozen=True)
class _RecordingCapture:
    commands: tuple[tuple[int, bytes], ...]

    def persist(self, sink: SupportsWrite) -> None:
        sink.write(_RECORDING_MAGIC + struct.pack(">I", len(self.commands)))
        for index, command in self.commands:
            sink.write(_RECORD.pack(index, len(command)) + command)


def decode_recording(data: bytes) -> list[tuple[int, bytes]]:
    """The commands of a ``RecordingStateMachine`` snapshot; ValueError if malformed."""
    if data[:4] != _RECORDING_MAGIC or len(data) < 8:
        raise ValueError("not a recording state machine snapshot")
    (count,), pos = struct.unpack_from(">I", data, 4), 8
    commands: list[tuple[int, bytes]] = []
    for _ in range(count):
        if pos + _RECORD.size > len(data):
            raise ValueError(f"snapshot truncated at byte {pos}")
        index, size = _RECORD.unpack_from(data, pos)
        pos += _RECORD.size
        if pos + size > len(data) or (commands and index <= commands[-1][0]):
            raise ValueError(f"snapshot malformed at byte {pos}")
        commands.append((index, data[pos:pos + size]))
        pos += size
    if pos != len(data):
        raise ValueError(f"snapshot has {len(data) - pos} stray bytes at its end")
    return commands


@dataclass(slots=True)
class _Member:
    """One node slot: its durable storage survives crashes; the rest is the live instance."""

    storage: Storage
    node: RaftNode | None = None
    state_machine: StateMachine | None = None
    incarnation: int = 0
    connected: bool = True
    applied: dict[int, bytes] = field(default_factory=dict)
    applied_order: list[tuple[int, bytes]] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    saving: Ready | None = None
    """The Ready whose save is under way (only with disk latency)."""
    snapshot: tuple[SnapshotMeta, bytes] | None = None
    """The newest durable snapshot: survives crashes, like the storage."""
    snapshotting: bool = False
    """A snapshot is being written (only with disk latency)."""
    incoming: dict[tuple[int, int], bytes] = field(default_factory=dict)
    """Snapshot data received with InstallSnapshot, by (index, term), until a Ready names it."""
    snapshots_installed: list[int] = field(default_factory=list)
    """Indexes of the snapshots this incarnation restored at boot or installed from a leader."""


class SimCluster:
    """A deterministic simulated cluster of ``n`` nodes with ids ``0 .. n-1``.

    ``state_machine`` is a factory called once per node instance (again after each restart);
    by default each node records what it applied. With ``snapshot_every=N`` each node snapshots
    its state machine (which must have the snapshot hooks) every N applied entries and keeps at
    most N entries of log behind the snapshot. ``storage_factory(i)`` gives node ``i``'s
    storage (``MemoryStorage`` by default). ``replay_hint`` is printed with any safety
    violation: set it to the command that reruns this scenario. ``disk_latency=(lo, hi)`` makes
    every save take a uniform random virtual time in that range (default: instant).
    ``budget`` bounds the work per virtual second (see ``SimBudget``; the default is generous).
    """

    def __init__(
        self,
        n: int = 3,
        seed: int = 0,
        snapshot_every: int | None = None,
        state_machine: Callable[[], StateMachine] | None = None,
        *,
        config: Config | None = None,
        storage_factory: Callable[[int], Storage] | None = None,
        replay_hint: str | None = None,
        disk_latency: tuple[float, float] | None = None,
        budget: SimBudget | None = None,
    ) -> None:
        if snapshot_every is not None and snapshot_every < 1:
            raise ValueError("snapshot_every must be at least 1")
        if n < 1:
            raise ValueError("a cluster needs at least one node")
        self.n = n
        self.seed = seed
        self.config = config or Config()
        self.replay_hint = replay_hint
        self._disk_latency: list[tuple[float, float] | None] = [disk_latency] * n
        self.now = 0.0
        self.steps = 0
        self._rng = random.Random(seed)
        self._sm_factory: Callable[[], StateMachine] = state_machine or RecordingStateMachine
        self.snapshot_every = snapshot_every
        if snapshot_every is not None and not supports_snapshots(self._sm_factory()):
            raise ValueError("snapshot_every needs a state machine with capture() and restore()")
        self._checker = SafetyChecker()
        self._events: list[_Event] = []
        self._seq = 0
        self._messages_sent = 0
        self._budget = budget or SimBudget()
        self._recent: deque[_Event] = deque(maxlen=_RECENT_EVENTS)
        # The current budget window: one virtual second from the first event in it.
        self._window_start = 0.0
        self._window_end = 1.0
        self._window_steps = 0
        self._window_messages = 0
        # Past these counts the window overspent its budget (checked after every step).
        self._steps_limit = self._budget.steps_per_second
        self._messages_limit = self._budget.messages_per_second
        self._groups: list[int] = [0] * n
        self._link_clock: dict[tuple[int, int], float] = {}
        self._unreliable = False
        self._long_delays = False
        self._next_one = 0
        self._make_storage = storage_factory or (lambda _i: MemoryStorage())
        conf = ConfState(frozenset(range(n)))
        self._members: list[_Member] = []
        for i in range(n):
            storage = self._make_storage(i)
            storage.bootstrap(conf)
            self._members.append(_Member(storage))
        self._added_at = [0] * n
        """Per slot, the index of the CONFIG entry that added it (0: a founding member)."""
        self._committed_conf: tuple[int, ConfState] = (0, conf)
        """The newest configuration applied by any node (so committed), and its index."""
        for i in range(n):
            self._boot(i)
        self._schedule(self.config.tick_interval, _TICK, None)

    # -- time -----------------------------------------------------------------------------------

    def run(self, seconds: float) -> None:
        """Advance virtual time by ``seconds``, processing every event due meanwhile.

        Every node's work happens in here, so a broken safety property or core invariant is
        reported here, with the seed, step and time that replay it.
        """
        try:
            self._run(self.now + seconds)
        except SafetyViolation as e:  # BudgetExceeded too, keeping its type
            raise type(e)(self._describe(str(e))) from None
        except (AssertionError, StorageError) as e:
            # An InvariantError from the core is a safety bug too, and so is a Ready that the
            # storage refuses (entries that do not follow the log, a commit beyond it).
            raise SafetyViolation(self._describe(f"{type(e).__name__}: {e}")) from e

    def _run(self, deadline: float) -> None:
        # Work that inputs from outside (start, read_index, transfer_leadership) left pending
        # goes out now, batched: proposals made between two runs share one AppendEntries.
        for i, member in enumerate(self._members):
            if member.node is not None:
                self._drain(i)
        events = self._events
        remember = self._recent.append
        pop = heapq.heappop
        while events and events[0][0] <= deadline:
            event = pop(events)
            when, _, kind, payload = event
            self.now = when
            self.steps += 1
            remember(event)
            if when >= self._window_end:
                self._open_window(when)
            elif self.steps > self._steps_limit or self._messages_sent > self._messages_limit:
                self._overspent()
            if kind == _DELIVER:  # the most common event first
                assert isinstance(payload, tuple)
                self._deliver(*payload)
            elif kind == _TICK:
                self._tick_all()
            elif kind == _SAVED:
                assert isinstance(payload, tuple)
                self._saved(*payload)
            elif kind == _SNAPSHOT_SAVED:
                assert isinstance(payload, tuple)
                self._snapshot_saved(*payload)
            else:
                assert isinstance(payload, tuple)
                self._report_snapshot(*payload, ok=False)
        self.now = deadline

    def _open_window(self, when: float) -> None:
        self._window_start, self._window_end = when, when + 1.0
        self._window_steps, self._window_messages = self.steps, self._messages_sent
        self._steps_limit = self.steps + self._budget.steps_per_second
        self._messages_limit = self._messages_sent + self._budget.messages_per_second

    def _overspent(self) -> None:
        steps = self.steps - self._window_steps
        messages = self._messages_sent - self._window_messages
        span = self.now - self._window_start
        if span == 0.0:
            how = f"virtual time stood still at {self.now:.6f}s"
        else:
            how = f"in {span:.3f} virtual seconds"
        budget = self._budget
        raise BudgetExceeded(
            f"runaway: {steps} steps and {messages} messages {how} (budget: "
            f"{budget.steps_per_second} steps, {budget.messages_per_second} messages per "
            f"virtual second)\n{self._recent_events()}"
        )

    def _recent_events(self) -> str:
        """The last events, oldest first, numbered by step, for a violation report."""
        first = self.steps - len(self._recent) + 1
        lines = [f"  last {len(self._recent)} events:"]
        for step, (when, _, kind, payload) in enumerate(self._recent, first):
            if kind == _TICK:
                what = "tick"
            elif kind == _DELIVER:
                assert isinstance(payload, tuple)
                what = f"deliver {payload[0]}"
            elif kind == _SAVED:
                assert isinstance(payload, tuple)
                what = f"node {payload[0]} finished a save"
            elif kind == _SNAPSHOT_SAVED:
                assert isinstance(payload, tuple)
                what = f"node {payload[0]} finished writing a snapshot"
            else:
                assert isinstance(payload, tuple)
                what = f"node {payload[0]} gave up sending a snapshot to node {payload[2]}"
            lines.append(f"    step {step} at {when:.6f}s: {what}")
        return "\n".join(lines)

    def _schedule(self, delay: float, kind: int, payload: object) -> None:
        self._seq += 1
        heapq.heappush(self._events, (self.now + delay, self._seq, kind, payload))

    def _tick_all(self) -> None:
        for i, member in enumerate(self._members):
            if member.node is not None:
                member.node.tick()
                self._drain(i)
        self._schedule(self.config.tick_interval, _TICK, None)

    # -- the network ----------------------------------------------------------------------------

    def _link_up(self, a: int, b: int, ma: _Member, mb: _Member) -> bool:
        """Whether nodes a and b (slots ``ma`` and ``mb``) can talk."""
        return ma.connected and mb.connected and self._groups[a] == self._groups[b]

    def _send(self, msg: Message) -> None:
        self._messages_sent += 1
        src, dst = msg.src, msg.dst
        members = self._members
        if isinstance(msg, InstallSnapshot):
            # The core sends the metadata; the driver attaches the data it holds for it.
            held = members[src].snapshot
            if held is None or held[0] != msg.snapshot.meta:
                self._snapshot_failed(msg)
                return
            msg = InstallSnapshot(term=msg.term, src=src, dst=dst,
                                  snapshot=Snapshot(held[0], held[1]))
        if not 0 <= dst < self.n or not self._link_up(src, dst, members[src], members[dst]):
            self._snapshot_failed(msg)
            return
        rng = self._rng
        now = self.now
        if self._unreliable:
            if rng.random() < 0.1:
                self._snapshot_failed(msg)
                return
            delay = rng.uniform(0.0, 0.027)
        else:
            # Per-link FIFO, like a TCP connection. rng.uniform(lo, hi) inlined, the same
            # arithmetic (so the same draws): one Python call less per message.
            delay = _LINK_LO + _LINK_SPAN * rng.random()
            link = (src, dst)
            delay = max(delay, self._link_clock.get(link, 0.0) - now)
            self._link_clock[link] = now + delay
        if self._long_delays and rng.random() < 0.3:
            delay += rng.uniform(0.2, 2.0)
        # _schedule inlined: this runs for every message.
        self._seq += 1
        heapq.heappush(self._events, (now + delay, self._seq, _DELIVER,
                                      (msg, members[dst].incarnation, members[src].incarnation)))

    def _deliver(self, msg: Message, incarnation: int, src_incarnation: int) -> None:
        src, dst = msg.src, msg.dst
        member = self._members[dst]
        node = member.node
        if (node is None or member.incarnation != incarnation
                or not self._link_up(src, dst, self._members[src], member)):
            # The connection broke: the node restarted, crashed or was cut off.
            self._snapshot_failed(msg, src_incarnation)
            return
        snapshot = isinstance(msg, InstallSnapshot)
        if snapshot:
            assert isinstance(msg, InstallSnapshot)
            meta = msg.snapshot.meta
            member.incoming[(meta.index, meta.term)] = msg.snapshot.data
        node.step(msg)
        self._drain(dst)
        if snapshot:
            self._report_snapshot(src, src_incarnation, dst, ok=True)

    def _snapshot_failed(self, msg: Message, src_incarnation: int | None = None) -> None:
        """A snapshot transfer broke: its sender notices after a while (if still running)."""
        if isinstance(msg, InstallSnapshot):
            if src_incarnation is None:
                src_incarnation = self._members[msg.src].incarnation
            self._schedule(self._rng.uniform(*_REPORT_DELAY), _SNAPSHOT_FAILED,
                           (msg.src, src_incarnation, msg.dst))

    def _report_snapshot(self, src: int, incarnation: int, dst: int, *, ok: bool) -> None:
        member = self._members[src]
        if member.node is None or member.incarnation != incarnation:
            return
        member.node.report_snapshot(dst, ok)
        self._drain(src)

    def _drain(self, i: int) -> None:
        """Do node i's Ready work: send early messages, persist, send, apply, advance.

        With ``disk_latency`` each save takes virtual time, as an fsync does: the node keeps
        receiving messages and ticking meanwhile (its early messages go out at once), and a crash
        before the save completes loses that Ready, exactly as a real crash loses what was not
        yet fsynced.
        """
        member = self._members[i]
        node = member.node
        assert node is not None
        if member.saving is None and not node.has_ready():
            # Idle, as after most ticks (has_ready() covers early messages too).
            self._checker.on_state(node)
            return
        for msg in node.take_early_messages():
            self._send(msg)
        readies = 0
        while member.saving is None and node.has_ready():
            readies += 1
            if readies > self._budget.readies_per_input:
                raise BudgetExceeded(
                    f"runaway: node {i} handed out {readies - 1} Readies in a row for one "
                    f"input, virtual time standing still at {self.now:.6f}s (budget: "
                    f"{self._budget.readies_per_input})\n{self._recent_events()}"
                )
            rd = node.ready()
            for msg in rd.early_messages:
                self._send(msg)
            prev_term = node.log.term_at(rd.entries[0].index - 1) if rd.entries else None
            latency = self._disk_latency[i]
            if latency is None or not rd.must_sync:
                self._finish_ready(i, rd, prev_term)
            else:
                member.saving = rd
                self._schedule(self._rng.uniform(*latency), _SAVED,
                               (i, member.incarnation, rd, prev_term))
        self._checker.on_state(node)

    def _saved(self, i: int, incarnation: int, rd: Ready, prev_term: int | None) -> None:
        member = self._members[i]
        if member.node is None or member.incarnation != incarnation:
            return  # the node crashed before its fsync completed: the Ready is lost
        member.saving = None
        self._finish_ready(i, rd, prev_term)
        self._drain(i)

    def _finish_ready(self, i: int, rd: Ready, prev_term: int | None) -> None:
        member = self._members[i]
        node = member.node
        assert node is not None and member.state_machine is not None
        if rd.snapshot is not None:
            self._install_snapshot(i, rd.snapshot)
        member.storage.save(rd.hard_state, rd.entries)
        if rd.entries:
            self._checker.on_persist(i, rd.entries, prev_term)
        for msg in rd.messages:
            self._send(msg)
        committed = rd.committed_entries
        if committed:
            self._checker.on_apply_all(i, committed)
            apply, applied = member.state_machine.apply, member.applied
            order = member.applied_order
            for entry in committed:
                kind = entry.type
                if kind is _COMMAND:
                    index, data = entry.index, entry.data
                    apply(index, data)
                    applied[index] = data
                    order.append((index, data))
                elif kind is _CONFIG:
                    self._conf_committed(entry)
        if rd.read_states:
            for rs in rd.read_states:
                self._checker.on_read_state(i, rs.index, rs.context)
            member.read_states.extend(rd.read_states)
        node.advance(rd)
        every = self.snapshot_every
        if (every is not None and not member.snapshotting
                and node.log.applied - node.status().snapshot_index >= every):
            self._take_snapshot(i)

    # -- snapshots ------------------------------------------------------------------------------

    def _install_snapshot(self, i: int, meta: SnapshotMeta) -> None:
        """A snapshot from the leader: durable first, then the log compacted, then restored."""
        member = self._members[i]
        assert member.state_machine is not None
        data = member.incoming.get((meta.index, meta.term))
        if data is None:
            raise AssertionError(f"node {i} accepted snapshot {meta} whose data it never got")
        member.incoming = {key: d for key, d in member.incoming.items() if key[0] > meta.index}
        member.snapshot = (meta, data)
        member.storage.compact(meta)
        self._restore(i, meta, data)
        self._checker.on_snapshot_installed(i, meta.index, self._contents(data))

    def _restore(self, i: int, meta: SnapshotMeta, data: bytes) -> None:
        member = self._members[i]
        assert supports_snapshots(member.state_machine)
        member.state_machine.restore(io.BytesIO(data))
        member.snapshots_installed.append(meta.index)

    def _contents(self, data: bytes) -> list[tuple[int, bytes]] | None:
        """What a snapshot holds, if the checker can read it (the default state machine)."""
        return decode_recording(data) if self._sm_factory is RecordingStateMachine else None

    def _take_snapshot(self, i: int) -> None:
        """Capture the state machine now (between two applies); the write takes disk time."""
        member = self._members[i]
        node = member.node
        assert node is not None and supports_snapshots(member.state_machine)
        meta = node.snapshot_meta(node.log.applied)
        sink = io.BytesIO()
        member.state_machine.capture().persist(sink)
        data = sink.getvalue()
        self._checker.on_snapshot_taken(i, meta.index, self._contents(data))
        latency = self._disk_latency[i]
        if latency is None:
            self._snapshot_saved(i, member.incarnation, meta, data)
        else:
            member.snapshotting = True
            self._schedule(self._rng.uniform(*latency), _SNAPSHOT_SAVED,
                           (i, member.incarnation, meta, data))

    def _snapshot_saved(self, i: int, incarnation: int, meta: SnapshotMeta, data: bytes) -> None:
        """The snapshot is durable: offer it to followers, and compact the log behind it."""
        member = self._members[i]
        node = member.node
        if node is None or member.incarnation != incarnation:
            return  # crashed while writing it: the snapshot is lost, the log still covers it
        member.snapshotting = False
        if member.snapshot is None or meta.index > member.snapshot[0].index:
            member.snapshot = (meta, data)
            node.snapshot_saved(meta)
        assert self.snapshot_every is not None
        held = member.snapshot[0].index
        start = node.compact(min(held - self.snapshot_every, node.log.stable_index))
        if start is not None:
            member.storage.compact(start)

    def _conf_committed(self, entry: Entry) -> None:
        if entry.index > self._committed_conf[0]:
            self._committed_conf = (entry.index, ConfState.decode(entry.data))

    def _describe(self, what: str) -> str:
        hint = f"\n  replay: {self.replay_hint}" if self.replay_hint else ""
        return f"{what}\n  seed={self.seed} step={self.steps} time={self.now:.3f}s{hint}"

    # -- faults ---------------------------------------------------------------------------------

    def disconnect(self, i: int) -> None:
        """Cut every link of node i, both directions."""
        self._members[i].connected = False

    def connect(self, i: int) -> None:
        self._members[i].connected = True

    def partition(self, *groups: list[int]) -> None:
        """Split the network: nodes talk only within their group; unlisted nodes are alone."""
        for i in range(self.n):
            self._groups[i] = -1 - i
        for g, group in enumerate(groups):
            for i in group:
                self._groups[i] = g

    def heal(self) -> None:
        """Undo every partition and disconnection."""
        self._groups = [0] * self.n
        for member in self._members:
            member.connected = True

    def crash(self, i: int) -> None:
        """Stop node i. What it made durable stays in its storage; everything else is lost."""
        member = self._members[i]
        member.node = None
        member.state_machine = None
        member.saving = None  # a save still under way never completes
        member.snapshotting = False  # and so does a snapshot being written
        member.incoming = {}
        member.incarnation += 1

    def restart(self, i: int) -> None:
        """A new instance of node i from its durable storage (crashing the old one if alive)."""
        self.crash(i)
        self._boot(i)

    def _boot(self, i: int) -> None:
        member = self._members[i]
        state = member.storage.load()
        rng = random.Random(f"{self.seed}/{i}/{member.incarnation}")
        member.state_machine = self._sm_factory()
        member.applied = {}
        member.applied_order = []
        member.read_states = []
        member.snapshots_installed = []
        restored = None
        if member.snapshot is not None:
            # The newest snapshot, then the log after it.
            restored, data = member.snapshot
            self._restore(i, restored, data)
        # The node reads its durable log through the storage, as a driver with bounded memory
        # would: every simulated run exercises that read side.
        member.node = RaftNode(i, InitialState(state.hard_state, state.snapshot), self.config,
                               rng, storage=member.storage, restored=restored)
        self._checker.on_restart(i, state.snapshot.index if restored is None else restored.index)

    def set_disk_latency(self, latency: tuple[float, float] | None, i: int | None = None) -> None:
        """Saves on node i (every node if None) take (lo, hi) virtual seconds; None: instant."""
        for j in range(self.n) if i is None else (i,):
            self._disk_latency[j] = latency

    def set_unreliable(self, on: bool = True) -> None:
        """Drop 10% of messages and delay each by 0-27 ms, which reorders them."""
        self._unreliable = on

    def set_long_delays(self, on: bool = True) -> None:
        """Delay some messages (30%) by a further 200-2000 ms."""
        self._long_delays = on

    # -- membership -----------------------------------------------------------------------------

    def propose_conf_change(self, change: ConfChange) -> int:
        """Propose ``change`` on the current leader; return the CONFIG entry's index.

        Raises NotLeader when no connected node leads, ConfChangeRefused as the core does.
        """
        leader = self.leader()
        if leader is None:
            raise NotLeader(None)
        index = self.node(leader).propose_conf_change(change)
        self._drain(leader)
        return index

    def add_node(self, promote: bool = True) -> int:
        """Add a node through the leader: a new slot with empty storage, started as a learner
        (promoted once caught up unless ``promote`` is False). Returns its id; raises as
        ``propose_conf_change`` does, and then adds no slot."""
        i = self.n
        index = self.propose_conf_change(
            ConfChange(ConfChangeType.ADD_LEARNER, Member(i, promote=promote)))
        storage = self._make_storage(i)
        storage.bootstrap(ConfState())  # it learns the configuration from the leader's log
        self._members.append(_Member(storage))
        self._added_at.append(index)
        self._disk_latency.append(self._disk_latency[0])
        self._groups.append(0)
        self.n += 1
        self._boot(i)
        return i

    def remove_node(self, i: int) -> int:
        """Remove node ``i`` (voter or learner) through the leader; return the entry's index."""
        return self.propose_conf_change(ConfChange(ConfChangeType.REMOVE, Member(i)))

    def is_member(self, i: int) -> bool:
        """Whether slot ``i`` may still be a member: no committed configuration made after it
        was added leaves it out."""
        index, conf = self._committed_conf
        return i in conf.ids or index < self._added_at[i]

    def committed_conf(self) -> ConfState:
        """The newest configuration any node applied."""
        return self._committed_conf[1]

    # -- observation ----------------------------------------------------------------------------

    def node(self, i: int) -> RaftNode:
        """Node i's live instance (raises if it is crashed)."""
        node = self._members[i].node
        if node is None:
            raise RuntimeError(f"node {i} is crashed")
        return node

    def alive(self, i: int) -> bool:
        return self._members[i].node is not None

    def state_machine(self, i: int) -> StateMachine:
        sm = self._members[i].state_machine
        if sm is None:
            raise RuntimeError(f"node {i} is crashed")
        return sm

    def term(self, i: int) -> int:
        return self.node(i).term

    def is_leader(self, i: int) -> bool:
        node = self._members[i].node
        return node is not None and node.is_leader

    def _reachable(self) -> list[int]:
        return [i for i, m in enumerate(self._members)
                if m.node is not None and m.connected and self.is_member(i)]

    def _leaders_by_term(self, reachable: list[int] | None = None) -> dict[int, list[int]]:
        leaders: dict[int, list[int]] = {}
        for i in self._reachable() if reachable is None else reachable:
            if self.is_leader(i):
                leaders.setdefault(self.term(i), []).append(i)
        for term, ids in leaders.items():
            if len(ids) > 1:
                raise AssertionError(f"term {term} has {len(ids)} leaders: {ids}")
        return leaders

    def leader(self) -> int | None:
        """The leader of the newest term among connected nodes, if that term has one."""
        reachable = self._reachable()
        if not reachable:
            return None
        newest = max(self.term(i) for i in reachable)
        ids = self._leaders_by_term(reachable).get(newest)
        return ids[0] if ids else None

    def run_until(self, predicate: Callable[[], bool], timeout: float,
                  step: float = 0.01) -> float:
        """Run in steps of ``step`` until ``predicate()`` holds; return the virtual time it took.

        AssertionError if it still does not hold after ``timeout`` virtual seconds.
        """
        start = self.now
        while not predicate():
            if self.now - start >= timeout:
                raise AssertionError(
                    f"condition not reached within {timeout}s (seed={self.seed})")
            self.run(step)
        return self.now - start

    def check_one_leader(self, timeout: float = 5.0) -> int:
        """Run until one connected node leads in the newest term; return it."""
        try:
            self.run_until(lambda: self.leader() is not None, timeout, step=0.05)
        except AssertionError:
            raise AssertionError(f"no leader within {timeout}s (seed={self.seed})") from None
        leader = self.leader()
        assert leader is not None
        return leader

    def check_no_leader(self) -> None:
        for i in self._reachable():
            if self.is_leader(i):
                raise AssertionError(f"connected node {i} leads term {self.term(i)}; expected none")

    def check_terms(self) -> int:
        terms = {self.term(i) for i in self._reachable()}
        if len(terms) != 1:
            raise AssertionError(f"connected nodes disagree on the term: {sorted(terms)}")
        return terms.pop()

    def message_count(self) -> int:
        return self._messages_sent

    def log_length(self, i: int) -> int:
        log = self.node(i).log
        return log.last_index - log.snapshot_index

    def applied(self, i: int) -> list[tuple[int, bytes]]:
        """User commands applied by node i's current instance, in order (one by one: not
        those a snapshot restored, see ``snapshots_installed``)."""
        return list(self._members[i].applied_order)

    def commands(self, i: int) -> list[tuple[int, bytes]]:
        """Every command node i's ``RecordingStateMachine`` holds: restored from a snapshot or
        applied one by one."""
        sm = self.state_machine(i)
        if not isinstance(sm, RecordingStateMachine):
            raise TypeError("commands(i) needs the default RecordingStateMachine")
        return list(sm.commands)

    def snapshots_installed(self, i: int) -> list[int]:
        """Indexes of the snapshots node i's current instance restored, at boot or from a
        leader's InstallSnapshot, in order."""
        return list(self._members[i].snapshots_installed)

    def writing_snapshot(self, i: int) -> bool:
        """Whether node i is writing a snapshot that is not yet durable (with disk latency)."""
        return self._members[i].snapshotting

    def snapshot_index(self, i: int) -> int:
        """The index node i's newest durable snapshot covers (0 if none; kept across crashes)."""
        held = self._members[i].snapshot
        return held[0].index if held is not None else 0

    def read_states(self, i: int) -> list[ReadState]:
        """Read states node i's current instance has been handed so far."""
        return list(self._members[i].read_states)

    # -- client operations ----------------------------------------------------------------------

    def start(self, i: int, command: bytes) -> tuple[int, int, bool]:
        """Propose ``command`` on node i: (index, term, is_leader); index is -1 if refused."""
        node = self._members[i].node
        if node is None:
            return -1, 0, False
        try:
            index = node.propose(command)
        except RaftError:
            return -1, node.term, False
        return index, node.term, True

    def read_index(self, i: int, context: bytes) -> None:
        """Ask node i for a linearizable read point; the answer is checked not to be stale.

        Raises NotLeader when node i knows no leader. Contexts must be unique per node.
        """
        self._checker.on_read_issued(i, context)
        self.node(i).read_index(context)

    def n_committed(self, index: int) -> tuple[int, bytes | None]:
        """How many nodes applied ``index``, and the command applied there."""
        count, command = 0, None
        for i, member in enumerate(self._members):
            if index in member.applied:
                got = member.applied[index]
                if command is not None and got != command:
                    raise AssertionError(
                        f"index {index}: node {i} applied {got!r}, another {command!r}"
                    )
                count, command = count + 1, got
            elif member.snapshots_installed and index <= max(member.snapshots_installed):
                count += 1  # restored from a snapshot (which the checker compared)
        return count, command

    def one(self, command: bytes, expected_servers: int, retry: bool = False) -> int:
        """Submit ``command`` until ``expected_servers`` applied it; return its index.

        Tries each connected node in turn as the leader, for at most 10 virtual seconds.
        """
        deadline = self.now + 10.0
        while self.now < deadline:
            index = -1
            for _ in range(self.n):
                i = self._next_one
                self._next_one = (i + 1) % self.n
                if self.alive(i) and self._members[i].connected:
                    index, _, _ = self.start(i, command)
                    if index != -1:
                        break
            if index != -1:
                waited_until = self.now + 2.0
                while self.now < waited_until:
                    count, got = self.n_committed(index)
                    if count >= expected_servers and got == command:
                        return index
                    self.run(0.02)
                if not retry:
                    raise AssertionError(f"one({command!r}) failed to reach agreement")
            else:
                self.run(0.05)
        raise AssertionError(
            f"one({command!r}) failed to reach agreement in 10s (seed={self.seed})"
        )

    def wait(self, index: int, n: int, start_term: int) -> bytes | None:
        """Run until at least ``n`` nodes applied ``index``; None if a term passed start_term."""
        pause = 0.01
        deadline = self.now + 10.0
        while self.now < deadline:
            count, command = self.n_committed(index)
            if count >= n:
                return command
            if start_term > -1 and any(self.term(i) > start_term for i in self._reachable()):
                return None
            self.run(pause)
            pause = min(pause * 2, 1.0)
        count = self.n_committed(index)[0]
        raise AssertionError(f"only {count} nodes applied index {index}, wanted {n}")

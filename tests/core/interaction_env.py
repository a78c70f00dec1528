"""``InteractionEnv``: RaftNodes, their MemoryStorage and a network, driven by text commands.

The environment behind the transcript tests (``testdata/*.txt``), after etcd-io/raft's
``rafttest.InteractionEnv``. Each command returns the text the transcript expects underneath
it. Nodes are used only through their public API (inputs, ``ready``/``advance``,
``take_early_messages``, ``status``, ``progress``) and their logs are read back from storage, so
the transcripts keep holding while the core's internals change.

Commands (``ID`` a node id, ``IDS`` ids separated by spaces; options are ``key=value``)::

    add-nodes N [voters=1,2,3] [log=1,2*3] [term=T] [commit=C] [election=10] [heartbeat=2]
              [max-entries=N] [inflight=N] [prevote=true] [checkquorum=true] [promote-lag=N]
              [join=true]   (join: empty storage, no configuration: a node about to be added)
    campaign ID                 tick ID until it stands for election (again, if a candidate)
    tick ID [N] | tick-heartbeat ID | tick-election ID
    propose ID DATA | read-index ID CTX | transfer-leadership FROM TO
    conf-change ID add-learner|promote|remove NODE [promote=false]   on leader ID
    process-ready ID            hand out a Ready, persist it, send its messages, advance
    ready ID                    hand out a Ready and hold it: a slow disk. Its early messages go
                                at once; ``persist ID`` later saves, sends and advances it
    take-early ID               send the early messages a node with a held Ready has since made
    deliver-msgs [IDS] [type=Name] [drop]   step (or drop) the in-flight messages to IDS
    delay-msgs [IDS] [type=Name]    hold the in-flight messages to IDS back: a slow link
    release-msgs [IDS] [count=N]    put them (the first N) back in flight, behind everything
                                sent meanwhile, so they arrive late and out of order
    stabilize [IDS]             process Readies and deliver messages until all is quiet
    partition 1,2 3,4,5 | isolate ID | heal     messages across the cut are dropped on delivery
    status ID                   role, term, positions and, on a leader, each peer's Progress
    log ID                      the durable hard state and log from the node's storage (the
                                commit index is saved lazily there, so it may lag)
    restart ID                  crash (losing a held Ready) and rebuild the node from storage
                                and its newest snapshot
    snapshot ID [INDEX]         the driver snapshots the state at INDEX (default: applied) and
                                tells the node it holds it durably
    compact ID INDEX            compact the node's log and then its storage to INDEX
    report-snapshot ID PEER ok|fail   the driver finished or gave up sending a snapshot to PEER

A Ready's snapshot (received from a leader) is kept as the node's newest snapshot and compacts
its storage before the Ready's save, as a driver does. Status lines show ``snapshot=`` and
``first=`` once a node holds a snapshot or a compacted log.

Logs given to ``add-nodes`` are terms from index 1 (``2*3`` repeats term 2 three times).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from raftly.core import (
    ConfChange,
    ConfChangeRefused,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    HardState,
    Member,
    Message,
    RaftError,
    RaftNode,
    Ready,
    SnapshotMeta,
)
from raftly.core.messages import describe_conf, describe_entry
from raftly.storage.memory import MemoryStorage

STABILIZE_ROUNDS = 1000


def build_node(node_id: int, storage: MemoryStorage, config: Config,
               restored: SnapshotMeta | None = None) -> RaftNode:
    """The one place nodes are built (and rebuilt on restart) from their storage."""
    return RaftNode(node_id, storage.load(), config, random.Random(node_id), restored=restored)


@dataclass(slots=True)
class _Command:
    """One transcript line: a name, positional words and ``key=value`` options."""

    name: str
    args: list[str]
    options: dict[str, str]

    @classmethod
    def parse(cls, line: str) -> _Command:
        name, *words = line.split()
        args = [w for w in words if "=" not in w]
        options = dict(w.split("=", 1) for w in words if "=" in w)
        return cls(name, args, options)

    def ids(self) -> list[int]:
        return [int(a) for a in self.args]

    def flag(self, key: str, default: bool) -> bool:
        value = self.options.get(key)
        return default if value is None else value == "true"


@dataclass(slots=True)
class InteractionEnv:
    """The nodes of one transcript, their storage and the network between them."""

    storages: dict[int, MemoryStorage] = field(default_factory=dict)
    configs: dict[int, Config] = field(default_factory=dict)
    nodes: dict[int, RaftNode] = field(default_factory=dict)
    held: dict[int, Ready] = field(default_factory=dict)
    """Readies handed out and not yet persisted: nodes with a slow disk."""
    in_flight: list[Message] = field(default_factory=list)
    """Sent and not yet delivered, in the order sent."""
    delayed: list[Message] = field(default_factory=list)
    """Held back by ``delay-msgs``: neither delivered nor dropped until released."""
    cut: set[tuple[int, int]] = field(default_factory=set)
    """(src, dst) links whose messages are dropped on delivery."""
    snapshots: dict[int, SnapshotMeta] = field(default_factory=dict)
    """Each node's newest durable snapshot (the data is not modelled: the core never sees it)."""
    out: list[str] = field(default_factory=list)

    def execute(self, line: str) -> str:
        cmd = _Command.parse(line)
        handler: Callable[[_Command], None] | None = getattr(
            self, "_cmd_" + cmd.name.replace("-", "_"), None)
        if handler is None:
            raise ValueError(f"unknown command {cmd.name!r}")
        self.out = []
        handler(cmd)
        return "\n".join(self.out)

    # -- building and restarting ------------------------------------------------------------------

    def _cmd_add_nodes(self, cmd: _Command) -> None:
        first = max(self.nodes, default=0) + 1
        ids = list(range(first, first + int(cmd.args[0])))
        opts = cmd.options
        voters = ([int(v) for v in opts["voters"].split(",")] if "voters" in opts else ids)
        config = Config(
            tick_interval=1.0,
            heartbeat_interval=float(opts.get("heartbeat", 2)),
            election_timeout=float(opts.get("election", 10)),
            pre_vote=cmd.flag("prevote", True),
            check_quorum=cmd.flag("checkquorum", True),
            max_entries_per_message=int(opts.get("max-entries", 1024)),
            max_inflight_messages=int(opts.get("inflight", 64)),
            promote_lag=int(opts.get("promote-lag", 100)),
        )
        entries = [Entry(index, term) for index, term in enumerate(_terms(opts.get("log", "")), 1)]
        for node_id in ids:
            storage = MemoryStorage()
            storage.bootstrap(ConfState() if cmd.flag("join", False)
                              else ConfState(frozenset(voters)))
            if entries or "term" in opts:
                term = int(opts.get("term", entries[-1].term if entries else 0))
                storage.save(HardState(term, None, int(opts.get("commit", 0))), entries)
            self.storages[node_id], self.configs[node_id] = storage, config
            self.nodes[node_id] = build_node(node_id, storage, config)
            self._status_line(node_id)

    def _cmd_restart(self, cmd: _Command) -> None:
        for node_id in cmd.ids():
            self.held.pop(node_id, None)  # never persisted: lost in the crash
            self.nodes[node_id] = build_node(node_id, self.storages[node_id],
                                             self.configs[node_id], self.snapshots.get(node_id))
            self._status_line(node_id)

    # -- snapshots --------------------------------------------------------------------------------

    def _cmd_snapshot(self, cmd: _Command) -> None:
        node_id, *index = cmd.ids()
        node = self.nodes[node_id]
        with self._errors():
            meta = node.snapshot_meta(index[0] if index else node.status().applied)
            self.snapshots[node_id] = meta
            node.snapshot_saved(meta)
            self.out.append(f"snapshot {_meta(meta)}")

    def _cmd_compact(self, cmd: _Command) -> None:
        node_id, index = cmd.ids()
        with self._errors():
            meta = self.nodes[node_id].compact(index)
            if meta is None:
                self.out.append("nothing to compact")
                return
            self.storages[node_id].compact(meta)
            self.out.append(f"log starts after {_meta(meta)}")

    def _cmd_report_snapshot(self, cmd: _Command) -> None:
        node_id, peer = int(cmd.args[0]), int(cmd.args[1])
        self.nodes[node_id].report_snapshot(peer, cmd.args[2] == "ok")
        self.out.append("ok")

    # -- inputs -----------------------------------------------------------------------------------

    def _cmd_tick(self, cmd: _Command) -> None:
        node_id, *count = cmd.ids()
        self._tick(node_id, count[0] if count else 1)

    def _cmd_tick_heartbeat(self, cmd: _Command) -> None:
        node_id = int(cmd.args[0])
        self._tick(node_id, self.configs[node_id].heartbeat_ticks)

    def _cmd_tick_election(self, cmd: _Command) -> None:
        node_id = int(cmd.args[0])
        self._tick(node_id, self.configs[node_id].election_ticks)

    def _tick(self, node_id: int, count: int) -> None:
        for _ in range(count):
            self.nodes[node_id].tick()
        self.out.append("ok")

    def _cmd_campaign(self, cmd: _Command) -> None:
        node_id = int(cmd.args[0])
        node = self.nodes[node_id]
        before = (node.status().role, node.status().term)
        for _ in range(2 * self.configs[node_id].election_ticks):
            node.tick()
            if (node.status().role, node.status().term) != before:
                break
        self._status_line(node_id)

    def _cmd_propose(self, cmd: _Command) -> None:
        node_id, data = int(cmd.args[0]), cmd.args[1]
        with self._errors():
            self.out.append(f"index={self.nodes[node_id].propose(data.encode())}")

    def _cmd_read_index(self, cmd: _Command) -> None:
        node_id, context = int(cmd.args[0]), cmd.args[1]
        with self._errors():
            self.nodes[node_id].read_index(context.encode())
            self.out.append("ok")

    def _cmd_transfer_leadership(self, cmd: _Command) -> None:
        source, target = cmd.ids()
        with self._errors():
            self.nodes[source].transfer_leadership(target)
            self.out.append("ok")

    def _cmd_conf_change(self, cmd: _Command) -> None:
        node_id, kind, peer = int(cmd.args[0]), cmd.args[1], int(cmd.args[2])
        change = ConfChange(ConfChangeType[kind.upper().replace("-", "_")],
                            Member(peer, promote=cmd.flag("promote", True)))
        with self._errors():
            self.out.append(f"index={self.nodes[node_id].propose_conf_change(change)}")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except ConfChangeRefused as exc:
            self.out.append(f"error: ConfChangeRefused({exc.code}): {exc}")
        except (RaftError, ValueError) as exc:
            self.out.append(f"error: {type(exc).__name__}: {exc}")

    # -- Ready handling ---------------------------------------------------------------------------

    def _cmd_process_ready(self, cmd: _Command) -> None:
        for node_id in cmd.ids():
            self._process_ready(node_id)

    def _cmd_ready(self, cmd: _Command) -> None:
        for node_id in cmd.ids():
            self._hand_out_ready(node_id, hold=True)

    def _cmd_persist(self, cmd: _Command) -> None:
        for node_id in cmd.ids():
            self.out.append(f"> {node_id} persisting its held Ready")
            self._persist(node_id)

    def _cmd_take_early(self, cmd: _Command) -> None:
        for node_id in cmd.ids():
            if not self._take_early(node_id):
                self.out.append(f"> {node_id} has no early messages")

    def _process_ready(self, node_id: int) -> None:
        self._hand_out_ready(node_id, hold=False)
        self._persist(node_id)

    def _hand_out_ready(self, node_id: int, *, hold: bool) -> None:
        if node_id in self.held:
            raise RuntimeError(f"node {node_id} still holds a Ready: persist it first")
        rd = self.nodes[node_id].ready()
        self.held[node_id] = rd
        self.out.append(f"> {node_id} handling Ready{' (held: slow disk)' if hold else ''}")
        self._describe_ready(rd)
        self.in_flight += rd.early_messages

    def _persist(self, node_id: int) -> None:
        rd = self.held.pop(node_id)
        if rd.snapshot is not None:
            self.snapshots[node_id] = rd.snapshot
            self.storages[node_id].compact(rd.snapshot)
        self.storages[node_id].save(rd.hard_state, rd.entries)
        self.in_flight += rd.messages
        self.nodes[node_id].advance(rd)

    def _take_early(self, node_id: int) -> bool:
        early = self.nodes[node_id].take_early_messages()
        if early:
            self.out.append(f"> {node_id} sending early messages")
            self.out += [f"  {m}" for m in early]
            self.in_flight += early
        return bool(early)

    def _describe_ready(self, rd: Ready) -> None:
        def section(title: str, lines: list[str]) -> None:
            if lines:
                self.out.append(f"  {title}:")
                self.out += [f"    {line}" for line in lines]

        if rd.hard_state is not None:
            self.out.append(f"  HardState {_hard_state(rd.hard_state)}"
                            f"{' (must sync)' if rd.must_sync else ''}")
        elif rd.must_sync:
            self.out.append("  (must sync)")
        if rd.snapshot is not None:
            self.out.append(f"  Snapshot {_meta(rd.snapshot)}")
        section("Entries", [describe_entry(e) for e in rd.entries])
        section("Early messages", [str(m) for m in rd.early_messages])
        section("Messages", [str(m) for m in rd.messages])
        section("Committed", [describe_entry(e) for e in rd.committed_entries])
        section("ReadStates", [f"index={r.index} context={r.context.decode()}"
                               for r in rd.read_states])

    # -- the network ------------------------------------------------------------------------------

    def _cmd_deliver_msgs(self, cmd: _Command) -> None:
        ids = [int(a) for a in cmd.args if a.isdigit()] or sorted(self.nodes)
        if not self._deliver(ids, cmd.options.get("type"), drop="drop" in cmd.args):
            self.out.append("no messages")

    def _cmd_delay_msgs(self, cmd: _Command) -> None:
        ids = cmd.ids() or sorted(self.nodes)
        kind = cmd.options.get("type")
        mine = [m for m in self.in_flight
                if m.dst in ids and (kind is None or type(m).__name__ == kind)]
        taken = {id(m) for m in mine}
        self.in_flight = [m for m in self.in_flight if id(m) not in taken]
        self.delayed += mine
        self.out += [f"  {m} DELAYED" for m in mine] or ["no messages"]

    def _cmd_release_msgs(self, cmd: _Command) -> None:
        ids = cmd.ids() or sorted(self.nodes)
        mine = [m for m in self.delayed if m.dst in ids]
        mine = mine[:int(cmd.options.get("count", len(mine)))]
        taken = {id(m) for m in mine}
        self.delayed = [m for m in self.delayed if id(m) not in taken]
        self.in_flight += mine
        self.out += [f"  {m} RELEASED" for m in mine] or ["no messages"]

    def _deliver(self, ids: list[int], kind: str | None = None, *, drop: bool = False) -> bool:
        """Step (or drop) the in-flight messages to ``ids``, node by node, each in send order."""
        delivered = False
        for node_id in ids:
            mine = [m for m in self.in_flight
                    if m.dst == node_id and (kind is None or type(m).__name__ == kind)]
            if not mine:
                continue
            delivered = True
            taken = {id(m) for m in mine}
            self.in_flight = [m for m in self.in_flight if id(m) not in taken]
            self.out.append(f"> {node_id} receiving messages")
            for msg in mine:
                if drop or (msg.src, msg.dst) in self.cut:
                    self.out.append(f"  {msg} DROPPED")
                else:
                    self.out.append(f"  {msg}")
                    self.nodes[node_id].step(msg)
        return delivered

    def _cmd_stabilize(self, cmd: _Command) -> None:
        ids = cmd.ids() or sorted(self.nodes)
        for _ in range(STABILIZE_ROUNDS):
            busy = False
            for node_id in ids:
                if node_id in self.held:
                    busy |= self._take_early(node_id)
                elif self.nodes[node_id].has_ready():
                    self._process_ready(node_id)
                    busy = True
            busy |= self._deliver(ids)
            if not busy:
                if not self.out:
                    self.out.append("ok")
                return
        raise AssertionError(f"not stable after {STABILIZE_ROUNDS} rounds")

    def _cmd_partition(self, cmd: _Command) -> None:
        group_of = {int(i): n for n, group in enumerate(cmd.args) for i in group.split(",")}
        self.cut = {(a, b) for a in self.nodes for b in self.nodes
                    if a != b and group_of.get(a, -1 - a) != group_of.get(b, -1 - b)}
        self.out.append("ok")

    def _cmd_isolate(self, cmd: _Command) -> None:
        for node_id in cmd.ids():
            self.cut |= {(node_id, o) for o in self.nodes if o != node_id}
            self.cut |= {(o, node_id) for o in self.nodes if o != node_id}
        self.out.append("ok")

    def _cmd_heal(self, cmd: _Command) -> None:
        self.cut.clear()
        self.out.append("ok")

    # -- introspection ----------------------------------------------------------------------------

    def _cmd_status(self, cmd: _Command) -> None:
        for node_id in cmd.ids():
            self._status_line(node_id)
            node = self.nodes[node_id]
            for peer in sorted(node.conf.ids):
                pr = node.progress(peer)
                if pr is not None:
                    self.out.append(f"  {peer}: {pr}")

    def _status_line(self, node_id: int) -> None:
        s = self.nodes[node_id].status()
        leader = "none" if s.leader is None else s.leader
        conf = describe_conf(self.nodes[node_id].conf)
        snapshot = (f" snapshot={s.snapshot_index} first={s.first_index}"
                    if s.snapshot_index or s.first_index > 1 else "")
        self.out.append(f"{node_id}: {s.role.value} term={s.term} leader={leader} "
                        f"commit={s.commit} applied={s.applied} last={s.last_index}{snapshot} "
                        f"{conf}")

    def _cmd_log(self, cmd: _Command) -> None:
        for node_id in cmd.ids():
            state = self.storages[node_id].load()
            self.out.append(f"{node_id}: durable HardState {_hard_state(state.hard_state)}")
            self.out += [f"  {describe_entry(e)}" for e in state.entries] or ["  (no entries)"]


def _meta(meta: SnapshotMeta) -> str:
    return f"{meta.term}/{meta.index} {describe_conf(meta.conf)}"


def _hard_state(hs: HardState) -> str:
    vote = "none" if hs.vote is None else hs.vote
    return f"term={hs.term} vote={vote} commit={hs.commit}"


def _terms(spec: str) -> list[int]:
    """``1,2*3`` -> [1, 2, 2, 2]."""
    terms: list[int] = []
    for part in filter(None, spec.split(",")):
        term, _, count = part.partition("*")
        terms += [int(term)] * int(count or 1)
    return terms

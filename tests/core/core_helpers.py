"""Helpers for driving a bare ``RaftNode`` in unit tests: build, flush, elect, and a tiny network.

Tests use a config where one tick is one second: heartbeats every ``HEARTBEAT`` ticks and an
election timeout of ``ELECTION`` ticks (randomized in [ELECTION, 2 * ELECTION)).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from raftly.core import (
    AppendEntries,
    AppendEntriesResponse,
    Config,
    ConfState,
    Entry,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InitialState,
    Message,
    RaftNode,
    ReadState,
    RequestVote,
    RequestVoteResponse,
    Role,
    SnapshotMeta,
)

ELECTION = 10
HEARTBEAT = 2

M = TypeVar("M", bound=Message)


def config(**overrides: Any) -> Config:
    settings: dict[str, Any] = {
        "tick_interval": 1.0,
        "heartbeat_interval": float(HEARTBEAT),
        "election_timeout": float(ELECTION),
    }
    settings.update(overrides)
    return Config(**settings)


def entries_of(*terms: int, start: int = 1) -> list[Entry]:
    """Consecutive entries from ``start`` with the given terms; data names the index and term."""
    return [Entry(start + n, t, f"{start + n}@{t}".encode()) for n, t in enumerate(terms)]


def new_node(
    node_id: int = 1,
    voters: Iterable[int] = (1, 2, 3),
    *,
    terms: Iterable[int] = (),
    term: int | None = None,
    vote: int | None = None,
    commit: int = 0,
    cfg: Config | None = None,
    seed: int = 0,
) -> RaftNode:
    """A node recovered with a log of the given ``terms`` (index 1 onwards) and hard state."""
    log = entries_of(*terms)
    if term is None:
        term = max((e.term for e in log), default=0)
    state = InitialState(
        HardState(term, vote, commit), SnapshotMeta(0, 0, ConfState(frozenset(voters))), log
    )
    return RaftNode(node_id, state, cfg or config(), random.Random(seed))


@dataclass
class Output:
    """Everything a node handed out over one or more Ready batches."""

    hard_states: list[HardState] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    committed: list[Entry] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)

    def of(self, kind: type[M], dst: int | None = None) -> list[M]:
        return [m for m in self.messages if isinstance(m, kind) and (dst is None or m.dst == dst)]


def flush(node: RaftNode) -> Output:
    """Run ready/advance until the node has no more work; collect what it handed out."""
    out = Output()
    for _ in range(1000):
        if not node.has_ready():
            return out
        rd = node.ready()
        if rd.hard_state is not None:
            out.hard_states.append(rd.hard_state)
        out.entries += rd.entries
        out.messages += rd.early_messages + rd.messages
        out.committed += rd.committed_entries
        out.read_states += rd.read_states
        node.advance(rd)
    raise AssertionError("node never ran out of work")


def tick(node: RaftNode, n: int) -> Output:
    out = Output()
    for _ in range(n):
        node.tick()
        step_out = flush(node)
        for name in ("hard_states", "entries", "messages", "committed", "read_states"):
            getattr(out, name).extend(getattr(step_out, name))
    return out


def tick_until(
    node: RaftNode, pred: Callable[[Output], bool], limit: int = 1000
) -> tuple[int, Output]:
    """Tick (flushing after each tick) until ``pred`` holds of the output; return ticks used."""
    for n in range(1, limit + 1):
        node.tick()
        out = flush(node)
        if pred(out):
            return n, out
    raise AssertionError(f"condition not reached within {limit} ticks")


def grant(msg: RequestVote) -> RequestVoteResponse:
    return RequestVoteResponse(term=msg.term, src=msg.dst, dst=msg.src, granted=True,
                               pre_vote=msg.pre_vote)


def elect(node: RaftNode) -> None:
    """Make ``node`` leader by timing it out and granting every vote it asks for.

    Its work as a new leader (the no-op entry, the first AppendEntries) is left pending.
    """
    for _ in range(1000):
        if node.role is Role.LEADER:
            return
        out = flush(node)
        asks = out.of(RequestVote)
        if not asks:
            node.tick()
            continue
        for msg in asks:
            if node.role is Role.LEADER:
                break
            node.step(grant(msg))
    raise AssertionError("node did not become leader")


def leader_with(
    node_id: int = 1, voters: Iterable[int] = (1, 2, 3), *, replicate: bool = True, **kw: Any
) -> RaftNode:
    """An elected leader whose no-op is durable; with ``replicate``, every follower acked it.

    All pending output is flushed away, so the caller starts from a quiet leader.
    """
    node = new_node(node_id, voters, **kw)
    elect(node)
    flush(node)
    if replicate:
        for peer in sorted(node.voters - {node.id}):
            node.step(ack(node, peer, node.log.last_index))
        flush(node)
    return node


def ack(leader: RaftNode, src: int, index: int) -> AppendEntriesResponse:
    return AppendEntriesResponse(term=leader.term, src=src, dst=leader.id, success=True,
                                 index=index)


def append(
    to: RaftNode, *, src: int = 2, term: int | None = None, prev_index: int, prev_term: int,
    entries: list[Entry] | None = None, commit: int = 0,
) -> AppendEntries:
    return AppendEntries(term=to.term if term is None else term, src=src, dst=to.id,
                         prev_index=prev_index, prev_term=prev_term, entries=entries or [],
                         commit=commit)


def heartbeat(to: RaftNode, *, src: int = 2, term: int | None = None, commit: int = 0,
              seq: int = 0) -> Heartbeat:
    return Heartbeat(term=to.term if term is None else term, src=src, dst=to.id, commit=commit,
                     seq=seq)


def heartbeat_response(leader: RaftNode, src: int, seq: int = 0) -> HeartbeatResponse:
    return HeartbeatResponse(term=leader.term, src=src, dst=leader.id, seq=seq)


class Net:
    """Several RaftNodes wired together; messages delivered in order until the network is quiet.

    ``blocked`` holds (src, dst) links that drop messages. Nothing is ticked unless asked.
    """

    def __init__(self, ids: Iterable[int] = (1, 2, 3), cfg: Config | None = None,
                 states: dict[int, InitialState] | None = None) -> None:
        ids = list(ids)
        self.nodes: dict[int, RaftNode] = {}
        for i in ids:
            state = (states or {}).get(i) or InitialState.bootstrap(ids)
            self.nodes[i] = RaftNode(i, state, cfg or config(), random.Random(i))
        self.blocked: set[tuple[int, int]] = set()
        self.applied: dict[int, list[Entry]] = {i: [] for i in ids}
        self.read_states: dict[int, list[ReadState]] = {i: [] for i in ids}
        self.delivered: list[Message] = []

    def isolate(self, i: int) -> None:
        for j in self.nodes:
            if j != i:
                self.blocked |= {(i, j), (j, i)}

    def settle(self, limit: int = 10_000) -> None:
        for _ in range(limit):
            queue: list[Message] = []
            for i, node in self.nodes.items():
                out = flush(node)
                self.applied[i] += out.committed
                self.read_states[i] += out.read_states
                queue += out.messages
            if not queue:
                return
            for msg in queue:
                if (msg.src, msg.dst) in self.blocked:
                    continue
                self.delivered.append(msg)
                self.nodes[msg.dst].step(msg)
        raise AssertionError("network never went quiet")

    def tick(self, n: int = 1, only: Iterable[int] | None = None) -> None:
        for _ in range(n):
            for i in only if only is not None else list(self.nodes):
                self.nodes[i].tick()
            self.settle()

    def elect(self, i: int) -> RaftNode:
        """Tick node ``i`` alone until it leads; the others never time out meanwhile."""
        node = self.nodes[i]
        for _ in range(10 * ELECTION):
            if node.role is Role.LEADER:
                self.settle()
                return node
            self.tick(only=[i])
        raise AssertionError(f"node {i} did not become leader")

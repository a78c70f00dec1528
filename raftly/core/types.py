"""Plain data of the Raft core: log entries, hard state, membership and snapshot metadata.

These are the values the core hands to a driver and takes back from storage. They carry no
behaviour beyond small helpers, so storage, transport and the simulator can share them freely.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import IntEnum
from itertools import pairwise

_CANONICAL_ID = re.compile(r"0|[1-9][0-9]*")

NodeId = int
"""Nodes are named by small non-negative integers, unique within a cluster."""


class EntryType(IntEnum):
    """What a log entry carries."""

    COMMAND = 0
    """A user command for the state machine."""
    NOOP = 1
    """The empty entry a new leader appends so that entries of earlier terms commit."""
    CONFIG = 2
    """A membership configuration; the newest one in a node's log is the one it uses."""


@dataclass(slots=True, frozen=True)
class Entry:
    """One log entry. ``data`` is opaque to the core (for CONFIG entries, see ``ConfState``)."""

    index: int
    term: int
    data: bytes = b""
    type: EntryType = EntryType.COMMAND


@dataclass(slots=True, frozen=True)
class HardState:
    """What must be durable before a node speaks: its term, its vote in that term, its commit.

    ``commit`` is not needed for safety (Raft keeps it volatile) but lets a restarted node apply
    what it knows is committed without waiting for a leader. It never exceeds the last entry
    that is durable alongside it.
    """

    term: int = 0
    vote: NodeId | None = None
    commit: int = 0

    def same_election(self, other: HardState) -> bool:
        """Whether term and vote match: the part that must be durable before a node speaks."""
        return self.term == other.term and self.vote == other.vote


@dataclass(slots=True, frozen=True)
class ConfState:
    """The voting members of the cluster."""

    voters: frozenset[NodeId] = field(default_factory=frozenset)

    def encode(self) -> bytes:
        """The payload of a CONFIG entry: voter ids as comma-separated decimal ASCII."""
        return ",".join(str(v) for v in sorted(self.voters)).encode("ascii")

    @classmethod
    def decode(cls, data: bytes) -> ConfState:
        """Parse a CONFIG entry's payload; raises ValueError on anything malformed.

        Only what ``encode`` writes is accepted: decimal ids without sign, spaces, underscores
        or leading zeros, strictly increasing (so no duplicates).
        """
        text = data.decode("ascii")
        if not text:
            return cls(frozenset())
        ids: list[int] = []
        for part in text.split(","):
            if not _CANONICAL_ID.fullmatch(part):
                raise ValueError(f"malformed node id {part!r} in configuration {text!r}")
            ids.append(int(part))
        if any(a >= b for a, b in pairwise(ids)):
            raise ValueError(f"node ids not strictly increasing in configuration {text!r}")
        return cls(frozenset(ids))


@dataclass(slots=True, frozen=True)
class SnapshotMeta:
    """Where a snapshot (or, at index 0, the bootstrap configuration) sits in the log."""

    index: int = 0
    term: int = 0
    conf: ConfState = field(default_factory=ConfState)


@dataclass(slots=True, frozen=True)
class Snapshot:
    """A state machine image covering every entry up to ``meta.index``."""

    meta: SnapshotMeta
    data: bytes = b""


@dataclass(slots=True)
class InitialState:
    """What a node is built from: what storage recovered, or a fresh cluster's bootstrap.

    ``entries`` are the log entries after ``snapshot.index``, consecutive and in order.
    """

    hard_state: HardState
    snapshot: SnapshotMeta
    entries: list[Entry] = field(default_factory=list)

    @classmethod
    def bootstrap(cls, voters: frozenset[NodeId] | set[NodeId] | list[NodeId]) -> InitialState:
        """The state of a brand-new node of a cluster whose first members are ``voters``."""
        return cls(HardState(), SnapshotMeta(conf=ConfState(frozenset(voters))), [])

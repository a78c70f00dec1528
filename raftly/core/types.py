"""Plain data of the Raft core: log entries, hard state, membership and snapshot metadata.

These are the values the core hands to a driver and takes back from storage. They carry no
behaviour beyond small helpers, so storage, transport and the simulator can share them freely.
"""

from __future__ import annotations

import json
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
class Member:
    """Who a node is, as far as the cluster's configuration records it.

    The core only looks at ``id`` and ``promote``; names and addresses are carried for the
    server (transport peers, API redirects) and are empty where unknown (the simulator).
    """

    id: NodeId
    name: str = ""
    """The operator's name for it ("n4"); unique in a configuration when set."""
    raft: str = ""
    """"host:port" its Raft transport listens on; unique in a configuration when set."""
    api: str = ""
    """"host:port" of its client API; unique in a configuration when set."""
    promote: bool = True
    """For a learner: the leader promotes it to voter once caught up (False: stays a learner)."""


UNIQUE_MEMBER_FIELDS = ("name", "raft", "api")
"""The fields of ``Member`` no two members of a configuration may share (when set)."""

_CONF_VERSION = 1
_CONF_KEYS = frozenset({"v", "voters", "learners", "members"})
_MEMBER_KEYS = frozenset({"id", "name", "raft", "api", "promote"})


@dataclass(slots=True, frozen=True)
class ConfState:
    """The members of the cluster: voters, learners (replicated to, never voting) and who they are.

    ``members`` is sorted by id and holds one ``Member`` per node, or is empty when addresses
    are unknown (the simulator, data written before members were recorded).
    """

    voters: frozenset[NodeId] = field(default_factory=frozenset)
    learners: frozenset[NodeId] = field(default_factory=frozenset)
    members: tuple[Member, ...] = ()

    @property
    def ids(self) -> frozenset[NodeId]:
        """Every node of the configuration, voter or learner."""
        return self.voters | self.learners

    def member(self, id: NodeId) -> Member | None:
        """The recorded member with this id, if any."""
        return next((m for m in self.members if m.id == id), None)

    def by_name(self, name: str) -> Member | None:
        """The recorded member with this name, if any."""
        return next((m for m in self.members if name and m.name == name), None)

    def validate(self) -> None:
        """Raise ValueError unless this is a well-formed configuration.

        Voters and learners are disjoint and there is at least one voter; recorded members are
        sorted by id, one per node, with unique names, Raft and API addresses (where set).
        """
        if not self.voters:
            raise ValueError("a configuration needs at least one voter")
        if self.voters & self.learners:
            both = sorted(self.voters & self.learners)
            raise ValueError(f"nodes {both} are both voter and learner")
        if not self.members:
            return
        ids = [m.id for m in self.members]
        if any(a >= b for a, b in pairwise(ids)):
            raise ValueError("members not strictly increasing by id")
        if frozenset(ids) != self.ids:
            raise ValueError(f"members {ids} do not match voters and learners {sorted(self.ids)}")
        for what in UNIQUE_MEMBER_FIELDS:
            values = [getattr(m, what) for m in self.members if getattr(m, what)]
            if len(values) != len(set(values)):
                raise ValueError(f"duplicate member {what} in configuration")

    def encode(self) -> bytes:
        """The payload of a CONFIG entry (also stored in snapshot and log-start metadata).

        A voters-only configuration keeps the original form, voter ids as comma-separated
        decimal ASCII, so existing data and logs read and write unchanged; anything more is
        canonical JSON (sorted keys, no spaces) with a version field ``v``.
        """
        if not self.learners and not self.members:
            return ",".join(str(v) for v in sorted(self.voters)).encode("ascii")
        doc = {
            "v": _CONF_VERSION,
            "voters": sorted(self.voters),
            "learners": sorted(self.learners),
            "members": [
                {"id": m.id, "name": m.name, "raft": m.raft, "api": m.api, "promote": m.promote}
                for m in self.members
            ],
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("ascii")

    @classmethod
    def decode(cls, data: bytes) -> ConfState:
        """Parse what ``encode`` writes (either form); raises ValueError on anything malformed.

        Only the canonical encoding is accepted, and the JSON form must satisfy ``validate``:
        a corrupt payload must not silently decode to some membership.
        """
        if data.startswith(b"{"):
            return cls._decode_json(data)
        return cls._decode_voter_list(data)

    @classmethod
    def _decode_voter_list(cls, data: bytes) -> ConfState:
        # Decimal ids without sign, spaces, underscores or leading zeros, strictly increasing.
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

    @classmethod
    def _decode_json(cls, data: bytes) -> ConfState:
        try:
            doc = json.loads(data.decode("ascii"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise ValueError(f"malformed configuration: {e}") from None
        if not isinstance(doc, dict) or frozenset(doc) != _CONF_KEYS:
            raise ValueError("malformed configuration: wrong fields")
        if doc["v"] != _CONF_VERSION or type(doc["v"]) is not int:
            raise ValueError(f"unsupported configuration version {doc['v']!r}")
        if not isinstance(doc["members"], list):
            raise ValueError("malformed configuration: members is not a list")
        conf = cls(
            frozenset(_id_list(doc["voters"])),
            frozenset(_id_list(doc["learners"])),
            tuple(_member(m) for m in doc["members"]),
        )
        conf.validate()
        if conf.encode() != data:
            raise ValueError("configuration is not in canonical form")
        return conf


def _node_id(value: object) -> NodeId:
    if type(value) is not int or value < 0:
        raise ValueError(f"malformed node id {value!r} in configuration")
    return value


def _id_list(value: object) -> list[NodeId]:
    if not isinstance(value, list):
        raise ValueError("malformed configuration: id list expected")
    ids = [_node_id(v) for v in value]
    if any(a >= b for a, b in pairwise(ids)):
        raise ValueError("node ids not strictly increasing in configuration")
    return ids


def _member(value: object) -> Member:
    if not isinstance(value, dict) or frozenset(value) != _MEMBER_KEYS:
        raise ValueError("malformed configuration member")
    name, raft, api, promote = value["name"], value["raft"], value["api"], value["promote"]
    if not all(isinstance(v, str) for v in (name, raft, api)) or type(promote) is not bool:
        raise ValueError("malformed configuration member")
    return Member(_node_id(value["id"]), name, raft, api, promote)


class ConfChangeType(IntEnum):
    """The single-server changes a leader can make to the configuration."""

    ADD_LEARNER = 1
    """Add a new node as a learner (it receives the log, never votes)."""
    PROMOTE = 2
    """Make a learner a voter."""
    REMOVE = 3
    """Remove a voter or learner."""


@dataclass(slots=True, frozen=True)
class ConfChange:
    """One membership change; for PROMOTE and REMOVE only ``member.id`` matters."""

    type: ConfChangeType
    member: Member


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

"""The messages Raft nodes exchange.

Each message kind is its own slotted dataclass so that handlers, the wire codec and tests name
fields rather than decode a catch-all record. Every message carries the sender's ``term`` and the
``src`` and ``dst`` node ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raftly.core.types import Entry, NodeId, Snapshot


@dataclass(slots=True, kw_only=True)
class Message:
    """Fields common to every message."""

    term: int
    src: NodeId
    dst: NodeId


@dataclass(slots=True, kw_only=True)
class RequestVote(Message):
    """Ask for a vote (or, with ``pre_vote``, whether a vote would be granted at ``term``).

    ``transfer`` marks a campaign started by leadership transfer: voters then set aside the
    rule that ignores candidates while a leader is known.
    """

    last_log_index: int
    last_log_term: int
    pre_vote: bool = False
    transfer: bool = False


@dataclass(slots=True, kw_only=True)
class RequestVoteResponse(Message):
    granted: bool
    pre_vote: bool = False


@dataclass(slots=True, kw_only=True)
class AppendEntries(Message):
    """Replicate ``entries`` following (``prev_index``, ``prev_term``); carries the commit index."""

    prev_index: int
    prev_term: int
    entries: list[Entry] = field(default_factory=list)
    commit: int = 0


@dataclass(slots=True, kw_only=True)
class AppendEntriesResponse(Message):
    """Answer to AppendEntries.

    On success ``index`` is the last index the follower now holds that matches the leader. On
    rejection ``index`` echoes the rejected ``prev_index`` and the hints let the leader skip a
    whole term per round trip: ``conflict_term`` is the term the follower has at ``prev_index``
    (0 if its log is shorter) and ``conflict_index`` the first index it holds of that term (or its
    last index + 1 when its log is shorter).
    """

    success: bool
    index: int
    conflict_term: int = 0
    conflict_index: int = 0


@dataclass(slots=True, kw_only=True)
class Heartbeat(Message):
    """Leader liveness; ``commit`` is capped at what the follower is known to hold.

    ``seq`` numbers the leader's heartbeat rounds; the follower echoes it back, which both
    confirms leadership for the ReadIndex requests of rounds up to ``seq`` and tells the leader
    which appends, sent before the round, must have arrived.
    """

    commit: int
    seq: int = 0


@dataclass(slots=True, kw_only=True)
class HeartbeatResponse(Message):
    """Echoes the round ``seq``. ``accepted`` is the last index the follower took from this
    term's leader, durable or not: the answer is sent at once, without waiting for the
    follower's disk, and tells the leader whether the appends it sent before the round arrived.
    """

    seq: int = 0
    accepted: int = 0


@dataclass(slots=True, kw_only=True)
class InstallSnapshot(Message):
    snapshot: Snapshot


@dataclass(slots=True, kw_only=True)
class TimeoutNow(Message):
    """Sent by a leader transferring leadership: campaign at once."""


@dataclass(slots=True, kw_only=True)
class ReadIndexRequest(Message):
    """A follower asks the leader for a safe read index on behalf of a local reader."""

    context: bytes


@dataclass(slots=True, kw_only=True)
class ReadIndexResponse(Message):
    context: bytes
    index: int


ALL_MESSAGE_TYPES: tuple[type[Message], ...] = (
    RequestVote,
    RequestVoteResponse,
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    TimeoutNow,
    ReadIndexRequest,
    ReadIndexResponse,
)

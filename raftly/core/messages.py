"""The messages Raft nodes exchange.

Each message kind is its own slotted dataclass so that handlers, the wire codec and tests name
fields rather than decode a catch-all record. Every message carries the sender's ``term`` and the
``src`` and ``dst`` node ids. ``str(message)`` is a compact one-line form for logs and transcript
tests, e.g. ``1->2 AppendEntries term=2 prev=1/5 commit=5 entries=[2/6 COMMAND "foo"]``; entries
and positions are written ``term/index``, as etcd's raft does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raftly.core.types import ConfState, Entry, EntryType, NodeId, Snapshot


def describe_entry(entry: Entry) -> str:
    """``term/index TYPE "data"``: one entry on one line (no data shown for a NOOP)."""
    text = f"{entry.term}/{entry.index} {entry.type.name}"
    if entry.type is EntryType.NOOP and not entry.data:
        return text
    if entry.type is EntryType.CONFIG:
        try:
            return f"{text} {describe_conf(ConfState.decode(entry.data))}"
        except ValueError:
            pass  # shown as bytes: a printout must not fail on a corrupt entry
    return f"{text} {_quote(entry.data)}"


def describe_conf(conf: ConfState) -> str:
    """``voters=1,2,3 learners=4``: a configuration on one line (learners only if any)."""
    text = "voters=" + ",".join(str(v) for v in sorted(conf.voters))
    if conf.learners:
        text += " learners=" + ",".join(str(v) for v in sorted(conf.learners))
    return text


def _quote(data: bytes) -> str:
    # Opaque bytes, escaped as in a bytes literal so that a printout stays on one line.
    return f'"{repr(data)[2:-1]}"'


@dataclass(slots=True, kw_only=True)
class Message:
    """Fields common to every message."""

    term: int
    src: NodeId
    dst: NodeId

    def __str__(self) -> str:
        details = self._details()
        head = f"{self.src}->{self.dst} {type(self).__name__} term={self.term}"
        return f"{head} {details}" if details else head

    def _details(self) -> str:
        """The fields particular to this kind of message, for ``__str__``."""
        return ""


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

    def _details(self) -> str:
        flags = "".join(f" {name}" for name, on in (("pre-vote", self.pre_vote),
                                                    ("transfer", self.transfer)) if on)
        return f"last={self.last_log_term}/{self.last_log_index}{flags}"


@dataclass(slots=True, kw_only=True)
class RequestVoteResponse(Message):
    granted: bool
    pre_vote: bool = False

    def _details(self) -> str:
        answer = "granted" if self.granted else "rejected"
        return f"{answer} pre-vote" if self.pre_vote else answer


@dataclass(slots=True, kw_only=True)
class AppendEntries(Message):
    """Replicate ``entries`` following (``prev_index``, ``prev_term``); carries the commit index."""

    prev_index: int
    prev_term: int
    entries: list[Entry] = field(default_factory=list)
    commit: int = 0

    def _details(self) -> str:
        entries = ", ".join(describe_entry(e) for e in self.entries)
        return f"prev={self.prev_term}/{self.prev_index} commit={self.commit} entries=[{entries}]"


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

    def _details(self) -> str:
        if self.success:
            return f"index={self.index}"
        return (f"reject index={self.index} "
                f"hint={self.conflict_term}/{self.conflict_index}")


@dataclass(slots=True, kw_only=True)
class Heartbeat(Message):
    """Leader liveness; ``commit`` is capped at what the follower is known to hold.

    ``seq`` numbers the leader's heartbeat rounds; the follower echoes it back, which both
    confirms leadership for the ReadIndex requests of rounds up to ``seq`` and tells the leader
    which appends, sent before the round, must have arrived.
    """

    commit: int
    seq: int = 0

    def _details(self) -> str:
        return f"commit={self.commit} seq={self.seq}"


@dataclass(slots=True, kw_only=True)
class HeartbeatResponse(Message):
    """Echoes the round ``seq``. ``accepted`` is the last index the follower took from this
    term's leader, durable or not: the answer is sent at once, without waiting for the
    follower's disk, and tells the leader whether the appends it sent before the round arrived.
    """

    seq: int = 0
    accepted: int = 0

    def _details(self) -> str:
        return f"seq={self.seq} accepted={self.accepted}"


@dataclass(slots=True, kw_only=True)
class InstallSnapshot(Message):
    snapshot: Snapshot

    def _details(self) -> str:
        meta = self.snapshot.meta
        voters = ",".join(str(v) for v in sorted(meta.conf.voters))
        return f"snapshot={meta.term}/{meta.index} voters=[{voters}]"


@dataclass(slots=True, kw_only=True)
class TimeoutNow(Message):
    """Sent by a leader transferring leadership: campaign at once."""


@dataclass(slots=True, kw_only=True)
class ReadIndexRequest(Message):
    """A follower asks the leader for a safe read index on behalf of a local reader."""

    context: bytes

    def _details(self) -> str:
        return f"context={_quote(self.context)}"


@dataclass(slots=True, kw_only=True)
class ReadIndexResponse(Message):
    context: bytes
    index: int

    def _details(self) -> str:
        return f"context={_quote(self.context)} index={self.index}"


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

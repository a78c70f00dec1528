"""``Progress``: what a leader knows of one follower's log, and how it sends to it.

A follower is probed (one AppendEntries at a time, backing off on rejection) until its match is
found, then replicated to (AppendEntries pipelined, at most ``max_inflight`` in flight), the
scheme of etcd's raft. Bounding the in-flight window bounds what a slow follower costs. A follower
that needs entries the leader compacted is sent a snapshot, and nothing else but heartbeats until
it holds the snapshot or the driver reports the transfer over.
``str(progress)`` is a one-line form for logs and transcript tests.
"""

from __future__ import annotations

from collections import deque
from enum import Enum


class ProgressState(Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


# Read for every message, as module constants: on Python 3.11 each ``ProgressState.PROBE`` goes
# through the enum metaclass's __getattr__ hook (about 70 ns; gone in Python 3.12).
_PROBE = ProgressState.PROBE
_REPLICATE = ProgressState.REPLICATE
_SNAPSHOT = ProgressState.SNAPSHOT


class Progress:
    """Replication state of one follower, kept by the leader."""

    __slots__ = (
        "heartbeat_mark",
        "heartbeat_seq",
        "inflight",
        "match",
        "next",
        "pending_snapshot",
        "probe_sent",
        "recent_active",
        "sent_commit",
        "settle_seq",
        "state",
    )

    def __init__(self, next_index: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.inflight: deque[int] = deque()
        """The last index of each AppendEntries in flight, oldest first (REPLICATE only)."""
        self.recent_active = False
        """Heard from within the current check-quorum window."""
        self.heartbeat_seq = 0
        """The round of the last heartbeat sent to this follower."""
        self.heartbeat_mark = 0
        """The newest index in flight when that heartbeat went out (0 if none)."""
        self.sent_commit = 0
        """The highest commit index sent in an AppendEntries."""
        self.pending_snapshot = 0
        """The index of the snapshot being sent (SNAPSHOT only)."""
        self.settle_seq = 0
        """The newest round whose answer said the follower took what is in flight though its
        acks are missing: a later such round sends an empty append to settle them."""

    def __str__(self) -> str:
        flags = "".join(f" {name}" for name, on in (("probe-sent", self.probe_sent),
                                                    ("active", self.recent_active)) if on)
        pending = (f" pending={self.pending_snapshot}"
                   if self.state is ProgressState.SNAPSHOT else "")
        return (f"Progress(match={self.match} next={self.next} state={self.state.value}"
                f"{pending} inflight={len(self.inflight)}{flags})")

    def can_send(self, max_inflight: int) -> bool:
        state = self.state
        if state is _PROBE:
            return not self.probe_sent
        if state is _SNAPSHOT:
            return False
        return len(self.inflight) < max_inflight

    def sent(self, last_index: int, had_entries: bool) -> None:
        """Record an AppendEntries that carried entries up to ``last_index``."""
        if self.state is _PROBE:
            self.probe_sent = True
        elif had_entries:
            self.next = last_index + 1
            self.inflight.append(last_index)

    def acknowledge(self, index: int) -> bool:
        """The follower holds everything up to ``index``; return whether ``match`` moved."""
        while self.inflight and self.inflight[0] <= index:
            self.inflight.popleft()
        if index <= self.match:
            return False
        self.match = index
        self.next = max(self.next, index + 1)
        if self.state is _PROBE:
            self.become_replicate()
        return True

    def become_probe(self) -> None:
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.inflight.clear()
        self.next = self.match + 1

    def become_snapshot(self, index: int) -> None:
        """A snapshot covering ``index`` is on its way to the follower."""
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = index
        self.probe_sent = False
        self.inflight.clear()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.probe_sent = False
        self.inflight.clear()
        self.next = self.match + 1

"""Exceptions raised by the Raft core."""

from __future__ import annotations

from raftly.core.types import NodeId


class RaftError(Exception):
    """Base of the errors the core raises to its caller."""


class NotLeader(RaftError):
    """The request needs the leader. ``leader`` is the one this node knows of, if any."""

    def __init__(self, leader: NodeId | None) -> None:
        super().__init__(f"not the leader (leader: {leader if leader is not None else 'unknown'})")
        self.leader = leader


class ProposalDropped(RaftError):
    """The leader refuses new proposals for now (for example during a leadership transfer)."""


class ConfChangeRefused(RaftError):
    """The leader refuses a membership change; nothing changed.

    ``code`` says why: "in_flight" (a change is not yet committed), "not_ready" (no entry of
    the leader's term is committed yet), "exists" (id, name or Raft address in use), "unknown"
    (no such member), "not_learner", "behind" (the learner is not caught up), "last_voter".
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class InvariantError(AssertionError):
    """An internal invariant of Raft broke: a bug, or corrupt state handed to the core."""

"""What a ``RaftServer`` reports as it runs: the hook that metrics and the cluster page hang on.

The server calls its observers on the event loop, at the moments an operator cares about: a
proposal's outcome and how long it took, each fsynced save with the entries it carried, each
change of role, term or leader, and each snapshot it wrote. Observers must be cheap (the calls
sit on the commit path) and must not raise; the server does not guard against either. Gauges
that can be read at any time (indexes, the followers' match) are read from the server when
needed, not pushed here.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Protocol

from raftly.core.node import Role
from raftly.core.types import NodeId


class ProposalOutcome(Enum):
    OK = "ok"
    DROPPED = "dropped"
    """Definitely not applied (a new leader replaced the entry, a transfer was under way)."""
    TIMED_OUT = "timed_out"
    """No outcome before the deadline (or overtaken by a snapshot): it may still be applied."""


class ServerObserver(Protocol):
    def proposal_finished(self, seconds: float, outcome: ProposalOutcome) -> None:
        """A proposal this node accepted as leader ended, ``seconds`` after it was made."""

    def saved(self, seconds: float, entries: int) -> None:
        """One save that had to reach the disk (fsync) took ``seconds`` and carried
        ``entries`` log entries (0: a term or vote change only)."""

    def role_changed(self, role: Role, term: int, leader: NodeId | None) -> None:
        """This node's role, term or known leader changed, as seen after a Ready. An election
        this node started shows as a new term with the role CANDIDATE, or LEADER straight away
        when it won within one step (a single voter); PRE_CANDIDATE keeps the term."""

    def snapshot_taken(self, seconds: float, size: int, index: int) -> None:
        """This node wrote a snapshot of its own state machine up to ``index``: ``size`` bytes
        in ``seconds``."""


class Observers:
    """Several observers as one (the server holds exactly one)."""

    __slots__ = ("_all",)

    def __init__(self, observers: Sequence[ServerObserver] = ()) -> None:
        self._all = tuple(observers)

    def __bool__(self) -> bool:
        return bool(self._all)

    def proposal_finished(self, seconds: float, outcome: ProposalOutcome) -> None:
        for o in self._all:
            o.proposal_finished(seconds, outcome)

    def saved(self, seconds: float, entries: int) -> None:
        for o in self._all:
            o.saved(seconds, entries)

    def role_changed(self, role: Role, term: int, leader: NodeId | None) -> None:
        for o in self._all:
            o.role_changed(role, term, leader)

    def snapshot_taken(self, seconds: float, size: int, index: int) -> None:
        for o in self._all:
            o.snapshot_taken(seconds, size, index)

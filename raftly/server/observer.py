"""What a ``RaftServer`` reports as it runs: the hook that metrics and the cluster page hang on.

The server calls its observers on the event loop, at the moments an operator cares about: a
proposal's outcome and how long it took, each fsynced save with the entries it carried, each
change of role, term or leader, and each snapshot it wrote. Observers must be cheap (the calls
sit on the commit path) and should not raise. One that does is logged once, with its exception,
and dropped: a bug in an observer must never turn an applied write into an error for its caller
nor stop the node between an fsync and the send that follows it. An observer with a false
``wants_saves`` attribute (optional: true when absent) is not told of saves, and when no
observer wants them the server does not time its fsyncs at all (the cluster page's
``ActivityLog`` does not: with metrics off, nothing but proposals is timed). Gauges
that can be read at any time (indexes, the followers' match) are read from the server when
needed, not pushed here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Protocol

from raftly.core.node import Role
from raftly.core.types import NodeId

logger = logging.getLogger(__name__)


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
    """Several observers as one (the server holds exactly one), each call guarded: an observer
    that raises is logged once and dropped, and the others still hear about it."""

    __slots__ = ("_all", "_savers")

    def __init__(self, observers: Sequence[ServerObserver] = ()) -> None:
        self._all = tuple(observers)
        self._savers = tuple(o for o in self._all if getattr(o, "wants_saves", True))

    def __bool__(self) -> bool:
        return bool(self._all)

    @property
    def wants_saves(self) -> bool:
        """Whether any observer is to be told of saves (so whether to time them)."""
        return bool(self._savers)

    def _each(self, call: Callable[[ServerObserver], None],
              observers: tuple[ServerObserver, ...] | None = None) -> None:
        for o in self._all if observers is None else observers:
            try:
                call(o)
            except Exception:  # a foreign bug must not reach the commit path
                logger.exception("observer %s raised; it is dropped and hears nothing more",
                                 type(o).__qualname__)
                self._all = tuple(x for x in self._all if x is not o)
                self._savers = tuple(x for x in self._savers if x is not o)

    def proposal_finished(self, seconds: float, outcome: ProposalOutcome) -> None:
        self._each(lambda o: o.proposal_finished(seconds, outcome))

    def saved(self, seconds: float, entries: int) -> None:
        self._each(lambda o: o.saved(seconds, entries), self._savers)

    def role_changed(self, role: Role, term: int, leader: NodeId | None) -> None:
        self._each(lambda o: o.role_changed(role, term, leader))

    def snapshot_taken(self, seconds: float, size: int, index: int) -> None:
        self._each(lambda o: o.snapshot_taken(seconds, size, index))

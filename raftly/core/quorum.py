"""Quorum arithmetic: what a majority of the voters has acknowledged or decided.

Every count the core makes goes through here: the commit index (the highest index a majority
holds), the outcome of an election, whether a leader still hears a majority (check-quorum) and
which heartbeat round a majority answered (ReadIndex). Joint consensus and learners change this
module alone: a joint configuration needs a majority of each of its two voter sets, and a
learner is simply not a voter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import Enum

from raftly.core.types import NodeId


class VoteResult(Enum):
    """The outcome of a vote so far."""

    PENDING = "pending"
    """Neither a majority granting nor a majority refusing has answered yet."""
    WON = "won"
    LOST = "lost"


class MajorityConfig:
    """A set of voters in which more than half must agree."""

    __slots__ = ("_quorum", "voters")

    def __init__(self, voters: frozenset[NodeId]) -> None:
        self.voters = voters
        self._quorum = len(voters) // 2 + 1

    def committed_index(self, acked: Callable[[NodeId], int]) -> int:
        """The highest index that a majority of the voters has acknowledged.

        ``acked(voter)`` is what one voter acknowledged (0 for nothing). Used for the commit
        index and for the newest heartbeat round a majority answered.
        """
        if not self.voters:
            return 0
        indexes = sorted(map(acked, self.voters), reverse=True)
        return indexes[self._quorum - 1]

    def vote_result(self, votes: Mapping[NodeId, bool]) -> VoteResult:
        """Won once a majority granted, lost once a majority refused; votes of non-voters and
        voters that have not answered (absent from ``votes``) count for neither."""
        granted = refused = 0
        for voter in self.voters:
            vote = votes.get(voter)
            if vote is True:
                granted += 1
            elif vote is False:
                refused += 1
        if granted >= self._quorum:
            return VoteResult.WON
        if refused >= self._quorum:
            return VoteResult.LOST
        return VoteResult.PENDING

    def __repr__(self) -> str:
        return f"MajorityConfig({sorted(self.voters)})"

"""The asyncio server: runs a Raft node on real storage and a real transport.

``RaftServer`` is the library API for embedding raftly with your own state machine.
"""

from raftly.server.server import (
    Busy,
    MembershipError,
    NotLeader,
    OutcomeUnknown,
    ProposalDropped,
    RaftServer,
    ServerError,
    ServerStatus,
    ServerStopped,
    TransferTimedOut,
    wait_for_agreed_leader,
)

__all__ = [
    "Busy",
    "MembershipError",
    "NotLeader",
    "OutcomeUnknown",
    "ProposalDropped",
    "RaftServer",
    "ServerError",
    "ServerStatus",
    "ServerStopped",
    "TransferTimedOut",
    "wait_for_agreed_leader",
]

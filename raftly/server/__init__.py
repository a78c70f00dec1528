"""The asyncio server: runs a Raft node on real storage and a real transport.

``RaftServer`` is the library API for embedding raftly with your own state machine.
"""

from raftly.server.server import (
    Busy,
    NotLeader,
    OutcomeUnknown,
    ProposalDropped,
    RaftServer,
    ServerError,
    ServerStatus,
    ServerStopped,
    wait_for_agreed_leader,
)

__all__ = [
    "Busy",
    "NotLeader",
    "OutcomeUnknown",
    "ProposalDropped",
    "RaftServer",
    "ServerError",
    "ServerStatus",
    "ServerStopped",
    "wait_for_agreed_leader",
]

"""The Raft algorithm as a pure, deterministic state machine: no I/O, no clock, no threads.

Drive a ``RaftNode`` with ``tick``, ``step``, ``propose`` and ``read_index``; take its work with
``ready()``; report it done with ``advance()``. See ``raftly.core.node`` for the contract.
"""

from raftly.core.config import Config, ConfigError
from raftly.core.errors import (
    ConfChangeRefused,
    InvariantError,
    NotLeader,
    ProposalDropped,
    RaftError,
)
from raftly.core.log import LogReader, MemoryLog
from raftly.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from raftly.core.node import RaftNode, ReadState, Ready, Role, Status
from raftly.core.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    InitialState,
    Member,
    NodeId,
    Snapshot,
    SnapshotMeta,
)

__all__ = [
    "AppendEntries",
    "AppendEntriesResponse",
    "ConfChange",
    "ConfChangeRefused",
    "ConfChangeType",
    "ConfState",
    "Config",
    "ConfigError",
    "Entry",
    "EntryType",
    "HardState",
    "Heartbeat",
    "HeartbeatResponse",
    "InitialState",
    "InstallSnapshot",
    "InvariantError",
    "LogReader",
    "Member",
    "MemoryLog",
    "Message",
    "NodeId",
    "NotLeader",
    "ProposalDropped",
    "RaftError",
    "RaftNode",
    "ReadIndexRequest",
    "ReadIndexResponse",
    "ReadState",
    "Ready",
    "RequestVote",
    "RequestVoteResponse",
    "Role",
    "Snapshot",
    "SnapshotMeta",
    "Status",
    "TimeoutNow",
]

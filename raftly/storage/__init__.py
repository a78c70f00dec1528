"""Durable state of a Raft node: the log, the hard state and the snapshot metadata.

``Storage`` is the interface the server and the simulator drive; ``MemoryStorage`` keeps it in
memory for tests and simulation; ``DiskStorage`` keeps it in a data directory.
``SnapshotStore`` keeps the state-machine snapshot files beside it.
"""

from raftly.storage.base import Storage, StorageError
from raftly.storage.disk import DiskStorage
from raftly.storage.memory import MemoryStorage
from raftly.storage.snapshots import SnapshotStore

__all__ = ["DiskStorage", "MemoryStorage", "SnapshotStore", "Storage", "StorageError"]

"""The durable storage of a Raft node in a data directory.

One concern per module: ``segment`` is the on-disk format of a log segment, ``log`` the set of
segments (index, append, truncate, compact, recovery), ``state`` the hard state and snapshot
metadata files, ``lock`` the directory lock, ``fsio`` the flushing and atomic-replace helpers,
and ``storage`` the ``DiskStorage`` that puts them together behind the ``Storage`` protocol.
"""

from raftly.storage.disk.fsio import FsyncPolicy
from raftly.storage.disk.storage import DEFAULT_SEGMENT_SIZE, DiskStorage

__all__ = ["DEFAULT_SEGMENT_SIZE", "DiskStorage", "FsyncPolicy"]

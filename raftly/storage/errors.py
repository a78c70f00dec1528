"""How storage reports what it finds wrong on disk.

``corrupt`` builds the one error every kind of on-disk corruption is reported with (file and
byte offset), whichever file format found it: the log segments and the state files alike.
``StorageError`` itself is part of the ``Storage`` contract and is defined beside it, in
``raftly.storage.base``; it is re-exported here so error handling needs one import.
"""

from __future__ import annotations

from raftly.storage.base import StorageError

__all__ = ["StorageError", "corrupt"]


def corrupt(path: str, offset: int, what: str) -> StorageError:
    """The one-line error every kind of on-disk corruption is reported with."""
    return StorageError(f"{path}: corrupt at byte offset {offset}: {what}")

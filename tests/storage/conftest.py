"""Fixtures that run one test against every storage implementation.

A ``Harness`` opens a storage and "restarts" it cleanly: a ``MemoryStorage`` is closed and
survives as the same object (what the simulator keeps of a node), a ``DiskStorage`` is closed and
opened anew from its directory, so every durable-state assertion made after ``restart`` checks
the disk.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raftly.storage import DiskStorage, MemoryStorage


class Harness:
    def __init__(self, kind: str, path: Path) -> None:
        self.kind = kind
        self.path = path
        self.storage: Any = self._open()

    def _open(self) -> Any:
        if self.kind == "memory":
            return MemoryStorage()
        return DiskStorage(self.path, segment_size=512)

    def restart(self) -> Any:
        """A clean restart: close (which writes a lazily kept commit index), then reopen."""
        self.storage.close()
        if self.kind == "disk":
            self.storage = self._open()
        return self.storage

    def close(self) -> None:
        self.storage.close()


@pytest.fixture(params=["memory", "disk"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    h = Harness(request.param, tmp_path / "node")
    yield h
    h.close()

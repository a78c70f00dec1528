"""Fixtures of the end-to-end tests: 3-node clusters of real processes, always torn down."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import new_cluster, started

from raftly.localcluster import ProcessCluster


def _started(directory: Path) -> Iterator[ProcessCluster]:
    return started(new_cluster(directory))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ProcessCluster]:
    """A fresh 3-node cluster with a leader, for a test that kills or restarts nodes."""
    yield from _started(tmp_path / "cluster")


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    """A 3-node cluster shared by the tests of one module; they must leave every node running."""
    yield from _started(tmp_path_factory.mktemp("shared"))

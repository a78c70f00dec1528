"""Snapshots and log compaction with real processes: bounded disk, catch-up by InstallSnapshot,
restart from snapshot + log tail after every node was SIGKILLed."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import new_cluster, started

from raftly.kv.client import AsyncClient, Client
from raftly.localcluster import ProcessCluster

SNAPSHOT_ENTRIES = 200
RETAIN = 50
SEGMENT_SIZE = 16 * 1024


@pytest.fixture
def compacting(tmp_path: Path) -> Iterator[ProcessCluster]:
    """A 3-node cluster that snapshots every 200 entries, keeps 50 behind, rolls 16 KiB segments."""
    yield from started(new_cluster(
        tmp_path / "cluster",
        serve_options=["--snapshot-entries", str(SNAPSHOT_ENTRIES),
                       "--snapshot-retain", str(RETAIN), "--segment-size", str(SEGMENT_SIZE)]))


def write_keys(endpoints: list[str], count: int, *, keys: int | None = None,
               prefix: str = "k") -> dict[str, bytes]:
    """Put ``count`` values (over ``keys`` distinct keys, all distinct if None), 16 at a time;
    return the last value acknowledged for each key."""
    acked: dict[str, bytes] = {}

    async def run() -> None:
        async with AsyncClient(endpoints, timeout=30) as kv:
            async def worker(w: int) -> None:
                for i in range(w, count, 16):
                    key = f"{prefix}{i % keys if keys else i:05d}"
                    value = f"v{i}".encode() * 8
                    await kv.put(key, value)
                    acked[key] = value  # workers touch disjoint keys when keys % 16 == 0

            await asyncio.gather(*(worker(w) for w in range(16)))

    asyncio.run(run())
    return acked


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def test_a_cluster_under_steady_writes_compacts_and_its_disk_stays_bounded(
        compacting: ProcessCluster) -> None:
    write_keys(compacting.endpoints, 1000, keys=32)
    sizes = {name: dir_bytes(node.data_dir) for name, node in compacting.nodes.items()}
    written = write_keys(compacting.endpoints, 3000, keys=32)
    _, status = compacting.wait_for_leader()
    for name in compacting.nodes:
        st = compacting.wait_applied(name, status["commit_index"], timeout=30)
        assert st["snapshot_index"] > 3000, st
        # The log holds what follows the last snapshot plus the retained entries, no more.
        assert st["last_index"] - st["first_index"] < SNAPSHOT_ENTRIES + RETAIN + 100, st
        assert st["log_bytes"] < 8 * SEGMENT_SIZE, st
        # Three times as many writes, the same disk: the old segments and snapshots are gone.
        assert dir_bytes(compacting.nodes[name].data_dir) < 2 * sizes[name] + 64 * 1024
        with Client([compacting.nodes[name].api], timeout=15) as kv:
            assert dict(kv.list("k", stale=True)) == written


def test_a_follower_left_behind_catches_up_through_install_snapshot(
        compacting: ProcessCluster) -> None:
    leader, _ = compacting.wait_for_leader()
    follower = next(n for n in compacting.nodes if n != leader)
    compacting.kill(follower, signal.SIGTERM)
    written = write_keys(compacting.endpoints, 1500, prefix="far")
    _, status = compacting.wait_for_leader(among=[n for n in compacting.nodes if n != follower])
    assert status["first_index"] > 1000, status  # the follower's next entry is long gone

    compacting.start([follower])
    caught_up = compacting.wait_applied(follower, status["commit_index"], timeout=60)
    assert caught_up["snapshot_index"] >= status["snapshot_index"] > 0
    assert "installed snapshot" in compacting.nodes[follower].log_tail(200)
    with Client([compacting.nodes[follower].api], timeout=15) as kv:
        assert dict(kv.list("far", limit=10_000, stale=True)) == written


def test_sigkill_of_every_node_restarts_from_snapshot_and_tail_losing_nothing(
        compacting: ProcessCluster) -> None:
    written = write_keys(compacting.endpoints, 1100, prefix="dur")
    for name in compacting.nodes:
        compacting.kill(name, signal.SIGKILL)
    compacting.start()
    _, status = compacting.wait_for_leader(timeout=30)
    for name, node in compacting.nodes.items():
        # The restart's own log line: the first start had no snapshot to restore.
        assert "restored its state machine from snapshot" in node.log_tail(400), name
    with Client(compacting.endpoints, timeout=15) as kv:
        assert dict(kv.list("dur", limit=10_000)) == written
    assert status["snapshot_index"] >= 1000

"""Seeding a node of a new cluster from a backup (raftly.kv.restore): what the data dir holds
afterwards, what is refused before anything is written, and that an interrupted restore leaves
a directory the server refuses to start from."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import io
import json
from pathlib import Path

import pytest
from test_backup import HEADER, _payload, _write

from raftly.core.types import HardState, SnapshotMeta
from raftly.kv import restore
from raftly.kv.cluster_file import ClusterSpec, render_cluster
from raftly.kv.identity import NodeIdentity, read_identity
from raftly.kv.members_http import bootstrap_conf
from raftly.kv.restore import RESTORED_FROM, RestoreError, restore_node
from raftly.kv.state_machine import KVStateMachine
from raftly.localcluster import plan_loopback
from raftly.server.server import RaftServer
from raftly.storage import DiskStorage, StorageError
from raftly.storage.disk import state
from raftly.storage.snapshots import SnapshotStore
from raftly.transport import MemoryNetwork


@pytest.fixture
def cluster(tmp_path: Path) -> tuple[ClusterSpec, Path]:
    spec = plan_loopback(3, cluster_id="cluster-b")
    path = tmp_path / "cluster.toml"
    path.write_text(render_cluster(spec))
    return spec, path


@pytest.fixture
def backup(tmp_path: Path) -> Path:
    path = tmp_path / "a.rbk"
    _write(path, _payload())
    return path


def test_a_restored_data_dir_holds_the_backup_at_its_index_with_the_new_clusters_members(
    tmp_path: Path, cluster: tuple[ClusterSpec, Path], backup: Path,
) -> None:
    spec, cluster_file = cluster
    data_dir = tmp_path / "b" / "n2"
    done = restore_node(backup, cluster_file, data_dir, "n2")
    assert (done.cluster_id, done.name, done.raft_id) == ("cluster-b", "n2", 2)
    conf = bootstrap_conf(spec)
    meta = SnapshotMeta(HEADER.index, HEADER.term, conf)
    storage = DiskStorage(data_dir)
    try:
        loaded = storage.load()
        assert loaded.hard_state == HardState(HEADER.term, None, HEADER.index)
        assert (loaded.snapshot, loaded.entries) == (meta, [])
    finally:
        storage.close()
    store = SnapshotStore(data_dir)
    assert store.newest() == meta
    with store.open(meta) as source:
        payload = source.read()
    assert hashlib.sha256(payload).hexdigest() == done.backup.sha256
    machine = KVStateMachine()
    machine.restore(io.BytesIO(payload))
    assert len(machine.range("", limit=100)[0]) == HEADER.keys
    assert read_identity(data_dir) == NodeIdentity.of(spec, "n2")
    # Which backup: comparable across the nodes (mixing two backups is otherwise silent).
    origin = json.loads((data_dir / RESTORED_FROM).read_text())
    assert origin == {"sha256": done.backup.sha256, "file": str(backup),
                      "index": HEADER.index, "term": HEADER.term,
                      "cluster_id": HEADER.cluster_id}


def test_a_data_dir_that_is_not_empty_is_refused_and_left_as_it_was(
    tmp_path: Path, cluster: tuple[ClusterSpec, Path], backup: Path,
) -> None:
    data_dir = tmp_path / "n1"
    data_dir.mkdir()
    (data_dir / "notes.txt").write_text("mine")
    with pytest.raises(RestoreError, match="not empty"):
        restore_node(backup, cluster[1], data_dir, "n1")
    assert [p.name for p in data_dir.iterdir()] == ["notes.txt"]


def test_an_empty_existing_data_dir_is_accepted(
    tmp_path: Path, cluster: tuple[ClusterSpec, Path], backup: Path,
) -> None:
    data_dir = tmp_path / "n1"
    data_dir.mkdir()
    restore_node(backup, cluster[1], data_dir, "n1")
    assert read_identity(data_dir) is not None


def test_the_backups_own_cluster_id_is_refused_unless_allowed(
    tmp_path: Path, backup: Path,
) -> None:
    cluster_file = tmp_path / "same.toml"
    cluster_file.write_text(render_cluster(plan_loopback(3, cluster_id=HEADER.cluster_id)))
    with pytest.raises(RestoreError, match="backup's own cluster id"):
        restore_node(backup, cluster_file, tmp_path / "n1", "n1")
    assert not (tmp_path / "n1").exists()
    restore_node(backup, cluster_file, tmp_path / "n1", "n1", same_cluster_id=True)


def test_an_unknown_node_or_a_damaged_backup_is_refused_before_the_dir_is_made(
    tmp_path: Path, cluster: tuple[ClusterSpec, Path], backup: Path,
) -> None:
    with pytest.raises(RestoreError, match="no node named 'n9'"):
        restore_node(backup, cluster[1], tmp_path / "n9", "n9")
    raw = bytearray(backup.read_bytes())
    raw[-100] ^= 1
    backup.write_bytes(bytes(raw))
    with pytest.raises(RestoreError, match="checksum mismatch: file damaged"):
        restore_node(backup, cluster[1], tmp_path / "n1", "n1")
    assert not (tmp_path / "n9").exists() and not (tmp_path / "n1").exists()


def test_a_restore_interrupted_before_its_snapshot_file_leaves_a_dir_the_server_refuses(
    tmp_path: Path, cluster: tuple[ClusterSpec, Path],
) -> None:
    """The storage is seeded first: without the snapshot file after it, a start must fail
    rather than serve an empty state as the restored one."""
    data_dir = tmp_path / "n1"
    storage = DiskStorage(data_dir)
    storage.seed(SnapshotMeta(HEADER.index, HEADER.term, bootstrap_conf(cluster[0])),
                 HardState(HEADER.term, None, HEADER.index))
    storage.close()

    async def start() -> None:
        server = RaftServer(1, storage=DiskStorage(data_dir),
                            transport=MemoryNetwork().transport(1),
                            state_machine=KVStateMachine(), snapshots=SnapshotStore(data_dir))
        try:
            await server.start()
        finally:
            await server.close()

    with pytest.raises(StorageError, match="no snapshot"):
        asyncio.run(start())


@pytest.mark.parametrize("existing", [False, True])
def test_a_restore_that_fails_before_its_state_is_written_leaves_nothing_a_node_starts_from(
    tmp_path: Path, cluster: tuple[ClusterSpec, Path], backup: Path,
    monkeypatch: pytest.MonkeyPatch, existing: bool,
) -> None:
    """A full disk at the storage's first state file: the data dir stays as it was (absent, or
    empty), with no LOCK or wal/ a server would start an empty node from, and nothing left
    beside it."""
    data_dir = tmp_path / "nodes" / "n1"
    if existing:
        data_dir.mkdir(parents=True)

    def full(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(state, "write_snapshot_meta", full)
    with pytest.raises(RestoreError, match="No space left on device"):
        restore_node(backup, cluster[1], data_dir, "n1")
    if existing:
        assert list(data_dir.iterdir()) == []
    else:
        assert not data_dir.exists()
    assert [p.name for p in data_dir.parent.iterdir()] == (["n1"] if existing else [])
    monkeypatch.undo()
    restore_node(backup, cluster[1], data_dir, "n1")  # and a retry needs no clean-up
    assert read_identity(data_dir) is not None


def test_a_restore_replaces_nothing_written_into_the_dir_meanwhile(
    tmp_path: Path, cluster: tuple[ClusterSpec, Path], backup: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data_dir = tmp_path / "n1"
    data_dir.mkdir()
    real = restore._seed

    def seed_then_meddle(*args: object) -> None:
        real(*args)  # type: ignore[arg-type]
        (data_dir / "theirs").write_text("x")

    monkeypatch.setattr(restore, "_seed", seed_then_meddle)
    with pytest.raises(RestoreError, match="no longer empty"):
        restore_node(backup, cluster[1], data_dir, "n1")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert [p.name for p in data_dir.iterdir()] == ["theirs"]

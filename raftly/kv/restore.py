"""Seeding one node of a brand-new cluster from a backup (``raftly snapshot restore``).

Every member of the new cluster is restored from the same backup file (etcd's workflow), each
into its own empty data directory, which then holds exactly what ``raftly serve --cluster FILE
--id NAME --data-dir DIR`` starts from:

- the storage (raftly.storage.disk) seeded at the backup's index and term, with the NEW
  cluster's membership (its cluster file's members, names and addresses) as the configuration
  there, an empty log after it, and a hard state of the backup's term, committed up to it;
- the state machine's snapshot file (raftly.storage.snapshots) at that index, its payload the
  backup's, copied and checked against the backup's SHA-256 on the way;
- the node's identity (raftly.kv.identity) in the new cluster: its own cluster id;
- ``RESTORED_FROM`` (JSON): the backup's SHA-256, file name, index and term, so that nodes of one
  new cluster restored from different backups at the same index (which nothing else tells
  apart) can be caught by comparing it across the nodes before they start.

Atomicity: everything is built in a temporary sibling directory (``.DIR.restore-XXXXXX``, next to
``DIR``), each file durably (temporary name, flush, rename, flush of its directory), and only then
renamed to ``DIR`` (over it when it exists and is empty) and the parent flushed. So ``serve``
never sees a half-made directory: a restore that fails or is interrupted leaves ``DIR`` as it
was (absent or empty), never one that starts as an empty node, and a failed restore removes its
temporary directory itself (one left by a crash is a hidden sibling that nothing starts from).
A directory that is not empty is refused before anything is written, and so is one the rename
cannot replace (a mount point: restore into a new directory inside it).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass

from raftly.core.types import HardState, SnapshotMeta
from raftly.kv.backup import BackupError, BackupInfo, open_backup, verify
from raftly.kv.cluster_file import ClusterFileError, ClusterSpec, load_cluster
from raftly.kv.identity import IdentityError, NodeIdentity, claim_data_dir
from raftly.kv.members_http import bootstrap_conf
from raftly.storage import DiskStorage
from raftly.storage.base import StorageError
from raftly.storage.disk.fsio import Syncer, make_dirs, replace_file
from raftly.storage.snapshots import SnapshotStore

logger = logging.getLogger("raftly.kv.restore")

_CHUNK = 1 << 20
RESTORED_FROM = "RESTORED_FROM"
"""The file naming the backup a data dir was restored from (see the module docstring)."""


class RestoreError(Exception):
    """The restore was refused or failed; the message says why (and what to do)."""


@dataclass(frozen=True, slots=True)
class Restored:
    """What ``restore_node`` seeded."""

    backup: BackupInfo
    cluster_id: str
    name: str
    raft_id: int
    data_dir: str


def restore_node(backup: str | os.PathLike[str], cluster_file: str | os.PathLike[str],
                 data_dir: str | os.PathLike[str], name: str, *,
                 same_cluster_id: bool = False) -> Restored:
    """Seed node ``name`` of the cluster in ``cluster_file`` in the empty ``data_dir`` from
    ``backup`` (see the module docstring). RestoreError when the backup, the cluster file or
    the directory will not do; ``same_cluster_id`` allows a new cluster with the backup's own
    cluster id (only once every node of the old cluster is gone for good: an old node could
    otherwise take part in the new cluster's elections with its own log)."""
    try:
        info = verify(backup)
    except BackupError as exc:
        raise RestoreError(str(exc)) from None
    try:
        cluster = load_cluster(os.fspath(cluster_file))
        spec = cluster.node(name)
    except ClusterFileError as exc:
        raise RestoreError(str(exc)) from None
    if cluster.cluster_id == info.header.cluster_id and not same_cluster_id:
        raise RestoreError(
            f"the cluster file {cluster_file} has the backup's own cluster id "
            f"{cluster.cluster_id!r}: give the new cluster an id of its own (cluster_id in "
            "the file), so that a node of the old cluster can never mix with it; if every old "
            "node is gone for good, --same-cluster-id allows it")
    directory = os.path.abspath(os.fspath(data_dir))
    _check_empty(directory)
    building = _make_sibling(directory)
    try:
        _seed(info, cluster, name, building, f"cluster file {cluster_file}")
        _move_into_place(building, directory)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    header = info.header
    logger.info("restored node %s of cluster %s in %s from %s (index %d, term %d)", name,
                cluster.cluster_id, directory, info.path, header.index, header.term)
    return Restored(info, cluster.cluster_id, name, spec.id, directory)


def _seed(info: BackupInfo, cluster: ClusterSpec, name: str, directory: str, source: str) -> None:
    """Write the node's storage, snapshot file and identity in the new, empty ``directory``."""
    header = info.header
    conf = bootstrap_conf(cluster)
    meta = SnapshotMeta(header.index, header.term, conf)
    try:
        storage = DiskStorage(directory, fsync="always")
    except StorageError as exc:
        raise RestoreError(str(exc)) from None
    try:
        storage.seed(meta, HardState(header.term, None, header.index))
        _copy_snapshot(info, SnapshotStore(directory, fsync=True), meta)
        # With the storage's lock still held, as claim_data_dir wants.
        claim_data_dir(directory, NodeIdentity.of(cluster, name), source,
                       stored_voters=conf.voters)
        origin = {"sha256": info.sha256, "file": os.path.abspath(info.path),
                  "index": header.index, "term": header.term,
                  "cluster_id": header.cluster_id}
        replace_file(directory, RESTORED_FROM, json.dumps(origin, indent=1).encode(),
                     Syncer("always"))
    except (StorageError, IdentityError, BackupError, OSError) as exc:
        raise RestoreError(f"restoring into {directory} failed: {exc}") from None
    finally:
        storage.close()


def _check_empty(directory: str) -> None:
    """RestoreError unless ``directory`` is absent or an empty directory."""
    if not os.path.lexists(directory):
        return
    if not os.path.isdir(directory) or os.path.islink(directory):
        raise RestoreError(f"{directory} exists and is not a directory")
    try:
        entries = os.listdir(directory)
    except OSError as exc:
        raise RestoreError(f"cannot read {directory}: {exc.strerror or exc}") from None
    if entries:
        raise RestoreError(f"data dir {directory} is not empty ({len(entries)} entries, "
                           f"e.g. {sorted(entries)[0]!r}): a restore only seeds an empty "
                           "directory (a new node); give another --data-dir")


def _make_sibling(directory: str) -> str:
    """A new, empty temporary directory next to ``directory`` (its parents made durably)."""
    parent, base = os.path.split(directory)
    try:
        make_dirs(parent)
        return tempfile.mkdtemp(prefix=f".{base}.restore-", dir=parent)
    except OSError as exc:
        raise RestoreError(f"cannot create a directory in {parent} to restore into: "
                           f"{exc.strerror or exc}") from None


def _move_into_place(building: str, directory: str) -> None:
    """Rename the finished ``building`` to ``directory`` (replacing it if it is an empty
    directory) and make that durable; the one step that makes the node startable."""
    syncer = Syncer("always")
    try:
        syncer.directory(building)
        os.rename(building, directory)
        syncer.directory(os.path.dirname(directory))
    except OSError as exc:
        if exc.errno in (errno.EXDEV, errno.EBUSY):
            raise RestoreError(f"cannot replace {directory} (a mount point?): restore into a "
                               "new directory inside it instead") from None
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise RestoreError(f"data dir {directory} is no longer empty: something wrote "
                               "there during the restore") from None
        raise RestoreError(f"cannot move the restored node into {directory}: "
                           f"{exc.strerror or exc}") from None


def _copy_snapshot(info: BackupInfo, store: SnapshotStore, meta: SnapshotMeta) -> None:
    """The backup's payload as the store's snapshot ``meta``, checked again as it is copied
    (the file may have changed since it was verified)."""
    writer = store.create(meta)
    try:
        with open_backup(info.path) as (header, payload):
            if header != info.header:
                raise BackupError(f"{info.path} changed while it was being restored")
            while chunk := payload.read(_CHUNK):
                writer.write(chunk)
            if payload.check() != info.sha256:
                raise BackupError(f"{info.path} changed while it was being restored")
        writer.commit()
    except BaseException:
        writer.abort()
        raise


__all__ = ["RESTORED_FROM", "RestoreError", "Restored", "restore_node"]

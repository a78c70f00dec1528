"""Seeding one node of a brand-new cluster from a backup (``raftly snapshot restore``).

Every member of the new cluster is restored from the same backup file (etcd's workflow), each
into its own empty data directory, which then holds exactly what ``raftly serve --cluster FILE
--id NAME --data-dir DIR`` starts from:

- the storage (raftly.storage.disk) seeded at the backup's index and term, with the NEW
  cluster's membership (its cluster file's members, names and addresses) as the configuration
  there, an empty log after it, and a hard state of the backup's term, committed up to it;
- the state machine's snapshot file (raftly.storage.snapshots) at that index, its payload the
  backup's, copied and checked against the backup's SHA-256 on the way;
- the node's identity (raftly.kv.identity) in the new cluster: its own cluster id.

Durability and order: every file is written to a temporary name, flushed, renamed and its
directory flushed. The storage's metadata comes first and the snapshot file after it, so that a
restore interrupted at any point leaves a directory that ``serve`` refuses (no hard state, or
no snapshot covering the log's start) rather than one that starts as an empty node or with a
term below its log's; the identity comes last (without it, ``serve`` records it at its first
start). A directory that is not empty is refused before anything is written.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from raftly.core.types import HardState, SnapshotMeta
from raftly.kv.backup import BackupError, BackupInfo, open_backup, verify
from raftly.kv.cluster_file import ClusterFileError, load_cluster
from raftly.kv.identity import IdentityError, NodeIdentity, claim_data_dir
from raftly.kv.members_http import bootstrap_conf
from raftly.storage import DiskStorage
from raftly.storage.base import StorageError
from raftly.storage.disk.fsio import make_dirs
from raftly.storage.snapshots import SnapshotStore

logger = logging.getLogger("raftly.kv.restore")

_CHUNK = 1 << 20


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
    _prepare_empty(directory)
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
        claim_data_dir(directory, NodeIdentity.of(cluster, name), f"cluster file {cluster_file}",
                       stored_voters=conf.voters)
    except (StorageError, IdentityError, BackupError) as exc:
        raise RestoreError(f"restoring into {directory} failed: {exc} (remove what it wrote "
                           "there before trying again)") from None
    finally:
        storage.close()
    logger.info("restored node %s of cluster %s in %s from %s (index %d, term %d)", name,
                cluster.cluster_id, directory, info.path, header.index, header.term)
    return Restored(info, cluster.cluster_id, name, spec.id, directory)


def _prepare_empty(directory: str) -> None:
    """Make sure ``directory`` exists (durably) and holds nothing; RestoreError otherwise."""
    if os.path.lexists(directory):
        if not os.path.isdir(directory):
            raise RestoreError(f"{directory} exists and is not a directory")
        try:
            entries = os.listdir(directory)
        except OSError as exc:
            raise RestoreError(f"cannot read {directory}: {exc.strerror or exc}") from None
        if entries:
            raise RestoreError(f"data dir {directory} is not empty ({len(entries)} entries, "
                               f"e.g. {sorted(entries)[0]!r}): a restore only seeds an empty "
                               "directory (a new node); give another --data-dir")
        return
    try:
        make_dirs(directory)
    except OSError as exc:
        raise RestoreError(f"cannot create {directory}: {exc.strerror or exc}") from None


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


__all__ = ["RestoreError", "Restored", "restore_node"]

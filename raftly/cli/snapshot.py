"""``raftly snapshot save|inspect|restore``: backups of a cluster's key-value state.

- ``save FILE`` fetches a consistent snapshot from the leader (``GET /v1/snapshot``, admin
  token on a cluster with an auth file) into the backup file FILE, written durably and verified
  before it takes the name; an existing FILE is kept unless ``--force``.
- ``inspect FILE`` checks every byte of a backup and prints its metadata and key count.
- ``restore FILE --cluster cluster.toml --data-dir DIR --id NAME`` seeds node NAME of a new
  cluster in the empty DIR; restore every member from the same file, then start each with
  ``raftly serve --cluster cluster.toml --id NAME --data-dir DIR``.

The format and the procedure are in docs/backup.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex

from raftly.cli.common import CliError, add_client_options, client_options, refusal

EPILOG = """\
examples:
  raftly snapshot save backup.rbk                     from the leader of $RAFTLY_ENDPOINTS
  raftly snapshot inspect backup.rbk
  raftly snapshot restore backup.rbk --cluster new/cluster.toml --id n1 --data-dir new/n1
  raftly serve --cluster new/cluster.toml --id n1 --data-dir new/n1
"""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    snapshot = commands.add_parser(
        "snapshot", help="back up the cluster's data (save), check a backup (inspect), seed a "
                         "new cluster from one (restore)",
        description="Backups of the key-value state: every key with its revisions, leases and "
                    "client sessions, as of one applied index.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = snapshot.add_subparsers(dest="snapshot_command", required=True, metavar="COMMAND")
    save = sub.add_parser(
        "save", help="fetch a consistent snapshot from the leader into FILE",
        description="Fetch a consistent snapshot from the leader (any endpoint will do: a "
                    "follower sends the request on) into FILE: written to a temporary file "
                    "beside it, checked (SHA-256 and every field), flushed to disk, then "
                    "renamed. Needs an admin token on a cluster with an auth file. --timeout "
                    "bounds finding the leader and each read, not the whole transfer.")
    save.add_argument("file", metavar="FILE")
    save.add_argument("--force", action="store_true", help="replace FILE if it exists")
    save.add_argument("--json", action="store_true", help="print the metadata as JSON")
    save.set_defaults(func=_save)
    add_client_options(snapshot)
    add_client_options(save)
    inspect = sub.add_parser("inspect", help="check a backup and print its metadata",
                             description="Check every byte of backup FILE (exit 1 naming "
                                         "what is wrong) and print its metadata and key count.")
    inspect.add_argument("file", metavar="FILE")
    inspect.add_argument("--json", action="store_true", help="print the metadata as JSON")
    inspect.set_defaults(func=_inspect)
    restore = sub.add_parser(
        "restore", help="seed node NAME of a new cluster from a backup",
        description="Seed node NAME of the new cluster described by the cluster file in the "
                    "empty (or missing) directory DIR from backup FILE: the node starts at the "
                    "backup's index with the new cluster's members and its own cluster id. "
                    "Restore every member from the same FILE, then start each with `raftly "
                    "serve --cluster FILE --id NAME --data-dir DIR`.")
    restore.add_argument("file", metavar="FILE")
    restore.add_argument("--cluster", required=True, metavar="FILE",
                         help="the new cluster's file (its own cluster_id)")
    restore.add_argument("--data-dir", required=True, metavar="DIR",
                         help="the node's data directory: must be empty or not exist")
    restore.add_argument("--id", required=True, metavar="NAME", help="the node to seed")
    restore.add_argument("--same-cluster-id", action="store_true",
                         help="allow the backup's own cluster id (only when every node of the "
                              "old cluster is gone for good)")
    restore.set_defaults(func=_restore)


def _describe(meta: dict[str, object]) -> str:
    created = meta["created_ms"]
    assert isinstance(created, int)
    when = datetime.datetime.fromtimestamp(created / 1000, datetime.UTC)
    rows = [("cluster id", meta["cluster_id"]), ("index", meta["index"]),
            ("term", meta["term"]), ("revision", meta["revision"]), ("keys", meta["keys"]),
            ("leases", meta["leases"]), ("sessions", meta["sessions"]),
            ("created", f"{when:%Y-%m-%d %H:%M:%S} UTC"),
            ("size", f"{meta['file_bytes']} bytes (payload {meta['payload_bytes']})"),
            ("sha256", meta["sha256"]), ("format", f"version {meta['format_version']}")]
    return "\n".join(f"{name + ':':<11} {value}" for name, value in rows)


def _save(args: argparse.Namespace) -> int:
    from raftly.kv.backup import BackupError
    from raftly.kv.backup_fetch import FetchError, save_snapshot
    from raftly.security.tls import TlsError

    options = client_options(args)
    try:
        info = save_snapshot(options.endpoints, args.file, timeout=options.timeout,
                             force=args.force, cacert=options.cacert, cert=options.cert,
                             key=options.key, token=options.token)
    except FetchError as exc:
        if exc.status is not None and 400 <= exc.status < 500:
            raise CliError(refusal(exc.status, str(exc))) from None
        raise CliError(str(exc)) from None
    except (BackupError, TlsError) as exc:
        raise CliError(str(exc)) from None
    meta = info.as_dict()
    if args.json:
        print(json.dumps(meta, indent=2))
    else:
        print(f"saved {info.path}: index {meta['index']}, term {meta['term']}, "
              f"{meta['keys']} keys, {meta['file_bytes']} bytes, sha256 {info.sha256}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from raftly.kv.backup import BackupError, verify

    try:
        info = verify(args.file)
    except BackupError as exc:
        raise CliError(str(exc)) from None
    meta = info.as_dict()
    print(json.dumps(meta, indent=2) if args.json else _describe(meta))
    return 0


def _restore(args: argparse.Namespace) -> int:
    from raftly.kv.restore import RestoreError, restore_node

    try:
        done = restore_node(args.file, args.cluster, args.data_dir, args.id,
                            same_cluster_id=args.same_cluster_id)
    except RestoreError as exc:
        raise CliError(str(exc)) from None
    header = done.backup.header
    print(f"restored node {done.name} of cluster {done.cluster_id!r} in {done.data_dir}: "
          f"index {header.index}, term {header.term}, {header.keys} keys, backup sha256 "
          f"{done.backup.sha256}")
    print("start it with: " + shlex.join(["raftly", "serve", "--cluster", args.cluster,
                                          "--id", args.id, "--data-dir", args.data_dir]))
    return 0


__all__ = ["add_parser"]

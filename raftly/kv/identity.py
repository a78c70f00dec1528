"""Whose a node's data directory is, and where it is by default.

A data directory holds one node's Raft log and vote, which only make sense in the cluster and
under the name and raft id they were written with. Started with a cluster file or flags that
disagree, a node would silently run the old state under a new identity (a 1-node directory
started with a 2-node file elects itself; a node's log reused under another id breaks election
safety). So the first start records the identity in ``identity.json`` next to the storage's
files, and every later start compares: a mismatch is refused before anything on disk changes.

The identity is the cluster id, the node's own name and raft id, and the members the cluster was
bootstrapped with (name -> raft id; none for a node that joined a running cluster). Addresses
are not part of it: a node may move. Later membership changes live in the Raft log, not here:
these members only say which bootstrap the directory belongs to.

The default data directory of node NAME is ``NAME`` next to its cluster file: the layout of
``raftly cluster up`` (``DIR/cluster.toml``, ``DIR/n1``, ...) is then also ``raftly serve``'s.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from raftly.kv.cluster_file import ClusterSpec
from raftly.storage.disk.fsio import Syncer, make_dirs, replace_file

IDENTITY_FILE = "identity.json"
LEGACY_DATA_ROOT = "raftly-data"
"""``raftly serve``'s default data root before the layout was shared with ``cluster up``."""


class IdentityError(ValueError):
    """A data directory belongs to another node or cluster, or its identity file is unreadable."""


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    cluster_id: str
    name: str
    raft_id: int
    members: tuple[tuple[str, int], ...]
    """The bootstrap members, (name, raft id) sorted by name."""
    joined: tuple[tuple[str, int, str, str], ...] = ()
    """For a node that joined: the cluster as the join's answer described it, itself included,
    (name, raft id, raft address, api address). Until its log holds the configuration that
    added it, this is all a restart has to find itself and its peers by."""

    @classmethod
    def of(cls, cluster: ClusterSpec, name: str) -> NodeIdentity:
        """The identity node ``name`` of ``cluster`` would record."""
        spec = cluster.node(name)
        return cls(cluster.cluster_id, name, spec.id,
                   tuple(sorted((n.name, n.id) for n in cluster.nodes)))

    def to_json(self) -> str:
        data: dict[str, object] = {"cluster_id": self.cluster_id, "name": self.name,
                                   "raft_id": self.raft_id, "members": dict(self.members)}
        if self.joined:
            data["joined"] = [list(node) for node in self.joined]
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str) -> NodeIdentity:
        try:
            data = json.loads(text)
            members = data["members"]
            joined = tuple((str(n), i, str(r), str(a)) for n, i, r, a in data.get("joined", []))
            identity = cls(data["cluster_id"], data["name"], data["raft_id"],
                           tuple(sorted((str(k), v) for k, v in members.items())), joined)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise IdentityError(f"{source}: not a valid identity file ({exc})") from None
        if (not isinstance(identity.cluster_id, str) or not isinstance(identity.name, str)
                or type(identity.raft_id) is not int
                or not all(type(i) is int for _, i in identity.members)
                or not all(type(i) is int for _, i, _, _ in identity.joined)):
            raise IdentityError(f"{source}: not a valid identity file")
        return identity

    def differences(self, other: NodeIdentity) -> list[str]:
        """What ``other`` (the one asked for) says differently from this (the recorded) one."""
        diffs = []
        if other.cluster_id != self.cluster_id:
            diffs.append(f"cluster id {other.cluster_id!r}, not {self.cluster_id!r}")
        if other.name != self.name:
            diffs.append(f"node name {other.name!r}, not {self.name!r}")
        if other.raft_id != self.raft_id:
            diffs.append(f"raft id {other.raft_id}, not {self.raft_id}")
        if other.members != self.members:
            diffs.append(f"members {_members(other)}, not {_members(self)}")
        return diffs


def _members(identity: NodeIdentity) -> str:
    return f"{len(identity.members)} ({', '.join(n for n, _ in identity.members)})"


def read_identity(data_dir: str | Path) -> NodeIdentity | None:
    """The identity recorded in ``data_dir``; None when it has none (a new directory)."""
    path = Path(data_dir) / IDENTITY_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise IdentityError(f"cannot read {path}: {exc.strerror or exc}") from None
    return NodeIdentity.from_json(text, str(path))


_SERVE_REMEDY = ("start it with the cluster file and --id it was created with, or give this node "
                 "a new --data-dir")


def check_identity(data_dir: str | Path, expected: NodeIdentity, source: str,
                   remedy: str = _SERVE_REMEDY) -> NodeIdentity | None:
    """Raise ``IdentityError`` (one line: what differs, then ``remedy``) if ``data_dir`` belongs
    to another node or cluster than ``expected``; ``source`` names where ``expected`` came from.
    Return the identity recorded there, None if there is none yet.

    Reads only: a refused start changes nothing on disk.
    """
    recorded = read_identity(data_dir)
    if recorded is None:
        return None
    diffs = recorded.differences(expected)
    if diffs:
        raise IdentityError(
            f"data dir {data_dir} belongs to node {recorded.name} of cluster "
            f"{recorded.cluster_id!r}, but {source} says {'; '.join(diffs)}: {remedy}")
    return recorded


def claim_data_dir(data_dir: str | Path, expected: NodeIdentity, source: str,
                   stored_voters: frozenset[int] | None = None) -> None:
    """Check ``data_dir`` against ``expected``, recording ``expected`` if it has no identity yet.

    ``stored_voters`` are the raft ids the node's storage was bootstrapped with, if it was: a
    data dir from before identity files were written is still refused when its members
    disagree with ``expected``. Call it with the storage open (its lock held), so that two
    processes cannot both claim one directory. The file is written atomically (temporary file,
    fsync, rename, fsync of the directory), so after a crash it is either absent or complete.
    """
    if check_identity(data_dir, expected, source) is not None:
        return
    expected_ids = frozenset(raft_id for _, raft_id in expected.members)
    if stored_voters is not None and (stored_voters != expected_ids
                                      or expected.raft_id not in stored_voters):
        raise IdentityError(
            f"data dir {data_dir} holds a cluster of raft ids {sorted(stored_voters)}, but "
            f"{source} says node {expected.name} (raft id {expected.raft_id}) of "
            f"{sorted(expected_ids)}: {_SERVE_REMEDY}")
    make_dirs(os.fspath(data_dir))
    replace_file(os.fspath(data_dir), IDENTITY_FILE, expected.to_json().encode(),
                 Syncer("always"))


def default_data_dir(cluster_file: str | Path, name: str) -> Path:
    """Node ``name``'s data directory when none is given: ``NAME`` next to the cluster file."""
    return Path(cluster_file).parent / name


def legacy_data_dir(name: str) -> Path:
    """Where ``raftly serve`` kept node ``name``'s data by default before: raftly-data/NAME."""
    return Path(LEGACY_DATA_ROOT) / name


__all__ = ["IDENTITY_FILE", "IdentityError", "NodeIdentity", "check_identity", "claim_data_dir",
           "default_data_dir", "legacy_data_dir", "read_identity"]

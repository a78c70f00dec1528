"""Whose a data directory is: recorded at the first start, compared at every later one, and
``/v1/status`` naming the cluster a node belongs to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kv_helpers import FAST, run

from raftly.kv.cluster_file import parse_cluster_text
from raftly.kv.identity import (
    IDENTITY_FILE,
    IdentityError,
    NodeIdentity,
    claim_data_dir,
    default_data_dir,
    read_identity,
)
from raftly.kv.service import LocalCluster

THREE = parse_cluster_text('cluster_id = "c1"\n' + "".join(
    f'[nodes.n{i}]\nid = {i}\nraft = "127.0.0.1:{7000 + i}"\napi = "127.0.0.1:{8000 + i}"\n'
    for i in (1, 2, 3)))


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_the_first_start_records_the_identity_and_a_matching_one_is_accepted(
        tmp_path: Path) -> None:
    data = tmp_path / "n2"
    assert read_identity(data) is None
    claim_data_dir(data, NodeIdentity.of(THREE, "n2"), "cluster.toml")
    recorded = read_identity(data)
    assert recorded == NodeIdentity("c1", "n2", 2, (("n1", 1), ("n2", 2), ("n3", 3)))
    assert not (data / (IDENTITY_FILE + ".tmp")).exists()
    claim_data_dir(data, NodeIdentity.of(THREE, "n2"), "cluster.toml")  # a restart
    # Addresses are not identity: a node may move to another port.
    moved = parse_cluster_text('cluster_id = "c1"\n' + "".join(
        f'[nodes.n{i}]\nid = {i}\nraft = "127.0.0.1:{9000 + i}"\napi = "127.0.0.1:{9100 + i}"\n'
        for i in (1, 2, 3)))
    claim_data_dir(data, NodeIdentity.of(moved, "n2"), "cluster.toml")


@pytest.mark.parametrize(("text", "name", "says"), [
    ('cluster_id = "other"\n[nodes.n1]\nid = 1\nraft = "h:1"\napi = "h:2"\n'
     '[nodes.n2]\nid = 2\nraft = "h:3"\napi = "h:4"\n[nodes.n3]\nid = 3\nraft = "h:5"\n'
     'api = "h:6"\n', "n2", "cluster id 'other', not 'c1'"),
    ('cluster_id = "c1"\n[nodes.n1]\nid = 1\nraft = "h:1"\napi = "h:2"\n'
     '[nodes.n2]\nid = 2\nraft = "h:3"\napi = "h:4"\n', "n2", "members 2 (n1, n2), not 3"),
    ('cluster_id = "c1"\n[nodes.n1]\nid = 1\nraft = "h:1"\napi = "h:2"\n'
     '[nodes.n2]\nid = 2\nraft = "h:3"\napi = "h:4"\n[nodes.n3]\nid = 3\nraft = "h:5"\n'
     'api = "h:6"\n', "n1", "node name 'n1', not 'n2'; raft id 1, not 2"),
])
def test_a_disagreeing_start_is_refused_in_one_line_and_changes_nothing(
        tmp_path: Path, text: str, name: str, says: str) -> None:
    data = tmp_path / "n2"
    claim_data_dir(data, NodeIdentity.of(THREE, "n2"), "cluster.toml")
    before = _snapshot(data)
    with pytest.raises(IdentityError) as refused:
        claim_data_dir(data, NodeIdentity.of(parse_cluster_text(text), name), "new.toml")
    message = str(refused.value)
    assert "\n" not in message and says in message, message
    assert message.startswith(f"data dir {data} belongs to node n2 of cluster 'c1', but new.toml")
    assert "new --data-dir" in message  # what to do
    assert _snapshot(data) == before


def test_an_unreadable_identity_file_is_an_identity_error(tmp_path: Path) -> None:
    (tmp_path / IDENTITY_FILE).write_text("{not json")
    with pytest.raises(IdentityError, match="not a valid identity file"):
        read_identity(tmp_path)


def test_the_default_data_dir_is_the_node_name_next_to_the_cluster_file() -> None:
    assert default_data_dir("raftly-cluster/cluster.toml", "n3") == Path("raftly-cluster/n3")
    assert default_data_dir("cluster.toml", "n1") == Path("n1")


def test_status_carries_the_cluster_id() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST) as cluster, aiohttp.ClientSession() as s:
            await cluster.wait_for_leader()
            assert cluster.cluster is not None
            for node in cluster.nodes:
                async with s.get(node.url + "/v1/status") as resp:
                    body: dict[str, Any] = await resp.json()
                assert resp.status == 200
                assert body["cluster_id"] == cluster.cluster.cluster_id

    run(main())


def test_a_data_dir_from_before_identity_files_is_checked_against_its_stored_members(
        tmp_path: Path) -> None:
    # A 1-node data dir (bootstrapped, no identity file) started with a 2-node cluster file
    # must not elect itself leader of a cluster it never belonged to.
    import asyncio

    from raftly.core.types import ConfState
    from raftly.kv.service import serve
    from raftly.storage import DiskStorage

    data = tmp_path / "n1"
    old = DiskStorage(data)
    old.bootstrap(ConfState(frozenset({1})))
    old.close()
    before = _snapshot(data)
    two = tmp_path / "cluster.toml"
    two.write_text('cluster_id = "c1"\n' + "".join(
        f'[nodes.n{i}]\nid = {i}\nraft = "127.0.0.1:0"\napi = "127.0.0.1:0"\n' for i in (1, 2)))
    with pytest.raises(IdentityError, match=r"raft ids \[1\].*\[1, 2\]"):
        asyncio.run(serve(two, "n1", data))
    assert _snapshot(data) == before and read_identity(data) is None


def test_stored_members_that_agree_are_accepted_and_recorded(tmp_path: Path) -> None:
    data = tmp_path / "n2"
    claim_data_dir(data, NodeIdentity.of(THREE, "n2"), "cluster.toml",
                   stored_voters=frozenset({1, 2, 3}))
    assert read_identity(data) == NodeIdentity.of(THREE, "n2")
    with pytest.raises(IdentityError, match="raft ids"):
        claim_data_dir(tmp_path / "n9", NodeIdentity.of(THREE, "n2"), "cluster.toml",
                       stored_voters=frozenset({1, 2}))

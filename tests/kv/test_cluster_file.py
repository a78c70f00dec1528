"""The TOML cluster file: good files, ids, cluster id, and clear errors for bad ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftly.kv.cluster_file import (
    Address,
    ClusterFileError,
    load_cluster,
    name_to_id,
    parse_address,
    parse_cluster_text,
    render_cluster,
)

ISSUE_EXAMPLE = """
[nodes.n1]
raft = "127.0.0.1:7001"
api  = "127.0.0.1:8001"
[nodes.n2]
raft = "127.0.0.1:7002"
api  = "127.0.0.1:8002"
"""


def test_issue_example(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(ISSUE_EXAMPLE)
    spec = load_cluster(path)
    assert [n.name for n in spec.nodes] == ["n1", "n2"]
    n1 = spec.node("n1")
    assert n1.raft == Address("127.0.0.1", 7001) and n1.api == Address("127.0.0.1", 8001)
    assert n1.id == name_to_id("n1") and 0 < n1.id <= 0x7FFFFFFF
    assert spec.by_id(n1.id) == n1 and spec.by_id(12345) is None
    assert spec.ids == {name_to_id("n1"), name_to_id("n2")}
    assert spec.cluster_id == "raftly:n1,n2"
    assert n1.api.url == "http://127.0.0.1:8001"


def test_ids_are_stable_and_cluster_id_independent_of_order() -> None:
    assert name_to_id("n1") == 1803113708  # pinned: changing it would renumber every cluster
    reordered = ISSUE_EXAMPLE.split("[nodes.n2]")
    text = "[nodes.n2]" + reordered[1] + reordered[0]
    assert parse_cluster_text(text) == parse_cluster_text(ISSUE_EXAMPLE)


def test_explicit_ids_and_cluster_id_round_trip() -> None:
    spec = parse_cluster_text("""
cluster_id = "prod"
[nodes.a]
id = 1
raft = "[::1]:7001"
api = "localhost:8001"
""")
    assert spec.cluster_id == "prod"
    assert spec.nodes[0].id == 1 and spec.nodes[0].raft == Address("::1", 7001)
    assert str(spec.nodes[0].raft) == "[::1]:7001"
    assert parse_cluster_text(render_cluster(spec)) == spec


@pytest.mark.parametrize(("text", "message"), [
    ("", "at least one"),
    ("nodes = 3", "at least one"),
    ("[nodes]\nn1 = 'x'", "must be a table"),
    ("[nodes.n1]\napi = '127.0.0.1:1'", "missing raft"),
    ("[nodes.n1]\nraft = '127.0.0.1:1'", "missing api"),
    ("[nodes.n1]\nraft = '127.0.0.1:1'\napi = '127.0.0.1:2'\nport = 3", "unknown keys"),
    ("[nodes.n1]\nraft = '127.0.0.1'\napi = '127.0.0.1:2'", "host:port"),
    ("[nodes.n1]\nraft = 7001\napi = '127.0.0.1:2'", "host:port"),
    ("[nodes.n1]\nraft = '127.0.0.1:99999'\napi = '127.0.0.1:2'", "out of range"),
    ("[nodes.n1]\nraft = '::1:7'\napi = '127.0.0.1:2'", "IPv6"),
    ("[nodes.n1]\nraft = 'h:1'\napi = 'h:2'\nid = 0", "id must be"),
    ("[nodes.n1]\nraft = 'h:1'\napi = 'h:2'\nid = '3'", "id must be"),
    ("[nodes.n1]\nraft = 'h:1'\napi = 'h:2'\nid = true", "id must be"),
    ("[nodes.'n 1']\nraft = 'h:1'\napi = 'h:2'", "node name"),
    # The client certificate's CN: a member of that name could be impersonated with it.
    ("[nodes.client]\nraft = 'h:1'\napi = 'h:2'", "node name"),
    ("[nodes.n1]\nraft = 'h:1'\napi = 'h:2'\nid = 5\n[nodes.n2]\nraft = 'h:3'\napi = 'h:4'\nid = 5",
     "same raft id"),
    ("[nodes.n1]\nraft = 'h:1'\napi = 'h:2'\n[nodes.n2]\nraft = 'h:1'\napi = 'h:4'",
     "also n1 raft"),
    ("[nodes.n1]\nraft = 'h:1'\napi = 'h:1'", "also n1 raft"),
    ("cluster_id = 5\n[nodes.n1]\nraft = 'h:1'\napi = 'h:2'", "cluster_id"),
    ("clusterid = 'x'\n[nodes.n1]\nraft = 'h:1'\napi = 'h:2'", "unknown top-level"),
    ("[nodes.n1\n", "not valid TOML"),
])
def test_bad_files_give_clear_errors(text: str, message: str) -> None:
    with pytest.raises(ClusterFileError, match=message):
        parse_cluster_text(text)


def test_missing_file_and_unknown_node(tmp_path: Path) -> None:
    with pytest.raises(ClusterFileError, match="cannot read"):
        load_cluster(tmp_path / "nope.toml")
    with pytest.raises(ClusterFileError, match="no node named 'n9'"):
        parse_cluster_text(ISSUE_EXAMPLE).node("n9")


def test_port_zero_may_repeat() -> None:
    spec = parse_cluster_text("[nodes.a]\nraft='h:0'\napi='h:0'\n[nodes.b]\nraft='h:0'\napi='h:0'")
    assert len(spec.nodes) == 2
    assert parse_address("h:0", "x") == Address("h", 0)

"""etcd's side of the comparison: the put request it is sent and the answers that count."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from raftly.bench.etcd import etcd_accepts, etcd_commands, put_request


def test_a_put_is_the_v3_gateway_json_with_base64_key_and_value() -> None:
    url, body = put_request("http://127.0.0.1:2379", 7, b"\x00value")
    assert url == "http://127.0.0.1:2379/v3/kv/put"
    sent = json.loads(body)
    assert base64.b64decode(sent["key"]) == b"bench-7"
    assert base64.b64decode(sent["value"]) == b"\x00value"


def test_only_an_answer_with_a_revision_in_its_header_counts() -> None:
    assert etcd_accepts({"header": {"cluster_id": "1", "revision": "42", "raft_term": "2"}})
    assert not etcd_accepts({"error": "etcdserver: too many requests", "code": 14})
    assert not etcd_accepts({"header": {"revision": ""}})
    assert not etcd_accepts(["header"])


def test_the_cluster_is_three_members_on_loopback_with_data_in_the_run_directory(
        tmp_path: Path) -> None:
    root = tmp_path
    commands = etcd_commands("etcd", root, [2379, 2389, 2399], [2380, 2390, 2400])
    assert len(commands) == 3
    for i, argv in enumerate(commands):
        options = dict(zip(argv[1::2], argv[2::2], strict=True))
        assert options["--data-dir"] == str(root / f"etcd{i}")
        assert options["--initial-cluster"] == ("etcd0=http://127.0.0.1:2380,"
                                                "etcd1=http://127.0.0.1:2390,"
                                                "etcd2=http://127.0.0.1:2400")
        assert all("127.0.0.1" in options[k] for k in ("--listen-client-urls",
                                                        "--listen-peer-urls"))

"""``POST /v1/txn`` on a real 3-node cluster (127.0.0.1): branches, op results, the body checks
(400 naming the field, 413 past the caps), and atomicity under concurrent clients."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from kv_helpers import FAST, call, followers, run

from raftly.kv.commands import MAX_TXN_OPS, Compare, Txn, TxnDelete, TxnGet, TxnPut
from raftly.kv.http_common import Reply
from raftly.kv.service import LocalCluster
from raftly.kv.txn_http import parse_txn


async def txn(s: aiohttp.ClientSession, url: str, body: object) -> tuple[int, Any]:
    status, answer, _ = await call(s, "POST", url + "/v1/txn", data=json.dumps(body).encode())
    return status, answer


def test_a_txn_runs_the_branch_its_compares_choose_and_answers_each_op() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST) as cluster, aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            url = leader.url
            await call(s, "PUT", url + "/v1/kv/cfg", data=b"v1")
            create = {"compare": [{"key": "lock", "target": "exists", "op": "=", "value": False}],
                      "success": [{"put": {"key": "lock", "value_base64": "/w=="}},
                                  {"delete": {"key": "cfg"}}, {"get": {"key": "lock"}}],
                      "failure": [{"get": {"key": "lock"}}]}
            status, body = await txn(s, url, create)
            assert status == 200 and body["succeeded"] is True, body
            assert body["revision"] == body["index"]
            assert body["results"][:2] == [{"type": "put"}, {"type": "delete", "deleted": True}]
            got = body["results"][2]["kv"]
            assert got["value_base64"] == "/w==" and got["create_revision"] == body["revision"]
            status, again = await txn(s, url, create)
            assert status == 200 and again["succeeded"] is False
            assert again["revision"] == body["revision"], "a branch of gets changes nothing"
            assert again["results"] == [{"type": "get", "kv": got}]
            status, body = await txn(s, url, {"failure": [{"get": {"key": "none"}}],
                                              "compare": [{"key": "lock", "target": "value",
                                                           "op": "=", "value": "x"}]})
            assert status == 200 and body["results"] == [{"type": "get", "kv": None}]
            follower = followers(cluster, leader)[0]
            status, _, headers = await call(s, "POST", follower.url + "/v1/txn", data=b"{}")
            assert status == 307 and headers["Location"].endswith("/v1/txn")
            status, body = await txn(s, url, {"success": [{"put": {"key": "x", "value": "1",
                                                                   "lease": 99}}]})
            assert status == 404 and body["code"] == "lease_not_found"
            assert leader.kv.get("x") is None

    run(main())


@pytest.mark.parametrize(("body", "field"), [
    ({"compare": {}}, "compare"),
    ({"other": []}, "other"),
    ({"compare": [{"key": "k", "target": "size", "op": "=", "value": 1}]}, "compare[0].target"),
    ({"compare": [{"key": "k", "target": "version", "op": "~", "value": 1}]}, "compare[0].op"),
    ({"compare": [{"key": "k", "target": "version", "op": "=", "value": "1"}]},
     "compare[0].value"),
    ({"compare": [{"key": "k", "target": "exists", "op": "<", "value": True}]},
     "compare[0].value"),
    ({"compare": [{"key": "", "target": "version", "op": "=", "value": 1}]}, "compare[0].key"),
    ({"success": [{"put": {"key": "k"}}]}, "success[0].put"),
    ({"success": [{"put": {"key": "k", "value_base64": "!!"}}]}, "success[0].put.value_base64"),
    ({"success": [{"put": {"key": "k", "value": "v", "lease": -1}}]}, "success[0].put.lease"),
    ({"failure": [{"put": {"key": "k", "value": "v"}, "get": {"key": "k"}}]}, "failure[0]"),
    ({"failure": [{"range": {"key": "k"}}]}, "failure[0].range"),
    ({"success": [{"delete": {"key": "k", "prefix": True}}]}, "success[0].delete.prefix"),
    ({"success": [{"delete": {"key": "k"}}, {"put": {"key": "k", "value": ""}}]}, "success[1]"),
])
def test_a_malformed_txn_body_is_refused_naming_the_field(body: dict[str, object],
                                                          field: str) -> None:
    with pytest.raises(Reply) as refused:
        parse_txn(body, 4096, 1 << 20)
    assert refused.value.status == 400 and refused.value.extra["field"] == field


def test_txn_caps_are_413() -> None:
    many = {"success": [{"get": {"key": "k"}}] * (MAX_TXN_OPS + 1)}
    with pytest.raises(Reply) as refused:
        parse_txn(many, 4096, 1 << 20)
    assert refused.value.status == 413 and refused.value.extra["code"] == "txn_too_large"
    with pytest.raises(Reply) as refused:
        parse_txn({"success": [{"put": {"key": "k", "value": "xx"}}]}, 4096, 1)
    assert refused.value.status == 413


def test_parse_txn_builds_the_command() -> None:
    body = {"compare": [{"key": "a", "target": "mod_revision", "op": "<", "value": 5},
                        {"key": "b", "target": "value", "op": "!=", "value_base64": "AA=="}],
            "success": [{"put": {"key": "a", "value": "é", "lease": 3}}, {"get": {"key": "b"}}],
            "failure": [{"delete": {"key": "a"}}]}
    assert parse_txn(body, 4096, 1 << 20) == Txn(
        (Compare("a", "mod_revision", "<", 5), Compare("b", "value", "!=", b"\0")),
        (TxnPut("a", "é".encode(), 3), TxnGet("b")), (TxnDelete("a"),))


def test_a_counter_incremented_by_compare_on_mod_revision_equals_the_successful_txns() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST) as cluster, aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            await call(s, "PUT", leader.url + "/v1/kv/counter", data=b"0")
            successes = 0

            async def client(rounds: int) -> None:
                nonlocal successes
                for _ in range(rounds):
                    status, kv, _ = await call(s, "GET",
                                               leader.url + "/v1/kv/counter?format=json")
                    assert status == 200
                    status, body = await txn(s, leader.url, {
                        "compare": [{"key": "counter", "target": "mod_revision", "op": "=",
                                     "value": kv["mod_revision"]}],
                        "success": [{"put": {"key": "counter",
                                             "value": str(int(kv["value"]) + 1)}}]})
                    assert status == 200, body
                    successes += body["succeeded"]

            await asyncio.gather(*(client(15) for _ in range(6)))
            assert 0 < successes < 6 * 15, "the clients did contend"
            assert leader.kv.get("counter") == str(successes).encode()

    run(main(), timeout=60)

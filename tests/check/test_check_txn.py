"""The txn workload of ``raftly check``: each op's txn body, and how a txn's answer is
classified for the register checker (a compare that failed is a failed cas; an answer that
says nothing is unknown for a write, never ok)."""

from __future__ import annotations

import json

from raftly.check.clients import CAS_MISS, ClientPool, txn_body


def test_each_op_becomes_its_txn() -> None:
    assert json.loads(txn_body("read", "k1", None, 7)) == {"success": [{"get": {"key": "k1"}}]}
    assert json.loads(txn_body("write", "k1", "v1-1", 7)) == {
        "success": [{"put": {"key": "k1", "value": "v1-1", "lease": 7}}]}
    assert json.loads(txn_body("cas", "k1", ["v1-1", "v1-2"], 0)) == {
        "compare": [{"key": "k1", "target": "value", "op": "=", "value": "v1-1"}],
        "success": [{"put": {"key": "k1", "value": "v1-2"}}]}


def _answer(succeeded: bool, results: list[object]) -> bytes:
    return json.dumps({"index": 5, "revision": 5, "succeeded": succeeded,
                       "results": results}).encode()


def test_txn_answers_are_classified_for_the_register_model() -> None:
    classify = ClientPool._classify_txn
    got = classify("read", 200, _answer(True, [{"type": "get", "kv": {
        "key": "k1", "value": "v2-3", "create_revision": 2, "mod_revision": 5, "version": 2,
        "lease": 7}}]), "n1")
    assert (got.type, got.value) == ("ok", "v2-3")
    got = classify("read", 200, _answer(True, [{"type": "get", "kv": None}]), "n1")
    assert (got.type, got.value) == ("ok", None)
    assert classify("write", 200, _answer(True, [{"type": "put"}]), "n1").type == "ok"
    missed = classify("cas", 200, _answer(False, []), "n1")
    assert (missed.type, missed.reason) == ("fail", CAS_MISS)
    assert classify("write", 200, b"{}", "n1").type == "info"
    assert classify("read", 200, b"not json", "n1").type == "fail"
    assert classify("write", 504, b'{"error": "timed out"}', "n1").type == "info"
    assert classify("write", 503, b'{"error": "no leader known", "leader": null}',
                    "n1").type == "fail"

"""Transactions: each compare target and op, atomic branches in one revision, gets as of the
txn, and a branch that cannot apply whole applies not at all."""

from __future__ import annotations

import pytest
from kv_helpers import Applier

from raftly.kv.commands import MAX_TXN_GET_BYTES
from raftly.kv.records import KEY_TOO_LARGE, LEASE_NOT_FOUND, TXN_TOO_LARGE
from raftly.kv.state_machine import (
    Compare,
    DeleteRange,
    KeyValue,
    KVStateMachine,
    LeaseGrant,
    Put,
    Session,
    Txn,
    TxnDelete,
    TxnGet,
    TxnPut,
    TxnResponse,
)


def machine_with_k() -> Applier:
    """k: value b"m", created at revision 1, modified at 3, version 2; index 3 applied."""
    a = Applier()
    a(Put("k", b"a"))
    a(Put("other", b""))
    a(Put("k", b"m"))
    return a


@pytest.mark.parametrize(("target", "op", "value", "holds"), [
    ("value", "=", b"m", True), ("value", "=", b"n", False),
    ("value", "!=", b"n", True), ("value", "!=", b"m", False),
    ("value", "<", b"n", True), ("value", "<", b"m", False),
    ("value", ">", b"l", True), ("value", ">", b"m", False),
    ("version", "=", 2, True), ("version", "=", 1, False),
    ("version", "!=", 1, True), ("version", "<", 3, True), ("version", "<", 2, False),
    ("version", ">", 1, True), ("version", ">", 2, False),
    ("mod_revision", "=", 3, True), ("mod_revision", "<", 3, False),
    ("mod_revision", ">", 2, True), ("mod_revision", "!=", 3, False),
    ("create_revision", "=", 1, True), ("create_revision", ">", 1, False),
    ("create_revision", "<", 2, True), ("create_revision", "!=", 1, False),
    ("exists", "=", True, True), ("exists", "=", False, False),
    ("exists", "!=", True, False), ("exists", "!=", False, True),
])
def test_each_compare_on_an_existing_key(target: str, op: str, value: bytes | int,
                                         holds: bool) -> None:
    a = machine_with_k()
    result = a(Txn((Compare("k", target, op, value),), (TxnPut("s", b""),), (TxnPut("f", b""),)))
    assert result.succeeded is holds and result.error is None
    assert (a.sm.get("s"), a.sm.get("f")) == ((b"", None) if holds else (None, b""))


@pytest.mark.parametrize(("target", "op", "value", "holds"), [
    ("value", "=", b"", False), ("value", "!=", b"x", False), ("value", "<", b"z", False),
    ("value", ">", b"", False),
    ("version", "=", 0, True), ("mod_revision", "=", 0, True), ("create_revision", "<", 1, True),
    ("version", ">", 0, False), ("exists", "=", False, True), ("exists", "=", True, False),
])
def test_each_compare_on_a_missing_key(target: str, op: str, value: bytes | int,
                                       holds: bool) -> None:
    a = machine_with_k()
    assert a(Txn((Compare("missing", target, op, value),))).succeeded is holds


def test_all_compares_must_hold() -> None:
    a = machine_with_k()
    both = (Compare("k", "version", "=", 2), Compare("other", "exists", "=", True))
    assert a(Txn(both)).succeeded
    assert not a(Txn((*both, Compare("other", "value", "=", b"x")))).succeeded
    assert a(Txn()).succeeded, "no compares: the success branch runs"


def test_a_branch_applies_atomically_in_one_revision_with_each_op_result() -> None:
    a = machine_with_k()
    result = a(Txn((Compare("k", "mod_revision", "=", 3),),
                   (TxnGet("k"), TxnPut("k", b"new"), TxnDelete("other"), TxnDelete("nothing"),
                    TxnPut("fresh", b"f"), TxnGet("k"), TxnGet("other")),
                   (TxnPut("failure-ran", b""),)))
    assert result.succeeded and result.index == 4 and result.revision == 4
    assert result.responses == (
        TxnResponse("get", True, KeyValue("k", b"m", 1, 3, 2)),  # as of the txn so far
        TxnResponse("put", True),
        TxnResponse("delete", True),
        TxnResponse("delete", False),
        TxnResponse("put", True),
        TxnResponse("get", True, KeyValue("k", b"new", 1, 4, 3)),
        TxnResponse("get", False),
    )
    assert a.sm.revision == 4 and a.sm.get("failure-ran") is None
    assert [(e.revision, e.type, e.key) for e in a.sm.events_since(4)] == [
        (4, "put", "k"), (4, "delete", "other"), (4, "put", "fresh")]
    assert a.sm.get_entry("fresh") == KeyValue("fresh", b"f", 4, 4, 1)


def test_failure_branch_runs_when_a_compare_fails() -> None:
    a = machine_with_k()
    result = a(Txn((Compare("k", "value", "=", b"stale"),), (TxnDelete("k"),),
                   (TxnGet("k"), TxnPut("log", b"miss"))))
    assert not result.succeeded and result.error is None and result.revision == 4
    assert [r.kind for r in result.responses] == ["get", "put"]
    assert a.sm.get("k") == b"m" and a.sm.get("log") == b"miss"


def test_a_txn_of_gets_changes_nothing_and_keeps_the_revision() -> None:
    a = machine_with_k()
    result = a(Txn(success=(TxnGet("k"),)))
    assert result.revision == 3 and a.sm.revision == 3 and a.sm.events_since(4) == []


def test_a_branch_naming_an_unknown_lease_applies_nothing() -> None:
    a = machine_with_k()
    a(LeaseGrant(10, 7))
    result = a(Txn(success=(TxnDelete("k"), TxnPut("a", b"", 7), TxnPut("b", b"", 8))))
    assert result.error == LEASE_NOT_FOUND and not result.ok and result.revision == 3
    assert a.sm.get("k") == b"m" and a.sm.get("a") is None
    assert a.sm.lease(7) is not None and a.sm.lease(7).keys == ()  # type: ignore[union-attr]
    # The unknown lease is only in the branch that does not run: the txn applies.
    assert a(Txn((Compare("k", "exists", "=", True),), (TxnPut("a", b"", 7),),
                 (TxnPut("b", b"", 8),))).succeeded
    assert a.sm.get_entry("a") == KeyValue("a", b"", 6, 6, 1, lease=7)


def test_any_key_too_large_refuses_the_whole_txn() -> None:
    a = Applier(KVStateMachine(max_key_bytes=3))
    a(Put("k", b"1"))
    for txn in (Txn((Compare("long", "exists", "=", False),), (TxnDelete("k"),)),
                Txn(success=(TxnDelete("k"),), failure=(TxnGet("long"),))):
        result = a(txn)
        assert result.error == KEY_TOO_LARGE and "'long'" in result.message
    assert a.sm.get("k") == b"1"


def test_counter_by_compare_on_mod_revision_counts_only_successful_increments() -> None:
    """Two clients read the counter, then both try to bump it: only the first txn applies."""
    a = Applier()
    a(Put("n", b"0"))
    successes = 0
    for _ in range(5):
        seen = a.sm.get_entry("n")
        assert seen is not None
        attempts = [Txn((Compare("n", "mod_revision", "=", seen.mod_revision),),
                        (TxnPut("n", str(int(seen.value) + 1).encode()),)) for _ in range(2)]
        successes += sum(a(t).succeeded for t in attempts)
    assert successes == 5 and a.sm.get("n") == b"5"


def test_a_retried_txn_or_prefix_delete_gets_its_first_result_and_applies_once() -> None:
    a = Applier()
    a(Put("n", b"0"))
    bump = Txn((Compare("n", "value", "=", b"0"),), (TxnPut("n", b"1"),), (TxnPut("n", b"0"),))
    first = a(bump, Session("c", 1))
    a(Put("p/1", b""))
    wipe = a(DeleteRange("p/"), Session("c", 2))
    a(Put("p/2", b""))
    assert a(bump, Session("c", 1, retry=True)) is first and first.succeeded
    assert a(DeleteRange("p/"), Session("c", 2, retry=True)) is wipe and wipe.count == 1
    assert a.sm.get("n") == b"1" and a.sm.get("p/2") == b""
    assert a.sm.get_entry("n").version == 2  # type: ignore[union-attr]


def test_gets_returning_more_than_the_cap_refuse_the_whole_txn() -> None:
    """The answer, and the copy exactly-once keeps of it (session table, snapshots), stay
    bounded: the values a branch's gets would return count, its own writes included."""
    a = Applier()
    half = MAX_TXN_GET_BYTES // 2
    a(Put("a", b"x" * half))
    a(Put("b", b"x" * half))
    exactly = a(Txn(success=(TxnGet("a"), TxnGet("b"))))
    assert exactly.ok and [r.kv.value for r in exactly.responses] == [b"x" * half] * 2  # type: ignore[union-attr]
    before = a.sm.revision
    for branch in ((TxnGet("a"), TxnGet("b"), TxnPut("c", b"y"), TxnGet("c")),
                   (TxnPut("c", b"y" * (half + 1)), TxnGet("a"), TxnGet("c"))):
        over = a(Txn(success=branch))
        assert not over.ok and over.error == TXN_TOO_LARGE and over.responses == ()
        assert a.sm.get("c") is None and a.sm.revision == before  # nothing applied
    # A get after the branch deleted the key returns nothing, so counts nothing.
    assert a(Txn(success=(TxnGet("a"), TxnDelete("b"), TxnGet("b")))).ok

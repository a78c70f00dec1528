"""KV commands: every op round-trips through its wire layout, the v1 put layout is kept, and a
malformed command of every new op is refused by decode and applied as an error Result."""

from __future__ import annotations

import msgpack  # type: ignore[import-untyped]
import pytest
from kv_helpers import Applier

from raftly.kv.commands import (
    MAX_TXN_COMPARES,
    MAX_TXN_OPS,
    OP_DELETE_RANGE,
    OP_LEASE_GRANT,
    OP_LEASE_REVOKE,
    OP_PUT,
    OP_TXN,
    TXN_DELETE,
    TXN_GET,
    TXN_PUT,
    Cas,
    CommandError,
    Compare,
    Delete,
    DeleteRange,
    LeaseGrant,
    LeaseRevoke,
    Op,
    Put,
    Session,
    Txn,
    TxnDelete,
    TxnGet,
    TxnPut,
    decode,
    encode,
)
from raftly.kv.records import DUPLICATE_KEY, MALFORMED, TXN_TOO_LARGE

ALL_OPS: list[Op] = [
    Put("k", b"v"),
    Put("k", b"v", lease=7),
    Delete("k"),
    Cas("k", b"a", b"b"),
    DeleteRange("a/"),
    DeleteRange(""),
    Txn((Compare("k", "value", "=", b"x"), Compare("k", "version", ">", 2),
         Compare("k", "mod_revision", "<", 9), Compare("k", "create_revision", "!=", 0),
         Compare("j", "exists", "=", False)),
        (TxnPut("k", b"y", 3), TxnDelete("j"), TxnGet("k")), (TxnGet("j"),)),
    Txn(),
    LeaseGrant(10),
    LeaseGrant(5, 42),
    LeaseRevoke(42),
    LeaseRevoke(42, expired=True),
    LeaseRevoke(42, expired=True, grant=7),
]


@pytest.mark.parametrize("op", ALL_OPS, ids=repr)
def test_every_op_round_trips_with_and_without_a_session(op: Op) -> None:
    for session in (None, Session("c", 5, 3, retry=True)):
        assert decode(encode(op, session)) == (op, session)


def test_a_put_without_a_lease_keeps_the_v1_layout() -> None:
    assert encode(Put("k", b"v")) == msgpack.packb([OP_PUT, None, None, None, None, "k", b"v"],
                                                   use_bin_type=True)
    old = msgpack.packb([OP_PUT, "c", 1, 0, False, "k", b"v"], use_bin_type=True)
    assert decode(old) == (Put("k", b"v"), Session("c", 1))


def test_a_revoke_without_a_grant_keeps_the_first_layout() -> None:
    assert encode(LeaseRevoke(42, expired=True)) == raw(OP_LEASE_REVOKE, 42, True)
    assert encode(LeaseRevoke(42, True, 7)) == raw(OP_LEASE_REVOKE, 42, True, 7)
    for bad in (raw(OP_LEASE_REVOKE, 42, True, 0), raw(OP_LEASE_REVOKE, 42, True, 7, 8)):
        with pytest.raises(CommandError):
            decode(bad)


def raw(op: int, *body: object) -> bytes:
    packed: bytes = msgpack.packb([op, None, None, None, None, *body], use_bin_type=True)
    return packed


GOOD_COMPARE = ["k", "version", "=", 1]
MALFORMED_COMMANDS = {
    "put lease not int": raw(OP_PUT, "k", b"v", "7"),
    "put lease negative": raw(OP_PUT, "k", b"v", -1),
    "put lease bool": raw(OP_PUT, "k", b"v", True),
    "put lease too big": raw(OP_PUT, "k", b"v", 1 << 63),
    "put extra item": raw(OP_PUT, "k", b"v", 1, 2),
    "delete range bytes prefix": raw(OP_DELETE_RANGE, b"a"),
    "delete range no prefix": raw(OP_DELETE_RANGE),
    "delete range extra": raw(OP_DELETE_RANGE, "a", "b"),
    "txn not lists": raw(OP_TXN, {}, [], []),
    "txn two parts": raw(OP_TXN, [], []),
    "compare short": raw(OP_TXN, [["k", "version", "="]], [], []),
    "compare empty key": raw(OP_TXN, [["", "version", "=", 1]], [], []),
    "compare unknown target": raw(OP_TXN, [["k", "lease", "=", 1]], [], []),
    "compare unknown op": raw(OP_TXN, [["k", "version", "<=", 1]], [], []),
    "value compare int": raw(OP_TXN, [["k", "value", "=", 1]], [], []),
    "version compare bytes": raw(OP_TXN, [["k", "version", "=", b"1"]], [], []),
    "version compare bool": raw(OP_TXN, [["k", "version", "=", True]], [], []),
    "revision compare negative": raw(OP_TXN, [["k", "mod_revision", ">", -1]], [], []),
    "exists compare int": raw(OP_TXN, [["k", "exists", "=", 1]], [], []),
    "exists compare less": raw(OP_TXN, [["k", "exists", "<", True]], [], []),
    "txn op not a list": raw(OP_TXN, [GOOD_COMPARE], ["put"], []),
    "txn op unknown kind": raw(OP_TXN, [], [[9, "k"]], []),
    "txn op bool kind": raw(OP_TXN, [], [[True, "k", b"v", 0]], []),
    "txn put no lease": raw(OP_TXN, [], [[TXN_PUT, "k", b"v"]], []),
    "txn put str value": raw(OP_TXN, [], [[TXN_PUT, "k", "v", 0]], []),
    "txn put bad lease": raw(OP_TXN, [], [[TXN_PUT, "k", b"v", -2]], []),
    "txn delete extra": raw(OP_TXN, [], [], [[TXN_DELETE, "k", b"v"]]),
    "txn get bytes key": raw(OP_TXN, [], [], [[TXN_GET, b"k"]]),
    "grant ttl zero": raw(OP_LEASE_GRANT, 0, 0),
    "grant ttl too long": raw(OP_LEASE_GRANT, 9_000_000_001, 0),
    "grant ttl str": raw(OP_LEASE_GRANT, "10", 0),
    "grant negative id": raw(OP_LEASE_GRANT, 10, -1),
    "grant no id": raw(OP_LEASE_GRANT, 10),
    "revoke id zero": raw(OP_LEASE_REVOKE, 0, False),
    "revoke expired int": raw(OP_LEASE_REVOKE, 5, 1),
    "revoke no expired": raw(OP_LEASE_REVOKE, 5),
}


@pytest.mark.parametrize("name", list(MALFORMED_COMMANDS))
def test_malformed_command_of_a_new_op_applies_as_an_error_and_changes_nothing(
        name: str) -> None:
    a = Applier()
    a(Put("k", b"before"))
    a(LeaseGrant(10, 5))
    result = a(MALFORMED_COMMANDS[name])
    assert result.error == MALFORMED and not result.ok and result.message
    assert result.revision == 1, "an error does not move the revision"
    assert a.sm.get_entry("k") is not None and a.sm.get("k") == b"before" and len(a.sm) == 1
    assert [lease.id for lease in a.sm.leases()] == [5]
    with pytest.raises(CommandError):
        decode(MALFORMED_COMMANDS[name])


@pytest.mark.parametrize(("body", "code"), [
    ([[GOOD_COMPARE] * (MAX_TXN_COMPARES + 1), [], []], TXN_TOO_LARGE),
    ([[], [[TXN_GET, "k"]] * (MAX_TXN_OPS + 1), []], TXN_TOO_LARGE),
    ([[], [], [[TXN_GET, "k"]] * (MAX_TXN_OPS + 1)], TXN_TOO_LARGE),
    ([[], [[TXN_PUT, "k", b"1", 0], [TXN_DELETE, "k"]], []], DUPLICATE_KEY),
    ([[], [], [[TXN_DELETE, "k"], [TXN_DELETE, "k"]]], DUPLICATE_KEY),
])
def test_oversized_or_ambiguous_txn_gets_its_own_error_code(body: list[object],
                                                            code: str) -> None:
    a = Applier()
    a(Put("k", b"before"))
    result = a(raw(OP_TXN, *body))
    assert result.error == code and not result.ok
    assert a.sm.get("k") == b"before" and a.sm.revision == 1
    with pytest.raises(CommandError) as info:
        decode(raw(OP_TXN, *body))
    assert info.value.code == code


def test_caps_are_inclusive() -> None:
    a = Applier()
    txn = Txn((Compare("k", "exists", "=", False),) * MAX_TXN_COMPARES,
              tuple(TxnPut(f"k{i}", b"", 0) for i in range(MAX_TXN_OPS)),
              (TxnGet("k"),) * MAX_TXN_OPS)
    result = a(txn)
    assert result.ok and len(result.responses) == MAX_TXN_OPS and len(a.sm) == MAX_TXN_OPS


def test_encode_refuses_what_decode_would() -> None:
    for op in (Put("", b"v"), Put("\ud800", b"v"), Put("k", b"v", -1), DeleteRange("\ud800"),
               LeaseGrant(0), LeaseRevoke(0), Txn((Compare("k", "exists", ">", True),)),
               Txn(success=(TxnPut("k", b""), TxnDelete("k")))):
        with pytest.raises(CommandError):
            encode(op)

"""The KV state machine's commands and their wire encoding (msgpack arrays, never pickle).

Every command starts with the same five items, then one fixed layout per operation::

    [OP_PUT,          client, seq, ack, retry, key, value]           (no lease: the v1 layout)
    [OP_PUT,          client, seq, ack, retry, key, value, lease]
    [OP_DELETE,       client, seq, ack, retry, key]
    [OP_CAS,          client, seq, ack, retry, key, expected, new]
    [OP_DELETE_RANGE, client, seq, ack, retry, prefix]
    [OP_TXN,          client, seq, ack, retry, [compare...], [op...], [op...]]
    [OP_LEASE_GRANT,  client, seq, ack, retry, ttl, id]
    [OP_LEASE_REVOKE, client, seq, ack, retry, id, expired]

where a compare is ``[key, target, op, value]`` and a transaction op is ``[TXN_PUT, key, value,
lease]``, ``[TXN_DELETE, key]`` or ``[TXN_GET, key]``. ``client`` is a str or nil, ``seq`` and
``ack`` ints or nil, ``retry`` a bool or nil (all nil: no session; see ``KVStateMachine``).

``decode`` checks every field and raises ``CommandError`` naming the first thing wrong; its
``code`` is the ``Result`` error the machine answers with. ``encode`` runs the same checks on
what it built, so a proposer learns of a bad command before it is replicated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import msgpack  # type: ignore[import-untyped]

from raftly.kv.records import DUPLICATE_KEY, MALFORMED, TXN_TOO_LARGE

OP_PUT: Final = 1
OP_DELETE: Final = 2
OP_CAS: Final = 3
OP_DELETE_RANGE: Final = 4
OP_TXN: Final = 5
OP_LEASE_GRANT: Final = 6
OP_LEASE_REVOKE: Final = 7

TXN_PUT: Final = 1
TXN_DELETE: Final = 2
TXN_GET: Final = 3

COMPARE_TARGETS: Final = frozenset({"value", "version", "mod_revision", "create_revision",
                                    "exists"})
COMPARE_OPS: Final = frozenset({"=", "!=", "<", ">"})

MAX_CLIENT_ID_LEN: Final = 128
MAX_TXN_COMPARES: Final = 128
MAX_TXN_OPS: Final = 128  # per branch
MAX_TXN_GET_BYTES: Final = 4 << 20
"""The values a txn's gets may return, together: the answer (and the copy exactly-once keeps
of it, in the session table and snapshots) stays bounded. Part of the replicated behaviour:
equal on every node."""
MAX_LEASE_TTL: Final = 9_000_000_000  # seconds, as etcd's
MAX_INT: Final = (1 << 63) - 1  # seqs, lease ids and revisions fit a signed 64-bit int


class CommandError(ValueError):
    """A command is malformed (raised by ``encode`` and ``decode``, never by ``apply``).

    ``code`` is the ``Result`` error the machine applies it as.
    """

    def __init__(self, message: str, code: str = MALFORMED) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Session:
    """Who sent a write: ``seq`` increases per write, ``ack`` is the lowest seq still awaited."""

    client: str
    seq: int
    ack: int = 0
    retry: bool = False

    def __post_init__(self) -> None:
        err = _check_session(self.client, self.seq, self.ack)
        if err is not None:
            raise CommandError(err)


@dataclass(frozen=True, slots=True)
class Put:
    """Set ``key`` to ``value``, attached to ``lease`` (0: none; a put re-attaches the key)."""

    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    key: str


@dataclass(frozen=True, slots=True)
class Cas:
    """Set ``key`` to ``new`` only if its current value is ``expected`` (a missing key never is).

    The key keeps the lease it has."""

    key: str
    expected: bytes
    new: bytes


@dataclass(frozen=True, slots=True)
class DeleteRange:
    """Delete every key starting with ``prefix`` ("" is every key), all in one revision."""

    prefix: str


@dataclass(frozen=True, slots=True)
class Compare:
    """A condition on ``key``: its ``target`` compared by ``op`` to ``value``.

    ``target`` "value" takes bytes (compared bytewise; false for a missing key, whatever the
    op), "version", "mod_revision" and "create_revision" an int (0 for a missing key), "exists" a
    bool with "=" or "!=" only.
    """

    key: str
    target: str
    op: str
    value: bytes | int | bool


# A transaction's writes are the plain commands, applied as one branch.
TxnPut = Put
TxnDelete = Delete


@dataclass(frozen=True, slots=True)
class TxnGet:
    key: str


TxnOp = Put | Delete | TxnGet


@dataclass(frozen=True, slots=True)
class Txn:
    """If every compare holds, apply ``success``, else ``failure``: atomically, in one revision.

    A branch may write a key at most once (so each revision holds one event per key); gets see
    the writes before them in the branch.
    """

    compare: tuple[Compare, ...] = ()
    success: tuple[TxnOp, ...] = ()
    failure: tuple[TxnOp, ...] = ()


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """Create lease ``id`` (0: the entry's log index) of ``ttl`` seconds.

    The machine only records it: expiry is decided by the leader, which proposes a revoke."""

    ttl: int
    id: int = 0


@dataclass(frozen=True, slots=True)
class LeaseRevoke:
    """Delete lease ``id`` and every key attached to it; ``expired`` when its TTL ran out.

    ``grant`` (the leader's expiry revokes set it): the log index of the grant this revoke
    means; a lease of the same id granted again since is not revoked. 0: whatever lease has
    the id (a client's revoke)."""

    id: int
    expired: bool = False
    grant: int = 0


Op = Put | Delete | Cas | DeleteRange | Txn | LeaseGrant | LeaseRevoke


# -- encoding ------------------------------------------------------------------------------------


def encode(op: Op, session: Session | None = None) -> bytes:
    """The command bytes to propose for ``op``; raises CommandError if ``decode`` would."""
    head: list[object] = (
        [session.client, session.seq, session.ack, session.retry] if session is not None
        else [None, None, None, None]
    )
    if isinstance(op, Put):
        # Without a lease, the v1 layout: old and new nodes read it alike.
        tail: list[object] = [op.key, bytes(op.value)] + ([op.lease] if op.lease else [])
        body: list[object] = [OP_PUT, *head, *tail]
    elif isinstance(op, Delete):
        body = [OP_DELETE, *head, op.key]
    elif isinstance(op, Cas):
        body = [OP_CAS, *head, op.key, bytes(op.expected), bytes(op.new)]
    elif isinstance(op, DeleteRange):
        body = [OP_DELETE_RANGE, *head, op.prefix]
    elif isinstance(op, Txn):
        body = [OP_TXN, *head, [[c.key, c.target, c.op, c.value] for c in op.compare],
                [_encode_txn_op(o) for o in op.success], [_encode_txn_op(o) for o in op.failure]]
    elif isinstance(op, LeaseGrant):
        body = [OP_LEASE_GRANT, *head, op.ttl, op.id]
    elif isinstance(op, LeaseRevoke):
        # Without a grant, the first layout: old and new nodes read it alike.
        body = [OP_LEASE_REVOKE, *head, op.id, op.expired] + ([op.grant] if op.grant else [])
    else:  # pragma: no cover - guarded by the type checker
        raise CommandError(f"not a KV operation: {op!r}")
    try:
        packed: bytes = msgpack.packb(body, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:  # also a lone surrogate in a str
        raise CommandError(f"cannot encode {type(op).__name__}: {exc}") from None
    decode(packed)  # the one place the layout is checked
    return packed


def _encode_txn_op(op: TxnOp) -> list[object]:
    if isinstance(op, TxnPut):
        return [TXN_PUT, op.key, bytes(op.value), op.lease]
    if isinstance(op, TxnDelete):
        return [TXN_DELETE, op.key]
    if isinstance(op, TxnGet):
        return [TXN_GET, op.key]
    raise CommandError(f"not a transaction op: {op!r}")


# -- decoding ------------------------------------------------------------------------------------


def _check_session(client: object, seq: object, ack: object) -> str | None:
    if not isinstance(client, str) or not 1 <= len(client) <= MAX_CLIENT_ID_LEN:
        return f"client id must be a str of 1 to {MAX_CLIENT_ID_LEN} characters"
    # bool is an int subclass; a True seq would be a decoding accident, not a number.
    if type(seq) is not int or not 1 <= seq <= MAX_INT:
        return "seq must be an int from 1 to 2**63-1"
    if type(ack) is not int or not 0 <= ack <= seq:
        return "ack must be an int from 0 to seq"
    return None


def _key(value: object, what: str = "key") -> str:
    if not isinstance(value, str) or not value:
        raise CommandError(f"{what} must be a non-empty str")
    return value


def int_in(value: object, low: int, high: int) -> bool:
    """Whether ``value`` is an int (not a bool) from ``low`` to ``high``."""
    return type(value) is int and low <= value <= high


def _int(value: object, low: int, high: int, what: str) -> int:
    if not int_in(value, low, high):
        raise CommandError(f"{what} must be an int from {low} to {high}")
    assert isinstance(value, int)
    return value


def _lease_id(value: object) -> int:
    return _int(value, 0, MAX_INT, "lease id")


def decode(command: bytes) -> tuple[Op, Session | None]:
    """Parse and validate one command; raise CommandError naming what is wrong."""
    try:
        obj = msgpack.unpackb(command, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises several types for garbage; all mean "malformed"
        raise CommandError(f"not msgpack: {type(exc).__name__}") from None
    if not isinstance(obj, list) or len(obj) < 6:
        raise CommandError("a command is an array of at least 6 items")
    op, client, seq, ack, retry = obj[:5]
    session: Session | None = None
    if client is not None or seq is not None or ack is not None or retry is not None:
        err = _check_session(client, seq, ack)
        if err is None and not isinstance(retry, bool):
            err = "retry must be a bool"
        if err is not None:
            raise CommandError(err)
        assert isinstance(client, str) and isinstance(seq, int) and isinstance(ack, int)
        session = Session(client, seq, ack, bool(retry))
    if type(op) is not int:
        raise CommandError("op must be an int")
    return _decode_op(op, obj[5:]), session


def _decode_op(op: int, rest: list[object]) -> Op:
    if op == OP_PUT:
        key = _key(rest[0])
        if len(rest) not in (2, 3) or not isinstance(rest[1], bytes):
            raise CommandError("put takes one bytes value and an optional lease")
        return Put(key, rest[1], _lease_id(rest[2]) if len(rest) == 3 else 0)
    if op == OP_DELETE:
        key = _key(rest[0])
        if len(rest) != 1:
            raise CommandError("delete takes no value")
        return Delete(key)
    if op == OP_CAS:
        key = _key(rest[0])
        if len(rest) != 3 or not all(isinstance(v, bytes) for v in rest[1:]):
            raise CommandError("cas takes two bytes values")
        assert isinstance(rest[1], bytes) and isinstance(rest[2], bytes)
        return Cas(key, rest[1], rest[2])
    if op == OP_DELETE_RANGE:
        if len(rest) != 1 or not isinstance(rest[0], str):
            raise CommandError("delete range takes one str prefix")
        return DeleteRange(rest[0])
    if op == OP_TXN:
        return _decode_txn(rest)
    if op == OP_LEASE_GRANT:
        if len(rest) != 2:
            raise CommandError("lease grant takes a ttl and an id")
        return LeaseGrant(_int(rest[0], 1, MAX_LEASE_TTL, "ttl"), _lease_id(rest[1]))
    if op == OP_LEASE_REVOKE:
        if len(rest) not in (2, 3) or not isinstance(rest[1], bool):
            raise CommandError("lease revoke takes an id, a bool expired and an optional grant")
        return LeaseRevoke(_int(rest[0], 1, MAX_INT, "lease id"), rest[1],
                           _int(rest[2], 1, MAX_INT, "grant index") if len(rest) == 3 else 0)
    raise CommandError(f"unknown op {op}")


def _decode_txn(rest: list[object]) -> Txn:
    if len(rest) != 3 or not all(isinstance(part, list) for part in rest):
        raise CommandError("a txn takes three lists: compare, success, failure")
    compares, success, failure = rest
    assert isinstance(compares, list) and isinstance(success, list) and isinstance(failure, list)
    if len(compares) > MAX_TXN_COMPARES:
        raise CommandError(f"a txn takes at most {MAX_TXN_COMPARES} compares", TXN_TOO_LARGE)
    if max(len(success), len(failure)) > MAX_TXN_OPS:
        raise CommandError(f"a txn branch takes at most {MAX_TXN_OPS} ops", TXN_TOO_LARGE)
    return Txn(tuple(map(_decode_compare, compares)), _decode_branch(success),
               _decode_branch(failure))


def _decode_compare(item: object) -> Compare:
    if not isinstance(item, list) or len(item) != 4:
        raise CommandError("a compare is [key, target, op, value]")
    key, target, op, value = item
    key = _key(key, "a compare's key")
    if target not in COMPARE_TARGETS or op not in COMPARE_OPS:
        raise CommandError(f"a compare's target must be one of {sorted(COMPARE_TARGETS)} and "
                           f"its op one of {sorted(COMPARE_OPS)}")
    assert isinstance(target, str) and isinstance(op, str)
    if target == "value":
        if not isinstance(value, bytes):
            raise CommandError("a value compare takes bytes")
    elif target == "exists":
        if not isinstance(value, bool) or op not in ("=", "!="):
            raise CommandError("an exists compare takes a bool, with = or !=")
    else:
        value = _int(value, 0, MAX_INT, f"a {target} compare's value")
    assert isinstance(value, bytes | int)
    return Compare(key, target, op, value)


def _decode_branch(items: list[object]) -> tuple[TxnOp, ...]:
    ops = tuple(map(_decode_txn_op, items))
    written = [op.key for op in ops if not isinstance(op, TxnGet)]
    if len(set(written)) != len(written):
        raise CommandError("a txn branch writes a key more than once", DUPLICATE_KEY)
    return ops


def _decode_txn_op(item: object) -> TxnOp:
    if not isinstance(item, list) or len(item) < 2:
        raise CommandError("a txn op is [kind, key, ...]")
    kind, key, *rest = item
    key = _key(key, "a txn op's key")
    if kind == TXN_PUT and type(kind) is int:
        if len(rest) != 2 or not isinstance(rest[0], bytes):
            raise CommandError("a txn put is [kind, key, bytes value, lease]")
        return TxnPut(key, rest[0], _lease_id(rest[1]))
    if kind in (TXN_DELETE, TXN_GET) and type(kind) is int and not rest:
        return TxnDelete(key) if kind == TXN_DELETE else TxnGet(key)
    raise CommandError(f"a txn op of kind {kind!r} with {len(rest)} more items is unknown")


__all__ = [
    "COMPARE_OPS",
    "COMPARE_TARGETS",
    "MAX_CLIENT_ID_LEN",
    "MAX_INT",
    "MAX_LEASE_TTL",
    "MAX_TXN_COMPARES",
    "MAX_TXN_GET_BYTES",
    "MAX_TXN_OPS",
    "OP_CAS",
    "OP_DELETE",
    "OP_DELETE_RANGE",
    "OP_LEASE_GRANT",
    "OP_LEASE_REVOKE",
    "OP_PUT",
    "OP_TXN",
    "TXN_DELETE",
    "TXN_GET",
    "TXN_PUT",
    "Cas",
    "CommandError",
    "Compare",
    "Delete",
    "DeleteRange",
    "LeaseGrant",
    "LeaseRevoke",
    "Op",
    "Put",
    "Session",
    "Txn",
    "TxnDelete",
    "TxnGet",
    "TxnOp",
    "TxnPut",
    "decode",
    "encode",
    "int_in",
]

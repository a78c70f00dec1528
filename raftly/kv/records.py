"""What the KV state machine hands out: a key's value with its metadata (``KeyValue``), the
``Result`` of one applied command (with a ``TxnResponse`` per transaction op), and the error
codes a ``Result`` may carry.

All of these are immutable, so the machine can share them between its live state, its captures
and its session table (the result a retried write gets back) without copying.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# Error codes of a ``Result``; the HTTP layer maps them to status codes.
MALFORMED: Final = "malformed"
KEY_TOO_LARGE: Final = "key_too_large"
STALE_SEQ: Final = "stale_seq"
LEASE_NOT_FOUND: Final = "lease_not_found"
LEASE_EXISTS: Final = "lease_exists"
TOO_MANY_LEASES: Final = "too_many_leases"
TXN_TOO_LARGE: Final = "txn_too_large"
DUPLICATE_KEY: Final = "duplicate_key"
ERROR_CODES: Final = frozenset({MALFORMED, KEY_TOO_LARGE, STALE_SEQ, LEASE_NOT_FOUND,
                                LEASE_EXISTS, TOO_MANY_LEASES, TXN_TOO_LARGE, DUPLICATE_KEY})


@dataclass(frozen=True, slots=True)
class KeyValue:
    """A key's value and metadata: the revisions that created it and last changed it, how many
    puts it has had since it was (re)created, and the lease it is attached to (0: none)."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


# The kinds of transaction ops, as they appear in a ``TxnResponse``.
TXN_PUT_KIND: Final = "put"
TXN_DELETE_KIND: Final = "delete"
TXN_GET_KIND: Final = "get"


@dataclass(frozen=True, slots=True)
class TxnResponse:
    """One transaction op's result. ``ok``: put - True; delete - whether the key existed; get -
    whether it exists, with ``kv`` its value and metadata as of that point of the transaction."""

    kind: str
    ok: bool
    kv: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class Result:
    """What ``apply`` returns for one command (and what a retried seq gets back).

    ``ok``: put - True; delete - whether the key existed; cas - whether it swapped; delete range -
    whether it deleted any key (``count`` says how many); txn - whether the compares held (the
    success branch ran; also ``succeeded``), with ``responses`` one per op of the branch that ran;
    lease grant - True, with the granted ``lease`` id and ``ttl``; lease revoke - True, with
    ``count`` the keys it deleted. ``error`` is one of ``ERROR_CODES``, with ``message`` for
    humans; ``ok`` is then False. ``revision`` is the store's revision once the command applied.
    """

    index: int
    ok: bool
    error: str | None = None
    message: str = ""
    revision: int = 0
    count: int = 0
    lease: int = 0
    ttl: int = 0
    responses: tuple[TxnResponse, ...] = ()

    @property
    def succeeded(self) -> bool:
        """For a txn: whether its compares held, so the success branch ran."""
        return self.ok


__all__ = [
    "DUPLICATE_KEY",
    "ERROR_CODES",
    "KEY_TOO_LARGE",
    "LEASE_EXISTS",
    "LEASE_NOT_FOUND",
    "MALFORMED",
    "STALE_SEQ",
    "TOO_MANY_LEASES",
    "TXN_DELETE_KIND",
    "TXN_GET_KIND",
    "TXN_PUT_KIND",
    "TXN_TOO_LARGE",
    "KeyValue",
    "Result",
    "TxnResponse",
]

"""The coordination calls of the KV clients, without I/O: key metadata, pages, prefix deletes,
transactions, leases, and the state of a watch stream.

Like ``raftly.kv.client_core`` (whose ``Call`` these build), this module only says what to send
and what an answer means; ``raftly.kv.client`` moves the bytes. ``WatchCursor`` holds what a
watch must remember across reconnects (the next revision to ask for) and turns each NDJSON line
into a ``WatchEvent``; it never skips or repeats a revision.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from raftly.kv.client_core import Call, ClientError, RequestError, Response, _check, _key_path
from raftly.kv.protocol import KV_PATH, LEASES_PATH, TXN_PATH, WATCH_PATH, encode_list_item

__all__ = [
    "WATCH_SILENCE",
    "CompactedError",
    "Compare",
    "Delete",
    "Entry",
    "Get",
    "Lease",
    "LeaseInfo",
    "LeaseNotFoundError",
    "Page",
    "Put",
    "TxnResult",
    "WatchCursor",
    "WatchEvent",
    "delete_prefix_call",
    "get_entry_call",
    "lease_grant_call",
    "lease_keepalive_call",
    "lease_revoke_call",
    "leases_call",
    "put_lease_call",
    "range_call",
    "txn_call",
]


WATCH_SILENCE = 10.0
"""Seconds without a line after which a watch stream counts as dead: a node sends a progress
line every 2 s when it has nothing else to send."""


class CompactedError(ClientError):
    """A watch asked for revisions the cluster no longer keeps (``410``): read the keys
    afresh and watch from their revision + 1."""

    def __init__(self, from_revision: int, oldest: int, current: int) -> None:
        super().__init__(f"revision {from_revision} is compacted: the oldest available is "
                         f"{oldest} (current {current}); read afresh and watch from there")
        self.from_revision = from_revision
        self.oldest = oldest
        self.current = current


class LeaseNotFoundError(RequestError):
    """The lease does not exist (it expired or was revoked: its keys are gone)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """A key with its value and metadata (the API's ``KV`` object)."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a prefix read: ``more`` says whether keys follow the last of ``kvs``."""

    kvs: list[Entry]
    more: bool
    revision: int


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change (``type`` "put" or "delete"; a delete has an empty value and zero create
    revision, version and lease), or with ``type`` "progress" only ``revision`` matters."""

    type: str
    revision: int
    key: str = ""
    value: bytes = b""
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Lease:
    id: int
    ttl: int


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """A lease as listed: ``remaining`` seconds as the leader counts them (None from a
    follower)."""

    id: int
    ttl: int
    remaining: float | None
    keys: list[str]


@dataclass(frozen=True, slots=True)
class TxnResult:
    """Which branch ran, and one result per op of it: ``{"type": "put"}``, ``{"type":
    "delete", "deleted": bool}`` or ``{"type": "get", "kv": Entry | None}``."""

    succeeded: bool
    revision: int
    results: list[dict[str, Any]]


# -- transaction ops ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Compare:
    """``key``'s ``target`` ("value", "version", "mod_revision", "create_revision",
    "exists") compared with ``op`` ("=", "!=", "<", ">") to ``value``."""

    key: str
    target: str
    op: str
    value: bytes | int | bool

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "target": self.target, "op": self.op}
        if isinstance(self.value, bytes):
            out.update(_value_json(self.value))
        else:
            out["value"] = self.value
        return out


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: bytes
    lease: int = 0

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"key": self.key, **_value_json(self.value)}
        if self.lease:
            body["lease"] = self.lease
        return {"put": body}


@dataclass(frozen=True, slots=True)
class Delete:
    key: str

    def to_json(self) -> dict[str, Any]:
        return {"delete": {"key": self.key}}


@dataclass(frozen=True, slots=True)
class Get:
    key: str

    def to_json(self) -> dict[str, Any]:
        return {"get": {"key": self.key}}


Op = Put | Delete | Get


def _value_json(value: bytes) -> dict[str, str]:
    item = encode_list_item("", value)
    del item["key"]
    return item


def _value(obj: Mapping[str, Any]) -> bytes:
    if "value_base64" in obj:
        return base64.b64decode(obj["value_base64"])
    return str(obj.get("value", "")).encode("utf-8")


def entry_of(obj: Mapping[str, Any]) -> Entry:
    """An ``Entry`` from a ``KV`` object; ValueError/KeyError/TypeError if malformed."""
    return Entry(str(obj["key"]), _value(obj), int(obj["create_revision"]),
                 int(obj["mod_revision"]), int(obj["version"]), int(obj.get("lease") or 0))


# -- calls -------------------------------------------------------------------------------------


def _malformed(resp: Response, exc: Exception) -> RequestError:
    return RequestError(resp.status, f"malformed answer ({type(exc).__name__}: {exc})")


def _json_of(resp: Response, *ok: int) -> Any:
    _check(resp, *ok)
    try:
        return resp.json()
    except ValueError as exc:
        raise _malformed(resp, exc) from None


def _lease_error(resp: Response) -> None:
    if resp.status == 404:
        try:
            code = resp.json().get("code")
        except (ValueError, AttributeError):
            code = None
        if code == "lease_not_found":
            raise LeaseNotFoundError(404, resp.error_message())


def _decode_put(resp: Response) -> int:
    _lease_error(resp)
    return int(_json_of(resp, 200)["index"])


def put_lease_call(key: str, value: bytes, lease: int) -> Call[int]:
    """Store ``value`` attached to ``lease`` (deleted when the lease ends); the result is the
    log index (= revision) of the write."""
    path = _key_path(key) + "?" + urlencode({"lease": str(int(lease))})
    return Call("PUT", path, bytes(value), True, _decode_put)


def _decode_entry(resp: Response) -> Entry | None:
    if resp.status == 404:
        return None
    try:
        return entry_of(_json_of(resp, 200))
    except (KeyError, TypeError, ValueError) as exc:
        raise _malformed(resp, exc) from None


def get_entry_call(key: str, stale: bool) -> Call[Entry | None]:
    query = {"format": "json"}
    if stale:
        query["consistency"] = "stale"
    return Call("GET", _key_path(key) + "?" + urlencode(query), None, False, _decode_entry)


def _decode_page(resp: Response) -> Page:
    body = _json_of(resp, 200)
    try:
        return Page([entry_of(kv) for kv in body["kvs"]], bool(body["more"]),
                    int(body["revision"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise _malformed(resp, exc) from None


def range_call(prefix: str, limit: int, start_after: str | None, stale: bool) -> Call[Page]:
    query = {"prefix": prefix, "limit": str(limit), "page": "1"}
    if start_after is not None:
        query["start_after"] = start_after
    if stale:
        query["consistency"] = "stale"
    return Call("GET", KV_PATH + "?" + urlencode(query), None, False, _decode_page)


def _decode_count(resp: Response) -> int:
    _lease_error(resp)
    return int(_json_of(resp, 200)["deleted"])


def delete_prefix_call(prefix: str) -> Call[int]:
    """Delete every key under ``prefix`` (non-empty) in one revision; the result is how many."""
    if not prefix:
        raise ValueError("the prefix is empty: that would delete every key")
    return Call("DELETE", KV_PATH + "?" + urlencode({"prefix": prefix}), None, True,
                _decode_count)


def _decode_txn(resp: Response) -> TxnResult:
    _lease_error(resp)
    body = _json_of(resp, 200)
    try:
        results = []
        for result in body["results"]:
            result = dict(result)
            if result.get("type") == "get":
                result["kv"] = entry_of(result["kv"]) if result.get("kv") else None
            results.append(result)
        return TxnResult(bool(body["succeeded"]), int(body["revision"]), results)
    except (KeyError, TypeError, ValueError) as exc:
        raise _malformed(resp, exc) from None


def _json_items(items: Sequence[Any]) -> list[Any]:
    # An item is one of the dataclasses above, or already in the API's JSON form.
    return [item.to_json() if isinstance(item, Compare | Put | Delete | Get) else dict(item)
            for item in items]


def txn_call(compare: Sequence[Compare | Mapping[str, Any]],
             success: Sequence[Op | Mapping[str, Any]],
             failure: Sequence[Op | Mapping[str, Any]]) -> Call[TxnResult]:
    body = {"compare": _json_items(compare), "success": _json_items(success),
            "failure": _json_items(failure)}
    return Call("POST", TXN_PATH, json.dumps(body).encode(), True, _decode_txn)


def _decode_lease(resp: Response) -> Lease:
    body = _json_of(resp, 200)
    return Lease(int(body["id"]), int(body["ttl"]))


def lease_grant_call(ttl: int, lease_id: int | None) -> Call[Lease]:
    body: dict[str, int] = {"ttl": int(ttl)}
    if lease_id is not None:
        body["id"] = int(lease_id)
    return Call("POST", LEASES_PATH, json.dumps(body).encode(), True, _decode_lease)


def _lease_path(lease_id: int) -> str:
    if not isinstance(lease_id, int) or lease_id < 1:
        raise ValueError(f"a lease id is a positive integer, not {lease_id!r}")
    return f"{LEASES_PATH}/{lease_id}"


def _decode_keepalive(resp: Response) -> int:
    _lease_error(resp)
    return int(_json_of(resp, 200)["ttl"])


def lease_keepalive_call(lease_id: int) -> Call[int]:
    """Renew the lease; the result is its TTL left as the leader counts it. Not a log entry,
    so not a session write: resending it is harmless."""
    return Call("POST", _lease_path(lease_id) + "/keepalive", None, False, _decode_keepalive)


def lease_revoke_call(lease_id: int) -> Call[int]:
    """End the lease now; the result is how many keys were deleted with it."""
    return Call("DELETE", _lease_path(lease_id), None, True, _decode_count)


def _decode_leases(resp: Response) -> list[LeaseInfo]:
    body = _json_of(resp, 200)
    try:
        return [LeaseInfo(int(item["id"]), int(item["ttl"]),
                          None if item.get("remaining") is None else float(item["remaining"]),
                          [str(k) for k in item["keys"]]) for item in body]
    except (KeyError, TypeError, ValueError) as exc:
        raise _malformed(resp, exc) from None


def leases_call() -> Call[list[LeaseInfo]]:
    return Call("GET", LEASES_PATH, None, False, _decode_leases)


# -- watch -------------------------------------------------------------------------------------


class WatchCursor:
    """Where a watch stands: the revision to ask from when (re)connecting, and the decoding of
    the stream's lines, so that a reconnect to any node neither skips nor repeats a change.

    The changes of one revision (a txn, a prefix delete, an expired lease) come as several
    lines; a stream may break between them. So until a later line shows revision R complete,
    a reconnect asks from R again and drops the lines of R already delivered (their keys:
    one revision changes a key at most once).
    """

    def __init__(self, prefix: str, from_revision: int | None) -> None:
        if from_revision is not None and from_revision < 1:
            raise ValueError("from_revision must be at least 1")
        self.prefix = prefix
        self.next_revision = from_revision
        """The revision to ask from; None until the first line (a watch from "now")."""
        self._open: int | None = None
        """The revision whose lines may not all have arrived yet."""
        self._delivered: set[str] = set()
        """The keys of ``_open`` already delivered."""
        self._compacted: dict[str, CompactedError] = {}
        """The nodes that answered 410 since the last line received."""

    def path(self) -> str:
        query = {"prefix": self.prefix}
        if self.next_revision is not None:
            query["from_revision"] = str(self.next_revision)
        return WATCH_PATH + "?" + urlencode(query, quote_via=quote)

    def refused(self, resp: Response, base: str, endpoints: int) -> None:
        """A non-200 answer of ``base`` (one of ``endpoints`` nodes) to the watch request:
        raises for one that retrying cannot fix (other 4xx; 410 compacted once every node has
        said so since the last line: each node keeps its own history, and a restarted one only
        has what it applied since its snapshot); returns for one worth retrying elsewhere."""
        if resp.status == 410:
            try:
                body = resp.json()
                oldest, current = int(body["oldest_available"]), int(body["current"])
            except (ValueError, KeyError, TypeError, AttributeError):
                raise RequestError(410, resp.error_message()) from None
            self._compacted[base] = CompactedError(self.next_revision or 0, oldest, current)
            if len(self._compacted) >= endpoints:
                raise self._compacted[base]
            return
        if 400 <= resp.status < 500:
            raise RequestError(resp.status, resp.error_message())

    def line(self, raw: bytes) -> WatchEvent | None:
        """The event of one line, or None for one with nothing to deliver: a cancelled line
        (the stream ends; the next connection resumes at its ``next_revision``) or a change
        delivered before a reconnect. ValueError for a malformed or out-of-order line."""
        self._compacted.clear()
        try:
            obj = json.loads(raw)
            kind = obj["type"]
            if kind == "cancelled":
                self._complete_before(int(obj["next_revision"]))
                return None
            revision = int(obj["revision"])
            if kind == "progress":
                self._complete_before(revision + 1)
                return WatchEvent("progress", revision)
            if kind not in ("put", "delete"):
                raise ValueError(f"unknown line type {kind!r}")
            entry = entry_of(obj)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed watch line {raw[:200]!r}: {exc}") from None
        if self.next_revision is not None and revision < self.next_revision:
            raise ValueError(f"the watch went back to revision {revision} "
                             f"(expected {self.next_revision} on)")
        if revision != self._open:
            self._open, self._delivered = revision, set()
        elif entry.key in self._delivered:
            return None  # sent again after a reconnect in the middle of this revision
        self._delivered.add(entry.key)
        self.next_revision = revision
        return WatchEvent(kind, revision, entry.key, entry.value, entry.create_revision,
                          entry.mod_revision, entry.version, entry.lease)

    def _complete_before(self, revision: int) -> None:
        if self.next_revision is None or revision > self.next_revision:
            self.next_revision = revision
        if self._open is not None and self._open < revision:
            self._open, self._delivered = None, set()

"""``POST /v1/txn``: a transaction (compares, then the success or failure branch of puts,
deletes and gets) from its JSON body, applied atomically in one log entry.

The body is checked here, naming the first bad field (``400`` with ``"field"``), before anything
is proposed; the state machine checks the command again (raftly.kv.commands). The leader
answers; a follower says ``307`` before reading the body. The session headers make it
exactly-once like every write. The reference is docs/http-api.md.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING

from aiohttp import web

from raftly.kv.commands import (
    COMPARE_OPS,
    COMPARE_TARGETS,
    MAX_INT,
    MAX_TXN_COMPARES,
    MAX_TXN_OPS,
    Compare,
    Txn,
    TxnDelete,
    TxnGet,
    TxnOp,
    TxnPut,
    int_in,
)
from raftly.kv.http_common import Reply
from raftly.kv.kv_json import txn_result_object
from raftly.kv.protocol import TXN_PATH
from raftly.kv.records import TXN_TOO_LARGE

if TYPE_CHECKING:
    from raftly.kv.http import KVApi


class TxnApi:
    """The transaction handler of one node's API."""

    def __init__(self, api: KVApi) -> None:
        self.api = api

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(TXN_PATH, self.txn)

    async def txn(self, request: web.Request) -> web.Response:
        api = self.api
        api._session(request)  # a malformed session is a 400 wherever the request goes
        if not api.server.is_leader:
            return api._not_leader(request, api.server.leader)
        body = await api.json_body(request, api.limits.max_txn_bytes)
        txn = parse_txn(body, api.limits.max_key_bytes, api.limits.max_value_bytes)
        result = await api.propose(request, txn)
        if isinstance(result, web.Response):
            return result
        return api._json(200, {"index": result.index, "revision": result.revision,
                               "succeeded": result.succeeded,
                               "results": [txn_result_object(r) for r in result.responses]})


def parse_txn(body: dict[str, object], max_key_bytes: int, max_value_bytes: int) -> Txn:
    """The ``Txn`` a request body describes; ``Reply`` 400 naming the first bad field (413 past
    the caps)."""
    unknown = sorted(set(body) - {"compare", "success", "failure"})
    if unknown:
        raise _bad(unknown[0], "unknown field (a txn takes compare, success, failure)")
    parts: dict[str, list[object]] = {}
    for name in ("compare", "success", "failure"):
        part = body.get(name, [])
        if not isinstance(part, list):
            raise _bad(name, "must be a list")
        cap = MAX_TXN_COMPARES if name == "compare" else MAX_TXN_OPS
        if len(part) > cap:
            raise Reply(413, f"{name} takes at most {cap} items", field=name, code=TXN_TOO_LARGE)
        parts[name] = part
    limits = _Limits(max_key_bytes, max_value_bytes)
    compares = tuple(limits.compare(item, f"compare[{i}]")
                     for i, item in enumerate(parts["compare"]))
    return Txn(compares, limits.branch(parts["success"], "success"),
               limits.branch(parts["failure"], "failure"))


def _bad(field: str, message: str) -> Reply:
    return Reply(400, f"{field}: {message}", field=field)


class _Limits:
    """Parses the parts of a txn body against the key and value size limits."""

    __slots__ = ("max_key_bytes", "max_value_bytes")

    def __init__(self, max_key_bytes: int, max_value_bytes: int) -> None:
        self.max_key_bytes = max_key_bytes
        self.max_value_bytes = max_value_bytes

    def key(self, item: dict[str, object], where: str) -> str:
        key = item.get("key")
        if not isinstance(key, str) or not key:
            raise _bad(f"{where}.key", "must be a non-empty string")
        try:
            size = len(key.encode("utf-8"))
        except UnicodeEncodeError:
            raise _bad(f"{where}.key", "is not valid UTF-8") from None
        if size > self.max_key_bytes:
            raise Reply(413, f"{where}.key: longer than {self.max_key_bytes} bytes",
                        field=f"{where}.key")
        return key

    def value(self, item: dict[str, object], where: str) -> bytes:
        """``"value"`` (text, as UTF-8) or ``"value_base64"``: exactly one of them."""
        if ("value" in item) == ("value_base64" in item):
            raise _bad(where, "give value or value_base64 (one of them)")
        if "value" in item:
            text = item["value"]
            if not isinstance(text, str):
                raise _bad(f"{where}.value", "must be a string")
            try:
                value = text.encode("utf-8")
            except UnicodeEncodeError:
                raise _bad(f"{where}.value", "is not valid UTF-8") from None
        else:
            b64 = item["value_base64"]
            try:
                if not isinstance(b64, str):
                    raise ValueError
                value = base64.b64decode(b64, validate=True)
            except (ValueError, binascii.Error):
                raise _bad(f"{where}.value_base64", "is not valid base64") from None
        if len(value) > self.max_value_bytes:
            raise Reply(413, f"{where}: value larger than {self.max_value_bytes} bytes",
                        field=where)
        return value

    def compare(self, item: object, where: str) -> Compare:
        if not isinstance(item, dict):
            raise _bad(where, "must be an object")
        allowed = {"key", "target", "op", "value", "value_base64"}
        extra = sorted(set(item) - allowed)
        if extra:
            raise _bad(f"{where}.{extra[0]}", "unknown field")
        key = self.key(item, where)
        target, op = item.get("target"), item.get("op")
        if target not in COMPARE_TARGETS:
            raise _bad(f"{where}.target", f"must be one of {', '.join(sorted(COMPARE_TARGETS))}")
        if op not in COMPARE_OPS:
            raise _bad(f"{where}.op", f"must be one of {' '.join(sorted(COMPARE_OPS))}")
        assert isinstance(target, str) and isinstance(op, str)
        value: bytes | int | bool
        if target == "value":
            value = self.value(item, where)
        elif "value" not in item or "value_base64" in item:
            raise _bad(f"{where}.value", f"a {target} compare takes \"value\"")
        elif target == "exists":
            value = item["value"]
            if not isinstance(value, bool) or op not in ("=", "!="):
                raise _bad(f"{where}.value", "an exists compare takes true or false, with = "
                                             "or !=")
        else:
            value = item["value"]
            if not int_in(value, 0, MAX_INT):
                raise _bad(f"{where}.value", f"a {target} compare takes an integer from 0 to "
                                             f"{MAX_INT}")
        return Compare(key, target, op, value)

    def branch(self, items: list[object], name: str) -> tuple[TxnOp, ...]:
        ops = tuple(self.op(item, f"{name}[{i}]") for i, item in enumerate(items))
        written: set[str] = set()
        for i, op in enumerate(ops):
            if not isinstance(op, TxnGet):
                if op.key in written:
                    raise Reply(400, f"{name}[{i}]: the branch writes key {op.key!r} twice",
                                field=f"{name}[{i}]", code="duplicate_key")
                written.add(op.key)
        return ops

    def op(self, item: object, where: str) -> TxnOp:
        if not isinstance(item, dict) or len(item) != 1:
            raise _bad(where, 'must be one of {"put": {...}}, {"delete": {...}}, '
                              '{"get": {...}}')
        (kind, spec), = item.items()
        where = f"{where}.{kind}"
        if kind not in ("put", "delete", "get"):
            raise _bad(where, "unknown op (put, delete or get)")
        if not isinstance(spec, dict):
            raise _bad(where, "must be an object")
        allowed = {"key", "value", "value_base64", "lease"} if kind == "put" else {"key"}
        extra = sorted(set(spec) - allowed)
        if extra:
            raise _bad(f"{where}.{extra[0]}", "unknown field")
        key = self.key(spec, where)
        if kind == "delete":
            return TxnDelete(key)
        if kind == "get":
            return TxnGet(key)
        lease = spec.get("lease", 0)
        if not int_in(lease, 0, MAX_INT):
            raise _bad(f"{where}.lease", f"must be an integer from 0 to {MAX_INT}")
        assert isinstance(lease, int)
        return TxnPut(key, self.value(spec, where), lease)


__all__ = ["TxnApi", "parse_txn"]

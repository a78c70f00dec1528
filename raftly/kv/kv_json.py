"""How the HTTP API writes a key with its metadata, a watch event and a transaction op's
result as JSON (the ``KV`` object of docs/http-api.md).

A value travels as ``"value"`` (text) when it is UTF-8, else as ``"value_base64"``, as in the
list answers (``raftly.kv.protocol.encode_list_item``).
"""

from __future__ import annotations

from raftly.kv.history import Event
from raftly.kv.protocol import encode_list_item
from raftly.kv.records import TXN_DELETE_KIND, TXN_GET_KIND, KeyValue, TxnResponse


def kv_object(kv: KeyValue) -> dict[str, object]:
    """``{"key", "value"|"value_base64", "create_revision", "mod_revision", "version",
    "lease"}``."""
    out: dict[str, object] = dict(encode_list_item(kv.key, kv.value))
    out.update(create_revision=kv.create_revision, mod_revision=kv.mod_revision,
               version=kv.version, lease=kv.lease)
    return out


def event_object(event: Event) -> dict[str, object]:
    """One watch line: the ``KV`` fields of the key after the change, with its ``revision`` and
    ``type`` (a delete has an empty value and zero create revision, version and lease)."""
    out: dict[str, object] = {"revision": event.revision, "type": event.type}
    out.update(encode_list_item(event.key, event.value))
    out.update(create_revision=event.create_revision, mod_revision=event.mod_revision,
               version=event.version, lease=event.lease)
    return out


def txn_result_object(response: TxnResponse) -> dict[str, object]:
    """One op's result: ``{"type": "put"}``, ``{"type": "delete", "deleted": bool}`` or
    ``{"type": "get", "kv": KV or null}``."""
    if response.kind == TXN_GET_KIND:
        return {"type": TXN_GET_KIND,
                "kv": kv_object(response.kv) if response.kv is not None else None}
    if response.kind == TXN_DELETE_KIND:
        return {"type": TXN_DELETE_KIND, "deleted": response.ok}
    return {"type": response.kind}


__all__ = ["event_object", "kv_object", "txn_result_object"]

"""What the KV HTTP server and its clients must agree on: paths, session headers, error codes,
and how a listed value travels in JSON.

Kept apart so the blocking client imports neither aiohttp nor the Raft server.
"""

from __future__ import annotations

import base64
from typing import Final

KV_PATH: Final = "/v1/kv"
"""Lists at this path; a key's value at ``KV_PATH/{percent-encoded key}``."""
STATUS_PATH: Final = "/v1/status"
MEMBERS_PATH: Final = "/v1/members"
"""The configuration; ``MEMBERS_PATH/{name}`` removes, ``MEMBERS_PATH/{name}/promote`` promotes."""
TRANSFER_PATH: Final = "/v1/leader/transfer"
TXN_PATH: Final = "/v1/txn"
LEASES_PATH: Final = "/v1/leases"
"""Grant (POST) and list; ``LEASES_PATH/{id}`` reads or revokes, ``.../{id}/keepalive`` renews."""
WATCH_PATH: Final = "/v1/watch"
SNAPSHOT_PATH: Final = "/v1/snapshot"
"""A consistent image of the whole state, from the leader (admin; raftly.kv.backup_http)."""
UI_PATH: Final = "/ui"
"""The cluster page (raftly.kv.ui_http), which polls the two routes below."""
ACTIVITY_PATH: Final = "/v1/activity"
"""This node's recent role changes and per-second samples (raftly.kv.activity)."""
CLUSTER_PATH: Final = "/v1/cluster"
"""Every member's status and activity, as this node fetched them."""

CLIENT_HEADER: Final = "X-Raftly-Client"
"""The client's id (1 to 128 characters); with SEQ_HEADER it makes a write exactly-once."""
SEQ_HEADER: Final = "X-Raftly-Seq"
"""1, 2, 3, ... per write of one client; a retry resends the same number."""
ACK_HEADER: Final = "X-Raftly-Ack"
"""Optional: the lowest seq the client still awaits; results below it may be forgotten."""

RETRY_HEADER: Final = "X-Raftly-Retry"
"""``1`` on a resend of a write whose earlier attempt may have been applied. A node that no
longer remembers the client's session then answers 409 (outcome unknown) instead of applying
the write a second time."""

STALE_SEQ_CODE: Final = "stale_seq"
"""The ``code`` of a 409: the seq's result was forgotten, so its outcome is unknown."""



def encode_list_item(key: str, value: bytes) -> dict[str, str]:
    """One entry of a list answer: the value as text when it is UTF-8, else as base64."""
    try:
        return {"key": key, "value": value.decode("utf-8")}
    except UnicodeDecodeError:
        return {"key": key, "value_base64": base64.b64encode(value).decode()}


def decode_list_item(item: dict[str, str]) -> tuple[str, bytes]:
    if "value" in item:
        return item["key"], item["value"].encode("utf-8")
    return item["key"], base64.b64decode(item["value_base64"])


__all__ = ["ACK_HEADER", "ACTIVITY_PATH", "CLIENT_HEADER", "CLUSTER_PATH", "KV_PATH",
           "LEASES_PATH", "MEMBERS_PATH", "RETRY_HEADER", "SEQ_HEADER", "SNAPSHOT_PATH",
           "STALE_SEQ_CODE", "STATUS_PATH", "TRANSFER_PATH", "TXN_PATH", "UI_PATH", "WATCH_PATH",
           "decode_list_item", "encode_list_item"]

"""Names shared by the KV HTTP server and its clients: session headers and error codes.

Kept apart so the blocking client imports neither aiohttp nor the Raft server.
"""

from __future__ import annotations

from typing import Final

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

__all__ = ["ACK_HEADER", "CLIENT_HEADER", "RETRY_HEADER", "SEQ_HEADER", "STALE_SEQ_CODE"]

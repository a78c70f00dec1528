"""The cap on concurrent API connections: beyond it, a new connection is closed at once.

``ConnectionCap.factory(server)`` wraps aiohttp's protocol factory (the runner's ``Server``) so
that every connection goes through a ``_Counted`` protocol first: it admits the connection to
aiohttp's request handler while fewer than ``limit`` are open, and otherwise closes it without
reading a byte. Established connections are counted (with TLS, from the end of the handshake,
which the site's handshake timeout bounds). A refusal is logged at most once per
``LOG_INTERVAL`` seconds, with how many were refused, so a flood cannot flood the log too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

logger = logging.getLogger("raftly.kv.connections")

LOG_INTERVAL = 10.0


class ConnectionCap:
    """Counts a site's open connections and refuses those beyond ``limit``."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("max_connections must be at least 1")
        self.limit = limit
        self.open = 0
        self.refused = 0
        """Refused since the last log line about it."""
        self._next_log = 0.0

    def factory(self, server: Callable[[], asyncio.Protocol]
                ) -> Callable[[], asyncio.Protocol]:
        """The protocol factory to hand the event loop instead of ``server``."""
        return lambda: _Counted(self, server())

    def admit(self) -> bool:
        if self.open < self.limit:
            self.open += 1
            return True
        self.refused += 1
        now = asyncio.get_running_loop().time()
        if now >= self._next_log:
            self._next_log = now + LOG_INTERVAL
            logger.warning("API connection limit reached (%d open): refused %d new "
                           "connection(s); raise serve --max-connections if this is real load",
                           self.open, self.refused)
            self.refused = 0
        return False

    def release(self) -> None:
        self.open -= 1


class _Counted(asyncio.Protocol):
    """One connection: handed on to ``inner`` (aiohttp's handler) if the cap admits it."""

    def __init__(self, cap: ConnectionCap, inner: asyncio.Protocol) -> None:
        self._cap = cap
        self._inner = inner
        self._admitted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._cap.admit():
            transport.close()
            return
        self._admitted = True
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._admitted:
            self._admitted = False
            self._cap.release()
            self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._admitted:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._admitted else None

    def pause_writing(self) -> None:
        if self._admitted:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._admitted:
            self._inner.resume_writing()


__all__ = ["ConnectionCap"]

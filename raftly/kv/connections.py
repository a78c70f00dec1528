"""The API's connections from accept to close: the cap on how many are open, and their TLS.

``ConnectionCap.factory(server, tls)`` wraps aiohttp's protocol factory (the runner's ``Server``)
so that every accepted TCP connection goes through a ``_Counted`` protocol first. It counts the
connection from accept to close and refuses (closes at once, reading nothing) one beyond
``limit``. With ``tls`` it also runs the TLS handshake itself (``loop.start_tls``) under
``handshake_timeout``, so that a client stalling in the handshake holds one counted slot for a
bounded time, like any other slow client; aiohttp's handler only sees the decrypted stream.
Refusals are logged at most once per ``LOG_INTERVAL`` seconds, with how many there were, so a
flood cannot flood the log too; a failed handshake (a scanner, an untrusted client) at DEBUG.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable

logger = logging.getLogger("raftly.kv.connections")

LOG_INTERVAL = 10.0


class ConnectionCap:
    """Counts a site's open connections and refuses those beyond ``limit``."""

    def __init__(self, limit: int, handshake_timeout: float = 10.0) -> None:
        if limit < 1:
            raise ValueError("max_connections must be at least 1")
        self.limit = limit
        self.handshake_timeout = handshake_timeout
        self.open = 0
        self.refused = 0
        """Refused since the last log line about it."""
        self._next_log = 0.0

    def factory(self, server: Callable[[], asyncio.Protocol],
                tls: ssl.SSLContext | None = None) -> Callable[[], asyncio.Protocol]:
        """The protocol factory to hand the event loop instead of ``server`` (the site itself
        must then listen without TLS: ``tls`` is done here)."""
        return lambda: _Counted(self, server(), tls)

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
    """One connection: handed on to ``inner`` (aiohttp's handler) if the cap admits it, after
    the TLS handshake when there is one."""

    def __init__(self, cap: ConnectionCap, inner: asyncio.Protocol,
                 tls: ssl.SSLContext | None) -> None:
        self._cap = cap
        self._inner = inner
        self._tls = tls
        self._admitted = False
        self._opened = False
        # What the TLS layer delivers before the handshake task hands the stream on.
        self._early: list[bytes] = []
        self._early_eof = False
        self._handshake: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._cap.admit():
            transport.close()
            return
        self._admitted = True
        if self._tls is None:
            self._open(transport)
            return
        assert isinstance(transport, asyncio.Transport)
        # Nothing may be read before start_tls takes over: the ClientHello is for TLS.
        transport.pause_reading()
        self._handshake = asyncio.get_running_loop().create_task(self._start_tls(transport))

    async def _start_tls(self, transport: asyncio.Transport) -> None:
        assert self._tls is not None
        peer = transport.get_extra_info("peername")
        secured: asyncio.Transport | None = None
        try:
            secured = await asyncio.get_running_loop().start_tls(
                transport, self, self._tls, server_side=True,
                ssl_handshake_timeout=self._cap.handshake_timeout)
        except Exception as exc:  # ssl.SSLError, a reset, the timeout: whatever the client did
            logger.debug("API connection from %s: TLS handshake failed: %s", peer, exc)
        if secured is None or not self._admitted:
            # start_tls closed the connection. asyncio tells the protocol of a connection lost
            # during the handshake only sometimes (not on a timeout or a reset): free it here.
            self._release()
            return
        self._open(secured)

    def _open(self, transport: asyncio.BaseTransport) -> None:
        self._opened = True
        self._inner.connection_made(transport)
        for data in self._early:
            self._inner.data_received(data)
        self._early.clear()
        if self._early_eof:
            self._inner.eof_received()

    def _release(self) -> None:
        """Free the slot, once (both the handshake task and connection_lost may get here)."""
        if self._admitted:
            self._admitted = False
            self._cap.release()

    def connection_lost(self, exc: Exception | None) -> None:
        was_admitted = self._admitted
        self._release()
        if self._opened:
            self._opened = False
            self._inner.connection_lost(exc)
        elif was_admitted and self._handshake is not None:
            self._handshake.cancel()

    def data_received(self, data: bytes) -> None:
        if self._opened:
            self._inner.data_received(data)
        elif self._admitted:
            self._early.append(data)

    def eof_received(self) -> bool | None:
        if self._opened:
            return self._inner.eof_received()
        self._early_eof = True
        return None

    def pause_writing(self) -> None:
        if self._opened:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._opened:
            self._inner.resume_writing()


__all__ = ["ConnectionCap"]

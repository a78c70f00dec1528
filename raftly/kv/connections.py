"""The API's connections from accept to close: the cap on how many are open, and their TLS.

``ConnectionCap.factory(server, tls)`` wraps aiohttp's protocol factory (the runner's ``Server``)
so that every accepted TCP connection goes through a ``_Counted`` protocol first. It counts the
connection from accept to close and refuses (closes at once, reading nothing) one beyond
``limit``. With ``tls`` it also runs the TLS handshake itself (``loop.start_tls``) under
``handshake_timeout``, so that a client stalling in the handshake holds one counted slot for a
bounded time, like any other slow client; aiohttp's handler only sees the decrypted stream.
Refusals are logged at most once per ``LOG_INTERVAL`` seconds, with how many there were, so a
flood cannot flood the log too; a failed handshake (a scanner, an untrusted client) at DEBUG.

The cap must engage before the process runs out of file descriptors (then accept() fails with
EMFILE, and so would opening a WAL segment or a snapshot): ``raise_fd_limit`` lifts the soft
RLIMIT_NOFILE to the hard limit at node start, and ``connection_cap`` clamps the cap to the
limit less a reserve for everything else the node opens. Should accept() still fail for want of
descriptors, asyncio logs an error with a traceback for every try (about a hundred per loop
turn); ``limit_accept_errors`` lets one through per ``LOG_INTERVAL`` with the count of the rest.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable

try:
    import resource
except ImportError:  # not on Windows: no limit to raise or to read
    resource = None  # type: ignore[assignment]

logger = logging.getLogger("raftly.kv.connections")

LOG_INTERVAL = 10.0

FD_RESERVE = 256
"""File descriptors kept for what is not an API connection (WAL, snapshots, peers, the node's
own HTTP calls) when the cap is clamped to the limit; a quarter of a smaller limit."""

_UNLIMITED_TARGET = 1 << 16
"""The soft limit asked for when the hard one is unlimited."""


def open_file_limit() -> int | None:
    """The soft RLIMIT_NOFILE of this process; None when unknown or unlimited."""
    if resource is None:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def raise_fd_limit() -> int | None:
    """Raise the soft RLIMIT_NOFILE toward the hard limit (the default soft limit, often 1024,
    is below a node's connection cap); the soft limit now in force (None: unlimited or
    unknown). Never lowers it; a refusal by the system is logged and leaves it as it was."""
    if resource is None:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _UNLIMITED_TARGET if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:  # macOS caps it below an "unlimited" hard limit
            logger.info("cannot raise the open file limit from %d to %d: %s", soft, target, exc)
        else:
            logger.debug("raised the open file limit from %d to %d", soft, target)
    return open_file_limit()


def connection_cap(wanted: int, fd_limit: int | None) -> int:
    """``wanted`` connections, or fewer when the file descriptor limit cannot hold them and
    the node's other files too (``FD_RESERVE``); at least 1."""
    if fd_limit is None:
        return wanted
    reserve = min(FD_RESERVE, fd_limit // 4)
    return max(1, min(wanted, fd_limit - reserve))


_ACCEPT_ERROR = "socket.accept() out of system resource"


class _AcceptErrorLimit(logging.Filter):
    """On the "asyncio" logger: one accept() resource error per ``LOG_INTERVAL``, with the
    count of those not logged; every other record passes."""

    def __init__(self) -> None:
        super().__init__()
        self._next = 0.0
        self._unlogged = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(_ACCEPT_ERROR):
            return True
        now = time.monotonic()
        if now < self._next:
            self._unlogged += 1
            return False
        self._next = now + LOG_INTERVAL
        if self._unlogged:
            record.msg = f"{record.msg}\n({self._unlogged} more not logged in the last " \
                         f"{LOG_INTERVAL:g}s; raise the open file limit or lower " \
                         "serve --max-connections)"
            record.args = None
            self._unlogged = 0
        return True


_accept_error_limit = _AcceptErrorLimit()


def limit_accept_errors() -> None:
    """Rate-limit asyncio's accept() resource errors (idempotent: one filter per process)."""
    asyncio_logger = logging.getLogger("asyncio")
    if _accept_error_limit not in asyncio_logger.filters:
        asyncio_logger.addFilter(_accept_error_limit)


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


__all__ = ["FD_RESERVE", "ConnectionCap", "connection_cap", "limit_accept_errors",
           "open_file_limit", "raise_fd_limit"]

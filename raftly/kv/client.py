"""Clients of the key-value HTTP API: ``Client`` (blocking, stdlib only) and ``AsyncClient``.

Both take a list of endpoints, send each request to the node believed to lead, follow ``307``
redirects to the leader, and retry ``503`` (no leader yet, busy, proposal dropped), ``504`` and
lost connections with backoff until ``timeout`` runs out. Every write carries this client's id
and a fresh sequence number that stays the same across its retries, so the state machine
applies it at most once however often it is resent. When the time is up, a write that may have
reached a leader raises ``OutcomeUnknownError`` (it may or may not be applied); otherwise
``UnavailableError`` (it was not applied). With ``fail_fast=True`` they give up at once, with
``UnavailableError``, when every endpoint refuses the connection (a shell user's typo'd port).

Both speak HTTPS when given TLS options (``cacert``: the CA that signs the nodes' certificates,
else the system's; ``cert``/``key``: a client certificate for nodes that require one; or a ready
``ssl_context``): endpoints written ``host:port`` then mean ``https://host:port``, and an
explicit ``https://`` endpoint always works. A redirect never leads from https to plain http.
``token`` is sent as ``Authorization: Bearer TOKEN`` with every request; a ``401`` (no or unknown
token) or ``403`` (role too low) is a ``RequestError`` with the node's message. A TLS handshake
that cannot succeed (an unverifiable certificate, a plaintext node, a node that ends the
handshake with an alert) rules that endpoint out for the call, and the others are tried; once
every endpoint is ruled out so, ``HandshakeError`` is raised at once instead of retrying until
the timeout. A token about to go over plain http to another machine is warned about (once per
host). (With TLS 1.3 a node that requires a client certificate checks it only after the
handshake and closes the connection: that looks like a node going down, so it is retried, and
the final error says what it usually means.)

``Client`` is not thread-safe (use one per thread); ``AsyncClient`` may run many requests at once.

Both are thin I/O shells: building requests, reading answers and every retry decision live in
``raftly.kv.client_core``, which does no I/O. A shell only sends, sleeps, and says whether a
failed send may have reached the node.
"""

from __future__ import annotations

import asyncio
import builtins
import http.client
import socket
import ssl
import time
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from raftly.kv.client_coord import (
    WATCH_SILENCE,
    CompactedError,
    Compare,
    Entry,
    Lease,
    LeaseInfo,
    LeaseNotFoundError,
    Op,
    Page,
    TxnResult,
    WatchCursor,
    WatchEvent,
    delete_prefix_call,
    get_entry_call,
    lease_grant_call,
    lease_keepalive_call,
    lease_revoke_call,
    leases_call,
    put_lease_call,
    range_call,
    txn_call,
)
from raftly.kv.client_core import (
    Attempt,
    Call,
    ClientCore,
    ClientError,
    HandshakeError,
    OutcomeUnknownError,
    Request,
    RequestError,
    Response,
    Step,
    UnavailableError,
    cas_call,
    delete_call,
    get_call,
    list_call,
    members_call,
    put_call,
    redirect_url,
    status_call,
    tls_failure,
)

if TYPE_CHECKING:
    import aiohttp

T = TypeVar("T")

PathLike = str | Path


def tls_context(cacert: PathLike | None = None, cert: PathLike | None = None,
                key: PathLike | None = None, ssl_context: ssl.SSLContext | None = None
                ) -> ssl.SSLContext | None:
    """The client's TLS context: ``ssl_context`` as given, else one made from the files (TLS
    1.2+, host names checked; ``TlsError`` names a missing or unusable file), else None (no
    TLS option: plain http by default)."""
    if ssl_context is not None:
        if cacert is not None or cert is not None or key is not None:
            raise ValueError("give either ssl_context or cacert/cert/key, not both")
        return ssl_context
    if cacert is None and cert is None and key is None:
        return None
    from raftly.security.tls import client_context

    return client_context(cacert, cert, key)


class _Shell:
    """What both shells keep: the routing core and the TLS context for https endpoints."""

    def __init__(self, endpoints: str | Sequence[str], *, timeout: float = 10.0,
                 request_timeout: float = 6.0, client_id: str | None = None,
                 fail_fast: bool = False, cacert: PathLike | None = None,
                 cert: PathLike | None = None, key: PathLike | None = None,
                 token: str | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
        self._options: dict[str, Any] = dict(
            timeout=timeout, request_timeout=request_timeout, fail_fast=fail_fast, token=token)
        self._ssl = tls_context(cacert, cert, key, ssl_context)
        self._client_cert = cert is not None or ssl_context is not None
        self._core = ClientCore(endpoints, timeout, request_timeout, client_id,
                                fail_fast=fail_fast, tls=self._ssl is not None, token=token,
                                client_cert=self._client_cert)
        self._connections_closed()

    def _connections_closed(self) -> None:
        """Start with (or go back to) no open connection."""

    def _fork_options(self) -> dict[str, Any]:
        """What a new client needs to reach the same cluster the same way (its own session)."""
        return {**self._options, "ssl_context": self._ssl}

    def _watch_deadline_passed(self, since: float, now: float, last: str) -> None:
        """A watch found no node to stream from since ``since``: give up after ``timeout``."""
        if now - since >= self._core.timeout:
            raise UnavailableError(f"watch: no node served the watch within "
                                   f"{self._core.timeout}s (last: {last})")

    @property
    def client_id(self) -> str:
        return self._core.client_id

    def _context(self) -> ssl.SSLContext:
        """For an https endpoint: the configured context, else the system's CAs."""
        if self._ssl is None:
            from raftly.security.tls import client_context

            self._ssl = client_context()
        return self._ssl


# -- blocking --------------------------------------------------------------------------------------


class Client(_Shell):
    """A blocking client: ``Client(["127.0.0.1:8001", "127.0.0.1:8002"]).put("k", b"v")``.

    Keyword arguments: ``timeout``, ``request_timeout``, ``client_id``, ``fail_fast``,
    ``cacert``, ``cert``, ``key``, ``token``, ``ssl_context`` (see the module docstring).
    """

    _conns: dict[str, http.client.HTTPConnection]

    def _connections_closed(self) -> None:
        self._conns = {}

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def put(self, key: str, value: bytes, *, lease: int | None = None) -> int:
        """Store ``value``; return the log index (= revision) at which it was applied. With
        ``lease`` the key is deleted when that lease ends (``LeaseNotFoundError`` if it has)."""
        return self._run(put_call(key, value) if lease is None
                         else put_lease_call(key, value, lease))

    def get(self, key: str, *, stale: bool = False) -> bytes | None:
        return self._run(get_call(key, stale))

    def delete(self, key: str) -> bool:
        """Remove ``key``; return whether it existed."""
        return self._run(delete_call(key))

    def cas(self, key: str, old: bytes, new: bytes) -> bool:
        """Set ``key`` to ``new`` if it is ``old`` now; return whether it was swapped."""
        return self._run(cas_call(key, old, new))

    def fork(self) -> Client:
        """A new client for the same endpoints, TLS and token, with its own session: for
        another thread (a ``Client`` is not thread-safe)."""
        return Client(list(self._core.endpoints), **self._fork_options())

    def list(self, prefix: str = "", limit: int = 1000, *, stale: bool = False
             ) -> builtins.list[tuple[str, bytes]]:
        return self._run(list_call(prefix, limit, stale))

    def get_entry(self, key: str, *, stale: bool = False) -> Entry | None:
        """``key`` with its metadata (revisions, version, lease), or None."""
        return self._run(get_entry_call(key, stale))

    def range(self, prefix: str = "", *, limit: int = 1000, start_after: str | None = None,
              stale: bool = False) -> Page:
        """One page of the keys under ``prefix`` with their metadata, and the store's revision."""
        return self._run(range_call(prefix, limit, start_after, stale))

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key under ``prefix`` (non-empty) in one revision; return how many."""
        return self._run(delete_prefix_call(prefix))

    def txn(self, compare: Sequence[Compare | Mapping[str, Any]] = (),
            success: Sequence[Op | Mapping[str, Any]] = (),
            failure: Sequence[Op | Mapping[str, Any]] = ()) -> TxnResult:
        """If every compare holds run ``success``, else ``failure``, atomically in one
        revision. Items are ``Compare``/``Put``/``Delete``/``Get`` or the API's JSON objects."""
        return self._run(txn_call(compare, success, failure))

    def lease_grant(self, ttl: int, *, id: int | None = None) -> Lease:
        """A new lease of ``ttl`` seconds (1 to 86400)."""
        return self._run(lease_grant_call(ttl, id))

    def lease_keepalive(self, lease_id: int) -> int:
        """Restart the lease's countdown; return its TTL. ``LeaseNotFoundError`` if it ended."""
        return self._run(lease_keepalive_call(lease_id))

    def lease_revoke(self, lease_id: int) -> int:
        """End the lease now; return how many keys were deleted with it."""
        return self._run(lease_revoke_call(lease_id))

    def leases(self) -> builtins.list[LeaseInfo]:
        return self._run(leases_call())

    def watch(self, prefix: str = "", *, from_revision: int | None = None,
              progress: bool = False) -> Generator[WatchEvent, None, None]:
        """Every change under ``prefix`` from ``from_revision`` (default: from now) on, in
        revision order, for ever: a stream that breaks, ends, or stays silent for
        ``WATCH_SILENCE`` seconds (or ``request_timeout`` if longer; a node sends a progress
        line every 2 s when idle) is resumed on the next endpoint where it stopped,
        with no gap and no duplicate. ``progress=True`` also yields the progress events.
        ``CompactedError`` if no node keeps ``from_revision`` any more (a 410 from one node
        is retried on the others: each keeps its own history);
        ``UnavailableError`` if no node serves the watch for ``timeout`` seconds."""
        cursor = WatchCursor(prefix, from_revision)
        since, attempt, last = time.monotonic(), 0, "nothing tried"
        while True:
            base = self._core.target
            try:
                for event in self._stream(base, cursor):
                    since, attempt = time.monotonic(), 0
                    if event is not None and (progress or event.type != "progress"):
                        yield event
                last = f"{base}: the stream ended"
                self._core.rotate()  # ended by the node (shutting down, or cut us off)
            except ConnectionRefusedError as exc:
                last = f"{base}: {exc}"
                self._core.rotate()
            except (OSError, http.client.HTTPException, ValueError) as exc:
                if (error := tls_failure(base, exc)) is not None:
                    raise error from None
                last = f"{base}: {type(exc).__name__}: {exc}"
                self._core.rotate()
            self._watch_deadline_passed(since, time.monotonic(), last)
            time.sleep(self._core.backoff(attempt))
            attempt += 1

    def _stream(self, base: str, cursor: WatchCursor) -> Iterator[WatchEvent | None]:
        """One watch connection to ``base``: its events (None: a line with none) until it
        ends. A refusal worth retrying elsewhere just returns (the caller moves on)."""
        parts = urlsplit(base)
        timeout = max(self._core.request_timeout, WATCH_SILENCE)
        conn = (http.client.HTTPSConnection(parts.netloc, timeout=timeout,
                                            context=self._context())
                if parts.scheme == "https" else
                http.client.HTTPConnection(parts.netloc, timeout=timeout))
        try:
            conn.request("GET", cursor.path(), headers=self._core.headers)
            raw = conn.getresponse()
            if raw.status != 200:
                cursor.refused(Response(raw.status, {}, raw.read()), base,
                               len(self._core.endpoints))
                return
            yield None  # connected: the retry clock starts again
            while line := raw.readline():
                yield cursor.line(line)
        finally:
            conn.close()

    def members(self) -> builtins.list[dict[str, Any]]:
        """The cluster's members (``/v1/members``); their API addresses become endpoints."""
        members = self._run(members_call())
        self._core.learn(members)
        return members

    def status(self, endpoint: str | None = None) -> dict[str, Any]:
        """``/v1/status`` of ``endpoint`` (default: whichever node answers first)."""
        call = status_call()
        if endpoint is None:
            return self._run(call)
        base = self._core.base(endpoint)
        try:
            resp = self._send(base, self._core.request(call), self._core.request_timeout)
        except ssl.SSLError as exc:
            raise tls_failure(base, exc) or exc from None
        return call.decode(resp)

    def _run(self, call: Call[T]) -> T:
        tries = self._core.start(call, time.monotonic)
        try:
            resp = self._exchange(tries)
        finally:
            tries.finish()
        return call.decode(resp)

    def _exchange(self, tries: Attempt[T]) -> Response:
        while True:
            base = self._core.target
            try:
                resp = self._send(base, tries.request, tries.request_timeout())
            except ConnectionRefusedError as exc:
                tries.failed(base, exc, maybe_sent=False)
            except (OSError, http.client.HTTPException) as exc:
                if (error := tries.hopeless(base, exc)) is not None:
                    raise error from None
                tries.failed(base, exc, maybe_sent=True)
            else:
                step = tries.answered(base, resp)
                if step is Step.DONE:
                    return resp
                if step is Step.SEND_NOW:
                    continue
            time.sleep(tries.pause())

    def _send(self, base: str, req: Request, timeout: float) -> Response:
        conn = self._conns.get(base)
        if conn is None:
            parts = urlsplit(base)
            if parts.scheme == "https":
                conn = http.client.HTTPSConnection(parts.netloc, timeout=timeout,
                                                   context=self._context())
            else:
                conn = http.client.HTTPConnection(parts.netloc, timeout=timeout)
            self._conns[base] = conn
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        try:
            conn.request(req.method, req.path, body=req.body, headers=req.headers)
            raw = conn.getresponse()
            body = raw.read()
        except BaseException:
            conn.close()
            del self._conns[base]
            raise
        headers = {k.lower(): v for k, v in raw.getheaders()}
        if headers.get("connection", "").lower() == "close":
            conn.close()
            del self._conns[base]
        return Response(raw.status, headers, body)


# -- asyncio ---------------------------------------------------------------------------------------


class AsyncClient(_Shell):
    """The asyncio client (aiohttp); ``async with AsyncClient(endpoints) as kv: ...``; the same
    keyword arguments as ``Client``."""

    _session: aiohttp.ClientSession | None

    def _connections_closed(self) -> None:
        self._session = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def put(self, key: str, value: bytes, *, lease: int | None = None) -> int:
        return await self._run(put_call(key, value) if lease is None
                               else put_lease_call(key, value, lease))

    async def get(self, key: str, *, stale: bool = False) -> bytes | None:
        return await self._run(get_call(key, stale))

    async def delete(self, key: str) -> bool:
        return await self._run(delete_call(key))

    async def cas(self, key: str, old: bytes, new: bytes) -> bool:
        return await self._run(cas_call(key, old, new))

    async def list(self, prefix: str = "", limit: int = 1000, *, stale: bool = False
                   ) -> builtins.list[tuple[str, bytes]]:
        return await self._run(list_call(prefix, limit, stale))

    def fork(self) -> AsyncClient:
        """A new client for the same endpoints, TLS and token, with its own session."""
        return AsyncClient(list(self._core.endpoints), **self._fork_options())

    async def get_entry(self, key: str, *, stale: bool = False) -> Entry | None:
        return await self._run(get_entry_call(key, stale))

    async def range(self, prefix: str = "", *, limit: int = 1000,
                    start_after: str | None = None, stale: bool = False) -> Page:
        return await self._run(range_call(prefix, limit, start_after, stale))

    async def delete_prefix(self, prefix: str) -> int:
        return await self._run(delete_prefix_call(prefix))

    async def txn(self, compare: Sequence[Compare | Mapping[str, Any]] = (),
                  success: Sequence[Op | Mapping[str, Any]] = (),
                  failure: Sequence[Op | Mapping[str, Any]] = ()) -> TxnResult:
        return await self._run(txn_call(compare, success, failure))

    async def lease_grant(self, ttl: int, *, id: int | None = None) -> Lease:
        return await self._run(lease_grant_call(ttl, id))

    async def lease_keepalive(self, lease_id: int) -> int:
        return await self._run(lease_keepalive_call(lease_id))

    async def lease_revoke(self, lease_id: int) -> int:
        return await self._run(lease_revoke_call(lease_id))

    async def leases(self) -> builtins.list[LeaseInfo]:
        return await self._run(leases_call())

    async def watch(self, prefix: str = "", *, from_revision: int | None = None,
                    progress: bool = False) -> AsyncGenerator[WatchEvent, None]:
        """As ``Client.watch``, as an async iterator."""
        import aiohttp

        loop = asyncio.get_running_loop()
        cursor = WatchCursor(prefix, from_revision)
        since, attempt, last = loop.time(), 0, "nothing tried"
        while True:
            base = self._core.target
            try:
                async for event in self._stream(base, cursor):
                    since, attempt = loop.time(), 0
                    if event is not None and (progress or event.type != "progress"):
                        yield event
                last = f"{base}: the stream ended"
                self._core.rotate()
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                cause = _ssl_cause(exc)
                if cause is not None and (error := tls_failure(base, cause)) is not None:
                    raise error from None
                last = f"{base}: {type(exc).__name__}: {exc}"
                self._core.rotate()
            self._watch_deadline_passed(since, loop.time(), last)
            await asyncio.sleep(self._core.backoff(attempt))
            attempt += 1

    async def _stream(self, base: str, cursor: WatchCursor
                      ) -> AsyncIterator[WatchEvent | None]:
        import aiohttp
        import yarl

        if self._session is None:
            self._session = aiohttp.ClientSession()
        url = yarl.URL(base + cursor.path(), encoded=True)
        tls = self._context() if url.scheme == "https" else True
        timeout = aiohttp.ClientTimeout(total=None, connect=self._core.request_timeout,
                                        sock_read=max(self._core.request_timeout,
                                                      WATCH_SILENCE))
        async with self._session.get(url, headers=self._core.headers, ssl=tls,
                                     allow_redirects=False, timeout=timeout) as raw:
            if raw.status != 200:
                cursor.refused(Response(raw.status, {}, await raw.read()), base,
                               len(self._core.endpoints))
                return
            yield None
            async for line in raw.content:
                yield cursor.line(line)

    async def members(self) -> builtins.list[dict[str, Any]]:
        """The cluster's members (``/v1/members``); their API addresses become endpoints."""
        members = await self._run(members_call())
        self._core.learn(members)
        return members

    async def status(self, endpoint: str | None = None) -> dict[str, Any]:
        call = status_call()
        if endpoint is None:
            return await self._run(call)
        base = self._core.base(endpoint)
        try:
            resp = await self._send(base, self._core.request(call), self._core.request_timeout)
        except OSError as exc:
            cause = _ssl_cause(exc)
            raise (tls_failure(base, cause) if cause is not None else None) or exc from None
        return call.decode(resp)

    async def _run(self, call: Call[T]) -> T:
        tries = self._core.start(call, asyncio.get_running_loop().time)
        try:
            resp = await self._exchange(tries)
        finally:
            tries.finish()
        return call.decode(resp)

    async def _exchange(self, tries: Attempt[T]) -> Response:
        import aiohttp

        while True:
            base = self._core.target
            try:
                resp = await self._send(base, tries.request, tries.request_timeout())
            except aiohttp.ClientConnectorError as exc:
                if (error := _hopeless(tries, base, exc)) is not None:
                    raise error from None
                refused = isinstance(exc.os_error, ConnectionRefusedError | socket.gaierror)
                # A TLS handshake that failed never carried the request.
                tries.failed(base, exc, maybe_sent=not refused
                             and not isinstance(exc, aiohttp.ClientSSLError))
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                if (error := _hopeless(tries, base, exc)) is not None:
                    raise error from None
                tries.failed(base, exc, maybe_sent=True)
            else:
                step = tries.answered(base, resp)
                if step is Step.DONE:
                    return resp
                if step is Step.SEND_NOW:
                    continue
            await asyncio.sleep(tries.pause())

    async def _send(self, base: str, req: Request, timeout: float) -> Response:
        import aiohttp
        import yarl

        if self._session is None:
            self._session = aiohttp.ClientSession()
        # encoded=True: the path is quoted already, and must not be normalized (a key ".."
        # would otherwise become a different path).
        url = yarl.URL(base + req.path, encoded=True)
        tls = self._context() if url.scheme == "https" else True
        async with self._session.request(
                req.method, url, data=req.body, headers=req.headers, ssl=tls,
                allow_redirects=False, timeout=aiohttp.ClientTimeout(total=timeout)) as raw:
            body = await raw.read()
            return Response(raw.status, {k.lower(): v for k, v in raw.headers.items()}, body)


# -- one request, redirects followed ----------------------------------------------------------


async def request_json(session: aiohttp.ClientSession, method: str, url: str,
                       body: object = None, *, headers: dict[str, str] | None = None,
                       context: ssl.SSLContext | None = None, max_redirects: int = 5
                       ) -> tuple[int, dict[str, Any]]:
    """One JSON request to ``url``, following ``307`` redirects to the leader (never from
    https down to http, see ``redirect_url``): the final status and JSON object.

    For the membership calls (``raftly member``, ``raftly check``, a joining node), which are
    not retried like the KV calls. ``context`` is used for https URLs. ValueError for an answer
    that is not a JSON object, a redirect that may not be followed, or too many redirects;
    aiohttp's errors and TimeoutError for a node that did not answer (``tls_failure`` tells
    which of those retrying cannot fix).
    """
    for _ in range(max_redirects):
        async with session.request(method, url, json=body, headers=headers,
                                   allow_redirects=False,
                                   ssl=context if url.startswith("https:") and context
                                   else True) as resp:
            if resp.status == 307:
                target = redirect_url(url, resp.headers.get("Location"))
                if target is None:
                    raise ValueError(f"{url}: refused to follow a redirect to "
                                     f"{resp.headers.get('Location')!r}")
                url = target
                continue
            answer = await resp.json(content_type=None)
            if not isinstance(answer, dict):
                raise ValueError(f"{url}: unexpected answer {answer!r}")
            return resp.status, answer
    raise ValueError(f"{url}: too many redirects")


def handshake_failure(url: str, exc: BaseException) -> HandshakeError | None:
    """``tls_failure`` for an error an aiohttp request to ``url`` raised."""
    cause = _ssl_cause(exc)
    return tls_failure(url, cause) if cause is not None else None


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error behind an aiohttp error (aiohttp wraps it), if there is one."""
    seen: BaseException | None = exc
    for _ in range(5):  # a short chain: the wrapper, its cause, rarely one more
        if seen is None:
            return None
        cert_error = getattr(seen, "certificate_error", None)
        if isinstance(cert_error, ssl.SSLError):
            return cert_error
        os_error = getattr(seen, "os_error", None)
        if isinstance(os_error, ssl.SSLError):
            return os_error
        if isinstance(seen, ssl.SSLError) and type(seen).__module__ == "ssl":
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _hopeless(tries: Attempt[T], base: str, exc: BaseException) -> ClientError | None:
    """``Attempt.hopeless`` for an aiohttp error: the TLS error behind it decides."""
    cause = _ssl_cause(exc)
    return tries.hopeless(base, cause) if cause is not None else None


__all__ = ["AsyncClient", "Client", "ClientError", "CompactedError", "Compare", "Entry",
           "HandshakeError", "Lease", "LeaseInfo", "LeaseNotFoundError", "OutcomeUnknownError",
           "Page", "RequestError", "TxnResult", "UnavailableError", "WatchEvent",
           "handshake_failure", "request_json", "tls_context"]

"""Clients of the key-value HTTP API: ``Client`` (blocking, stdlib only) and ``AsyncClient``.

Both take a list of endpoints, send each request to the node believed to lead, follow ``307``
redirects to the leader, and retry ``503`` (no leader yet, busy, proposal dropped), ``504`` and
lost connections with backoff until ``timeout`` runs out. Every write carries this client's id
and a fresh sequence number that stays the same across its retries, so the state machine
applies it at most once however often it is resent. When the time is up, a write that may have
reached a leader raises ``OutcomeUnknownError`` (it may or may not be applied); otherwise
``UnavailableError`` (it was not applied). With ``fail_fast=True`` they give up at once, with
``UnavailableError``, when every endpoint refuses the connection (a shell user's typo'd port).

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
import time
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from raftly.kv.client_core import (
    Attempt,
    Call,
    ClientCore,
    ClientError,
    OutcomeUnknownError,
    Request,
    RequestError,
    Response,
    Step,
    UnavailableError,
    base_url,
    cas_call,
    delete_call,
    get_call,
    list_call,
    members_call,
    put_call,
    status_call,
)

if TYPE_CHECKING:
    import aiohttp

T = TypeVar("T")


# -- blocking --------------------------------------------------------------------------------------


class Client:
    """A blocking client: ``Client(["127.0.0.1:8001", "127.0.0.1:8002"]).put("k", b"v")``."""

    def __init__(self, endpoints: str | Sequence[str], *, timeout: float = 10.0,
                 request_timeout: float = 6.0, client_id: str | None = None,
                 fail_fast: bool = False) -> None:
        self._core = ClientCore(endpoints, timeout, request_timeout, client_id,
                                fail_fast=fail_fast)
        self._conns: dict[str, http.client.HTTPConnection] = {}

    @property
    def client_id(self) -> str:
        return self._core.client_id

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def put(self, key: str, value: bytes) -> int:
        """Store ``value``; return the log index at which it was applied."""
        return self._run(put_call(key, value))

    def get(self, key: str, *, stale: bool = False) -> bytes | None:
        return self._run(get_call(key, stale))

    def delete(self, key: str) -> bool:
        """Remove ``key``; return whether it existed."""
        return self._run(delete_call(key))

    def cas(self, key: str, old: bytes, new: bytes) -> bool:
        """Set ``key`` to ``new`` if it is ``old`` now; return whether it was swapped."""
        return self._run(cas_call(key, old, new))

    def list(self, prefix: str = "", limit: int = 1000, *, stale: bool = False
             ) -> builtins.list[tuple[str, bytes]]:
        return self._run(list_call(prefix, limit, stale))

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
        return call.decode(self._send(base_url(endpoint), call.request(),
                                      self._core.request_timeout))

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
            netloc = urlsplit(base).netloc
            conn = self._conns[base] = http.client.HTTPConnection(netloc, timeout=timeout)
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


class AsyncClient:
    """The asyncio client (aiohttp); ``async with AsyncClient(endpoints) as kv: ...``."""

    def __init__(self, endpoints: str | Sequence[str], *, timeout: float = 10.0,
                 request_timeout: float = 6.0, client_id: str | None = None,
                 fail_fast: bool = False) -> None:
        self._core = ClientCore(endpoints, timeout, request_timeout, client_id,
                                fail_fast=fail_fast)
        self._session: aiohttp.ClientSession | None = None

    @property
    def client_id(self) -> str:
        return self._core.client_id

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def put(self, key: str, value: bytes) -> int:
        return await self._run(put_call(key, value))

    async def get(self, key: str, *, stale: bool = False) -> bytes | None:
        return await self._run(get_call(key, stale))

    async def delete(self, key: str) -> bool:
        return await self._run(delete_call(key))

    async def cas(self, key: str, old: bytes, new: bytes) -> bool:
        return await self._run(cas_call(key, old, new))

    async def list(self, prefix: str = "", limit: int = 1000, *, stale: bool = False
                   ) -> builtins.list[tuple[str, bytes]]:
        return await self._run(list_call(prefix, limit, stale))

    async def members(self) -> builtins.list[dict[str, Any]]:
        """The cluster's members (``/v1/members``); their API addresses become endpoints."""
        members = await self._run(members_call())
        self._core.learn(members)
        return members

    async def status(self, endpoint: str | None = None) -> dict[str, Any]:
        call = status_call()
        if endpoint is None:
            return await self._run(call)
        return call.decode(await self._send(base_url(endpoint), call.request(),
                                            self._core.request_timeout))

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
                refused = isinstance(exc.os_error, ConnectionRefusedError | socket.gaierror)
                tries.failed(base, exc, maybe_sent=not refused)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
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
        async with self._session.request(
                req.method, url, data=req.body, headers=req.headers,
                allow_redirects=False, timeout=aiohttp.ClientTimeout(total=timeout)) as raw:
            body = await raw.read()
            return Response(raw.status, {k.lower(): v for k, v in raw.headers.items()}, body)


__all__ = ["AsyncClient", "Client", "ClientError", "OutcomeUnknownError", "RequestError",
           "UnavailableError"]

"""Clients of the key-value HTTP API: ``Client`` (blocking, stdlib only) and ``AsyncClient``.

Both take a list of endpoints, send each request to the node believed to lead, follow ``307``
redirects to the leader, and retry ``503`` (no leader yet, busy, proposal dropped), ``504`` and
lost connections with backoff until ``timeout`` runs out. Every write carries this client's id
and a fresh sequence number that stays the same across its retries, so the state machine
applies it at most once however often it is resent. When the time is up, a write that may have
reached a leader raises ``OutcomeUnknownError`` (it may or may not be applied); otherwise
``UnavailableError`` (it was not applied).

``Client`` is not thread-safe (use one per thread); ``AsyncClient`` may run many requests at once.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import http.client
import json
import random
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

from raftly.kv.protocol import (
    ACK_HEADER,
    CLIENT_HEADER,
    RETRY_HEADER,
    SEQ_HEADER,
    STALE_SEQ_CODE,
)

if TYPE_CHECKING:
    import aiohttp


class ClientError(Exception):
    """Base of the errors the KV clients raise."""


class UnavailableError(ClientError):
    """No node could serve the request in time. A write was definitely not applied."""


class OutcomeUnknownError(ClientError):
    """A write may or may not have been applied (a timeout or connection loss at the leader)."""


class RequestError(ClientError):
    """The cluster refused the request as invalid (4xx): ``status`` and the server's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


@dataclass(slots=True)
class _Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def error_message(self) -> str:
        try:
            body = self.json()
            return str(body.get("error", body)) if isinstance(body, dict) else str(body)
        except ValueError:
            return self.body.decode("utf-8", "replace")[:200]


@dataclass(slots=True)
class _Request:
    method: str
    path: str  # with the query string
    body: bytes | None = None
    write: bool = False
    headers: dict[str, str] | None = None


def _base_url(endpoint: str) -> str:
    if "://" not in endpoint:
        endpoint = "http://" + endpoint
    parts = urlsplit(endpoint)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"not an http endpoint: {endpoint!r}")
    return f"http://{parts.netloc}"


def _key_path(key: str) -> str:
    if not isinstance(key, str) or not key:
        raise ValueError("a key is a non-empty str")
    return "/v1/kv/" + quote(key, safe="")


class _Policy:
    """What both clients share: endpoints, the leader guess, sessions, backoff, and decoding."""

    def __init__(self, endpoints: str | Sequence[str], timeout: float,
                 request_timeout: float, client_id: str | None) -> None:
        if isinstance(endpoints, str):
            endpoints = [e for e in endpoints.split(",") if e.strip()]
        if not endpoints:
            raise ValueError("at least one endpoint is needed")
        self.endpoints = [_base_url(e.strip()) for e in endpoints]
        self.timeout = timeout
        self.request_timeout = request_timeout
        self.client_id = client_id or uuid.uuid4().hex
        self._current = self.endpoints[0]
        self._rotation = 0
        self._seq = 0
        self._outstanding: set[int] = set()
        self._rng = random.Random()

    def begin_write(self) -> tuple[int, dict[str, str]]:
        self._seq += 1
        seq = self._seq
        self._outstanding.add(seq)
        # ack: the lowest seq still awaited; the state machine may forget results below it.
        return seq, {CLIENT_HEADER: self.client_id, SEQ_HEADER: str(seq),
                     ACK_HEADER: str(min(self._outstanding))}

    def end_write(self, seq: int) -> None:
        self._outstanding.discard(seq)

    def rotate(self) -> None:
        """The current node failed us: try the next endpoint."""
        self._rotation = (self._rotation + 1) % len(self.endpoints)
        self._current = self.endpoints[self._rotation]

    def backoff(self, attempt: int) -> float:
        return min(0.02 * (1 << min(attempt, 10)), 0.5) * (0.5 + self._rng.random())

    def follow(self, location: str | None) -> bool:
        if not location:
            return False
        try:
            self._current = _base_url(location)
        except ValueError:
            return False
        return True

    def outcome(self, req: _Request, resp: _Response) -> str:
        """'done' (hand to the caller), 'redirect', 'retry', 'retry-elsewhere' or 'unknown'."""
        if resp.status == 307:
            return "redirect" if self.follow(resp.headers.get("location")) else "retry-elsewhere"
        if resp.status == 503:
            try:
                leader = resp.json().get("leader")
            except (ValueError, AttributeError):
                leader = None
            return "retry" if leader is not None else "retry-elsewhere"
        if resp.status == 504:
            return "unknown"
        if resp.status == 409 and req.write:
            try:
                if resp.json().get("code") == STALE_SEQ_CODE:
                    raise OutcomeUnknownError(resp.error_message())
            except (ValueError, AttributeError):
                pass
        if resp.status >= 500:
            return "retry-elsewhere"
        return "done"

    def mark_retry(self, req: _Request, maybe_applied: bool) -> None:
        """Resends of a write that may have been applied say so: a node that forgot the
        client's session then answers "outcome unknown" instead of applying it again."""
        if maybe_applied and req.write and req.headers is not None:
            req.headers[RETRY_HEADER] = "1"

    def give_up(self, req: _Request, maybe_applied: bool, last: str) -> ClientError:
        what = f"{req.method} {req.path.split('?')[0]}"
        if req.write and maybe_applied:
            return OutcomeUnknownError(
                f"{what}: no definite answer within {self.timeout}s (last: {last}); the write "
                "may or may not have been applied")
        return UnavailableError(f"{what}: no node answered within {self.timeout}s (last: {last})")


def _check(resp: _Response, *ok: int) -> _Response:
    if resp.status not in ok:
        raise RequestError(resp.status, resp.error_message())
    return resp


def _decode_list(resp: _Response) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for item in _check(resp, 200).json():
        if "value" in item:
            out.append((item["key"], item["value"].encode("utf-8")))
        else:
            out.append((item["key"], base64.b64decode(item["value_base64"])))
    return out


def _cas_path(key: str, old: bytes) -> str:
    try:
        expect = old.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("cas compares through a URL parameter: old must be UTF-8") from None
    return _key_path(key) + "?" + urlencode({"expect": expect})


def _list_path(prefix: str, limit: int, stale: bool) -> str:
    query = {"prefix": prefix, "limit": str(limit)}
    if stale:
        query["consistency"] = "stale"
    return "/v1/kv?" + urlencode(query)


# -- blocking --------------------------------------------------------------------------------------


class _Attempts:
    """The retry state of one request, shared by both clients (they differ only in I/O).

    Tracks the deadline, the attempt count for backoff, the last problem seen, and whether an
    attempt of a write may have been applied: that decides "unknown" against "unavailable".
    """

    def __init__(self, policy: _Policy, req: _Request, clock: Callable[[], float]) -> None:
        self.policy = policy
        self.req = req
        self.clock = clock
        self.deadline = clock() + policy.timeout
        self.maybe_applied = False
        self.attempt = 0
        self.last = "nothing tried"

    def request_timeout(self) -> float:
        return max(0.05, min(self.policy.request_timeout, self.deadline - self.clock()))

    def failed(self, base: str, exc: BaseException, *, maybe_sent: bool) -> None:
        """The request got no answer; ``maybe_sent`` unless it surely never left."""
        self.last = f"{base}: {type(exc).__name__}: {exc}"
        self.maybe_applied = self.maybe_applied or (maybe_sent and self.req.write)
        self.policy.rotate()

    def answered(self, base: str, resp: _Response) -> str:
        """'done' (hand the response over), 'now' (follow a redirect) or 'later' (retry)."""
        verdict = self.policy.outcome(self.req, resp)
        self.last = f"{base}: {resp.status} {resp.error_message()}"
        if verdict == "done":
            return "done"
        if verdict == "redirect" and self.attempt < 8:
            self.attempt += 1
            return "now"
        if verdict == "unknown":
            self.maybe_applied = True
        elif verdict == "retry-elsewhere":
            self.policy.rotate()
        return "later"

    def pause(self) -> float:
        """How long to wait before the next attempt; raises once the deadline has passed."""
        self.policy.mark_retry(self.req, self.maybe_applied)
        now = self.clock()
        if now >= self.deadline:
            raise self.policy.give_up(self.req, self.maybe_applied, self.last)
        pause = min(self.policy.backoff(self.attempt), self.deadline - now)
        self.attempt += 1
        return pause


class Client:
    """A blocking client: ``Client(["127.0.0.1:8001", "127.0.0.1:8002"]).put("k", b"v")``."""

    def __init__(self, endpoints: str | Sequence[str], *, timeout: float = 10.0,
                 request_timeout: float = 6.0, client_id: str | None = None) -> None:
        self._p = _Policy(endpoints, timeout, request_timeout, client_id)
        self._conns: dict[str, http.client.HTTPConnection] = {}

    @property
    def client_id(self) -> str:
        return self._p.client_id

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
        resp = self._write("PUT", _key_path(key), bytes(value))
        return int(_check(resp, 200).json()["index"])

    def get(self, key: str, *, stale: bool = False) -> bytes | None:
        path = _key_path(key) + ("?consistency=stale" if stale else "")
        resp = self._do(_Request("GET", path))
        if resp.status == 404:
            return None
        return _check(resp, 200).body

    def delete(self, key: str) -> bool:
        """Remove ``key``; return whether it existed."""
        return bool(_check(self._write("DELETE", _key_path(key), None), 200).json()["deleted"])

    def cas(self, key: str, old: bytes, new: bytes) -> bool:
        """Set ``key`` to ``new`` if it is ``old`` now; return whether it was swapped."""
        resp = self._write("PUT", _cas_path(key, old), bytes(new))
        return _check(resp, 200, 412).status == 200

    def list(self, prefix: str = "", limit: int = 1000, *, stale: bool = False
             ) -> builtins.list[tuple[str, bytes]]:
        return _decode_list(self._do(_Request("GET", _list_path(prefix, limit, stale))))

    def status(self, endpoint: str | None = None) -> dict[str, Any]:
        """``/v1/status`` of ``endpoint`` (default: whichever node answers first)."""
        if endpoint is not None:
            resp = self._send(_base_url(endpoint), _Request("GET", "/v1/status"),
                              self._p.request_timeout)
        else:
            resp = self._do(_Request("GET", "/v1/status"))
        result: dict[str, Any] = _check(resp, 200).json()
        return result

    def _write(self, method: str, path: str, body: bytes | None) -> _Response:
        seq, headers = self._p.begin_write()
        try:
            return self._do(_Request(method, path, body, write=True, headers=headers))
        finally:
            self._p.end_write(seq)

    def _do(self, req: _Request) -> _Response:
        tries = _Attempts(self._p, req, time.monotonic)
        while True:
            base = self._p._current
            try:
                resp = self._send(base, req, tries.request_timeout())
            except ConnectionRefusedError as exc:
                tries.failed(base, exc, maybe_sent=False)
            except (OSError, http.client.HTTPException) as exc:
                tries.failed(base, exc, maybe_sent=True)
            else:
                step = tries.answered(base, resp)
                if step == "done":
                    return resp
                if step == "now":
                    continue
            time.sleep(tries.pause())

    def _send(self, base: str, req: _Request, timeout: float) -> _Response:
        conn = self._conns.get(base)
        if conn is None:
            netloc = urlsplit(base).netloc
            conn = self._conns[base] = http.client.HTTPConnection(netloc, timeout=timeout)
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        try:
            conn.request(req.method, req.path, body=req.body, headers=req.headers or {})
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
        return _Response(raw.status, headers, body)


# -- asyncio ---------------------------------------------------------------------------------------


class AsyncClient:
    """The asyncio client (aiohttp); ``async with AsyncClient(endpoints) as kv: ...``."""

    def __init__(self, endpoints: str | Sequence[str], *, timeout: float = 10.0,
                 request_timeout: float = 6.0, client_id: str | None = None) -> None:
        self._p = _Policy(endpoints, timeout, request_timeout, client_id)
        self._session: aiohttp.ClientSession | None = None

    @property
    def client_id(self) -> str:
        return self._p.client_id

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
        resp = await self._write("PUT", _key_path(key), bytes(value))
        return int(_check(resp, 200).json()["index"])

    async def get(self, key: str, *, stale: bool = False) -> bytes | None:
        path = _key_path(key) + ("?consistency=stale" if stale else "")
        resp = await self._do(_Request("GET", path))
        if resp.status == 404:
            return None
        return _check(resp, 200).body

    async def delete(self, key: str) -> bool:
        resp = await self._write("DELETE", _key_path(key), None)
        return bool(_check(resp, 200).json()["deleted"])

    async def cas(self, key: str, old: bytes, new: bytes) -> bool:
        resp = await self._write("PUT", _cas_path(key, old), bytes(new))
        return _check(resp, 200, 412).status == 200

    async def list(self, prefix: str = "", limit: int = 1000, *, stale: bool = False
                   ) -> builtins.list[tuple[str, bytes]]:
        return _decode_list(await self._do(_Request("GET", _list_path(prefix, limit, stale))))

    async def status(self, endpoint: str | None = None) -> dict[str, Any]:
        if endpoint is not None:
            resp = await self._send(_base_url(endpoint), _Request("GET", "/v1/status"),
                                    self._p.request_timeout)
        else:
            resp = await self._do(_Request("GET", "/v1/status"))
        result: dict[str, Any] = _check(resp, 200).json()
        return result

    async def _write(self, method: str, path: str, body: bytes | None) -> _Response:
        seq, headers = self._p.begin_write()
        try:
            return await self._do(_Request(method, path, body, write=True, headers=headers))
        finally:
            self._p.end_write(seq)

    async def _do(self, req: _Request) -> _Response:
        import aiohttp

        tries = _Attempts(self._p, req, asyncio.get_running_loop().time)
        while True:
            base = self._p._current
            try:
                resp = await self._send(base, req, tries.request_timeout())
            except aiohttp.ClientConnectorError as exc:
                refused = isinstance(exc.os_error, ConnectionRefusedError | socket.gaierror)
                tries.failed(base, exc, maybe_sent=not refused)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                tries.failed(base, exc, maybe_sent=True)
            else:
                step = tries.answered(base, resp)
                if step == "done":
                    return resp
                if step == "now":
                    continue
            await asyncio.sleep(tries.pause())

    async def _send(self, base: str, req: _Request, timeout: float) -> _Response:
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
            return _Response(raw.status, {k.lower(): v for k, v in raw.headers.items()}, body)


__all__ = ["AsyncClient", "Client", "ClientError", "OutcomeUnknownError", "RequestError",
           "UnavailableError"]

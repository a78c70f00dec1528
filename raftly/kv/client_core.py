"""The KV client without I/O: what to send, what each answer means, when to try again.

Everything the blocking ``Client`` and the asyncio ``AsyncClient`` (``raftly.kv.client``) have
in common lives here, h11-style, so that they are two thin shells that only move bytes and
sleep:

- building each operation's request (``put_call`` ... ``status_call``: path, body, and how to
  decode the answer);
- the routing state of one client (``ClientCore``: endpoints and their scheme, the node
  believed to lead, the session id and write sequence numbers, the bearer token);
- where a redirect may go (``redirect_url``: a ``307`` from an https node never leads to
  plain http);
- the retry state of one call (``Attempt``: deadline, backoff, whether a write may have been
  applied, which endpoints failed TLS), which turns each answer into a ``Verdict`` and then a
  ``Step`` for the shell.

A bearer token sent over plain http to a host other than this one can be read on the way: the
first time a client would, it logs a WARNING naming the host (once per host per process).

No socket, no clock of its own (the shell passes one in), no sleeping: all of it can be driven
and tested without a network.
"""

from __future__ import annotations

import base64
import enum
import json
import logging
import random
import ssl
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote, urlencode, urljoin, urlsplit

from raftly.kv.exposure import is_loopback
from raftly.kv.protocol import (
    ACK_HEADER,
    CLIENT_HEADER,
    KV_PATH,
    MEMBERS_PATH,
    RETRY_HEADER,
    SEQ_HEADER,
    STALE_SEQ_CODE,
    STATUS_PATH,
    decode_list_item,
)

__all__ = [
    "Attempt",
    "Call",
    "ClientCore",
    "ClientError",
    "HandshakeError",
    "OutcomeUnknownError",
    "Request",
    "RequestError",
    "Response",
    "Step",
    "UnavailableError",
    "Verdict",
    "base_url",
    "cas_call",
    "delete_call",
    "get_call",
    "list_call",
    "members_call",
    "put_call",
    "redirect_url",
    "status_call",
    "tls_failure",
    "warn_plaintext_token",
]

logger = logging.getLogger("raftly.kv.client")

T = TypeVar("T")

_MAX_REDIRECTS = 8
"""Redirects followed at once within one call; more than that and the call backs off first."""


class ClientError(Exception):
    """Base of the errors the KV clients raise."""


class UnavailableError(ClientError):
    """No node could serve the request in time. A write was definitely not applied."""


class OutcomeUnknownError(ClientError):
    """A write may or may not have been applied (a timeout or connection loss at the leader)."""


class HandshakeError(UnavailableError):
    """A TLS handshake failed for a reason that retrying cannot fix: the node's certificate
    cannot be verified, the node refused this client's certificate, or the node speaks plain
    HTTP. Nothing was sent, so a write was not applied."""


class RequestError(ClientError):
    """The cluster refused the request (4xx): ``status`` and the server's message.

    ``401`` (no token or an unknown one) and ``403`` (the token's role is too low) come here
    too, with the server's message.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


@dataclass(slots=True)
class Response:
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
class Request:
    method: str
    path: str  # with the query string
    body: bytes | None = None
    write: bool = False
    headers: dict[str, str] = field(default_factory=dict)


class Verdict(enum.Enum):
    """What one answer means for the call that got it."""

    DONE = "done"
    """The answer for the caller (a success or a definite refusal)."""
    REDIRECT = "redirect"
    """``307`` to the leader, which is now the node to ask."""
    RETRY = "retry"
    """``503`` from a node that knows a leader (busy, dropped): ask it again after a pause."""
    RETRY_ELSEWHERE = "retry-elsewhere"
    """No use asking this node again (no leader known, a bad redirect, a 5xx): the next one."""
    UNKNOWN = "unknown"
    """``504``: a write may have been applied; retry with the same seq after a pause."""


class Step(enum.Enum):
    """What the I/O shell does after an answer."""

    DONE = "done"
    """Hand the response to the call's decoder."""
    SEND_NOW = "send-now"
    """Resend at once (to the leader a redirect named)."""
    WAIT = "wait"
    """Sleep ``Attempt.pause()``, then resend."""


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One operation: the request to send, and how to turn its final answer into the result."""

    method: str
    path: str
    body: bytes | None
    write: bool
    decode: Callable[[Response], T]

    def request(self, headers: dict[str, str] | None = None) -> Request:
        return Request(self.method, self.path, self.body, self.write, dict(headers or {}))


def base_url(endpoint: str, scheme: str = "http") -> str:
    """``scheme://host:port`` of ``endpoint``; ``scheme`` is for an endpoint that names none."""
    if "://" not in endpoint:
        endpoint = f"{scheme}://{endpoint}"
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http or https endpoint: {endpoint!r}")
    return f"{parts.scheme}://{parts.netloc}"


def redirect_url(current: str, location: str | None) -> str | None:
    """Where a ``307`` from ``current`` (a URL) with header ``location`` leads, or None when it
    must not be followed: no location, not http(s), or from https down to plain http (a node
    that serves TLS never sends that; whoever did would read the request, token included)."""
    if not location:
        return None
    target = urljoin(current, location)
    parts = urlsplit(target)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if urlsplit(current).scheme == "https" and parts.scheme != "https":
        return None
    return target


_warned_plaintext: set[str] = set()
"""Hosts already warned about (a token sent to them over plain http)."""


def warn_plaintext_token(url: str) -> None:
    """Log once per host when a token would go to ``url`` over plain http off this machine."""
    parts = urlsplit(url)
    host = parts.hostname or ""  # urlsplit takes an IPv6 address out of its brackets
    if parts.scheme != "http" or is_loopback(host) or host in _warned_plaintext:
        return
    _warned_plaintext.add(host)
    logger.warning("sending the token to %s over plain http: anyone on the way can read it; "
                   "use https (--cacert / $RAFTLY_CACERT) for a TLS cluster", parts.netloc)


# What the TLS library says when the other end answers a handshake with plain HTTP.
_PLAINTEXT_REASONS = frozenset({"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE",
                                "HTTP_REQUEST", "UNKNOWN_PROTOCOL"})


def tls_failure(base: str, exc: BaseException) -> HandshakeError | None:
    """A ``HandshakeError`` for ``exc`` (met while connecting to ``base``) when it is a TLS
    failure that retrying cannot fix; None for anything else (a reset, a timeout: retried)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = getattr(exc, "verify_message", None) or exc
        return HandshakeError(
            f"{base}: TLS: cannot verify the node's certificate ({why}); is --cacert "
            "($RAFTLY_CACERT) the cluster's CA certificate?")
    if not isinstance(exc, ssl.SSLError):
        return None
    reason = str(exc.reason or "")
    if reason in _PLAINTEXT_REASONS:
        return HandshakeError(f"{base}: TLS: the node does not speak TLS ({reason.lower()}); "
                              "use http:// and no TLS options for it")
    if "ALERT" in reason:  # the node ended the handshake: it refused us or our certificate
        return HandshakeError(
            f"{base}: TLS: the node refused the handshake ({reason.lower()}); it may require "
            "a client certificate of the cluster CA (--cert/--key)")
    return None


# -- the operations --------------------------------------------------------------------------------
# Arguments are checked here, before a call is started, so a bad one never uses up a seq.


def _key_path(key: str) -> str:
    # The messages reach `raftly kv` users as they are: say it in their words.
    if not isinstance(key, str):
        raise ValueError(f"a key is text (str), not {type(key).__name__}")
    if not key:
        raise ValueError("the key is empty: a key needs at least one character")
    return KV_PATH + "/" + quote(key, safe="")


def _check(resp: Response, *ok: int) -> Response:
    if resp.status not in ok:
        raise RequestError(resp.status, resp.error_message())
    return resp


def _decode_index(resp: Response) -> int:
    return int(_check(resp, 200).json()["index"])


def _decode_value(resp: Response) -> bytes | None:
    if resp.status == 404:
        return None
    return _check(resp, 200).body


def _decode_deleted(resp: Response) -> bool:
    return bool(_check(resp, 200).json()["deleted"])


def _decode_swapped(resp: Response) -> bool:
    return _check(resp, 200, 412).status == 200


def _decode_list(resp: Response) -> list[tuple[str, bytes]]:
    return [decode_list_item(item) for item in _check(resp, 200).json()]


def _decode_status(resp: Response) -> dict[str, Any]:
    result: dict[str, Any] = _check(resp, 200).json()
    return result


def put_call(key: str, value: bytes) -> Call[int]:
    """Store ``value``; the result is the log index at which it was applied."""
    return Call("PUT", _key_path(key), bytes(value), True, _decode_index)


def get_call(key: str, stale: bool) -> Call[bytes | None]:
    path = _key_path(key) + ("?consistency=stale" if stale else "")
    return Call("GET", path, None, False, _decode_value)


def delete_call(key: str) -> Call[bool]:
    """Remove ``key``; the result is whether it existed."""
    return Call("DELETE", _key_path(key), None, True, _decode_deleted)


def cas_call(key: str, old: bytes, new: bytes) -> Call[bool]:
    """Set ``key`` to ``new`` if it is ``old`` now; the result is whether it was swapped."""
    try:
        # Readable text where it can be (logs, redirects); exact bytes where it cannot: the
        # server refuses an empty ``expect`` as a likely mistake.
        query = {"expect": old.decode("utf-8")} if old else {"expect_base64": ""}
    except UnicodeDecodeError:
        query = {"expect_base64": base64.b64encode(old).decode("ascii")}
    path = _key_path(key) + "?" + urlencode(query)
    return Call("PUT", path, bytes(new), True, _decode_swapped)


def list_call(prefix: str, limit: int, stale: bool) -> Call[list[tuple[str, bytes]]]:
    query = {"prefix": prefix, "limit": str(limit)}
    if stale:
        query["consistency"] = "stale"
    return Call("GET", KV_PATH + "?" + urlencode(query), None, False, _decode_list)


def status_call() -> Call[dict[str, Any]]:
    return Call("GET", STATUS_PATH, None, False, _decode_status)


def _decode_members(resp: Response) -> list[dict[str, Any]]:
    members = _check(resp, 200).json().get("members")
    if not isinstance(members, list) or not all(isinstance(m, dict) for m in members):
        raise RequestError(resp.status, "malformed members answer")
    return members


def members_call() -> Call[list[dict[str, Any]]]:
    """The cluster's members (``GET /v1/members``): name, id, raft, api, role each."""
    return Call("GET", MEMBERS_PATH, None, False, _decode_members)


# -- routing and retries ---------------------------------------------------------------------------


class ClientCore:
    """The state of one client: endpoints, the leader guess, the session, and backoff."""

    def __init__(self, endpoints: str | Sequence[str], timeout: float,
                 request_timeout: float, client_id: str | None, *,
                 fail_fast: bool = False, tls: bool = False, token: str | None = None,
                 client_cert: bool = False) -> None:
        if isinstance(endpoints, str):
            endpoints = [e for e in endpoints.split(",") if e.strip()]
        if not endpoints:
            raise ValueError("at least one endpoint is needed")
        self.endpoints = [base_url(e.strip(), "https" if tls else "http") for e in endpoints]
        # A cluster is all TLS or all plain: addresses learned later (redirects, member lists
        # give "host:port") take the scheme the cluster was reached with.
        self.scheme = "https" if tls or any(e.startswith("https:") for e in self.endpoints) \
            else "http"
        if token is not None and (not token or any(c in token for c in "\r\n")):
            raise ValueError("the token is empty or spans lines")
        self.headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        """Sent with every request (the bearer token)."""
        self._has_token = token is not None
        for endpoint in self.endpoints:
            self._check_token_scheme(endpoint)
        self.client_cert = client_cert
        """Whether this client shows a certificate (for the hint when a node closes on it)."""
        self.timeout = timeout
        self.request_timeout = request_timeout
        self.client_id = client_id or uuid.uuid4().hex
        self.fail_fast = fail_fast
        """Give up at once when every endpoint refuses the connection (nothing listens there),
        rather than retry until the timeout: for a person at a shell, not for a service that
        may start before its cluster."""
        self.target = self.endpoints[0]
        """The node the next request goes to: the leader as far as this client knows."""
        self._rotation = 0
        self._seq = 0
        self._outstanding: set[int] = set()
        self._rng = random.Random()

    def start(self, call: Call[T], clock: Callable[[], float]) -> Attempt[T]:
        """Begin ``call``; the shell must ``finish()`` the attempt however it ends."""
        return Attempt(self, call, clock)

    def request(self, call: Call[T], headers: dict[str, str] | None = None) -> Request:
        """``call``'s request, with this client's own headers (the token) and ``headers``."""
        return call.request({**self.headers, **(headers or {})})

    def base(self, endpoint: str) -> str:
        """``endpoint`` as a base URL, in this client's scheme when it names none."""
        return base_url(endpoint, self.scheme)

    def begin_write(self) -> tuple[int, dict[str, str]]:
        """A fresh seq and the session headers that carry it (the same for every resend)."""
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
        self.target = self.endpoints[self._rotation]

    def backoff(self, attempt: int) -> float:
        return min(0.02 * (1 << min(attempt, 10)), 0.5) * (0.5 + self._rng.random())

    def follow(self, location: str | None) -> bool:
        target = redirect_url(self.target + "/", location)
        if target is None:
            return False
        self.target = base_url(target)
        self._learn(self.target)  # a leader added after this client was made
        return True

    def learn(self, members: Sequence[dict[str, Any]]) -> None:
        """Add the API addresses of ``members`` (a ``/v1/members`` answer) to the endpoints.

        The given endpoints are kept: a client never forgets where it was told to look.
        """
        for member in members:
            api = member.get("api")
            if isinstance(api, str) and api:
                try:
                    self._learn(self.base(api))
                except ValueError:
                    continue

    def _learn(self, url: str) -> None:
        if url not in self.endpoints:
            self.endpoints.append(url)
            self._check_token_scheme(url)

    def _check_token_scheme(self, url: str) -> None:
        if self._has_token:
            warn_plaintext_token(url)

    def verdict(self, req: Request, resp: Response) -> Verdict:
        """What ``resp`` means; raises OutcomeUnknownError for a write whose seq was forgotten."""
        if resp.status == 307:
            return (Verdict.REDIRECT if self.follow(resp.headers.get("location"))
                    else Verdict.RETRY_ELSEWHERE)
        if resp.status == 503:
            try:
                leader = resp.json().get("leader")
            except (ValueError, AttributeError):
                leader = None
            return Verdict.RETRY if leader is not None else Verdict.RETRY_ELSEWHERE
        if resp.status == 504:
            return Verdict.UNKNOWN
        if resp.status == 409 and req.write:
            try:
                if resp.json().get("code") == STALE_SEQ_CODE:
                    raise OutcomeUnknownError(resp.error_message())
            except (ValueError, AttributeError):
                pass
        if resp.status >= 500:
            return Verdict.RETRY_ELSEWHERE
        return Verdict.DONE

    def mark_retry(self, req: Request, maybe_applied: bool) -> None:
        """Resends of a write that may have been applied say so: a node that forgot the
        client's session then answers "outcome unknown" instead of applying it again."""
        if maybe_applied and req.write:
            req.headers[RETRY_HEADER] = "1"

    def give_up(self, req: Request, maybe_applied: bool, last: str) -> ClientError:
        what = f"{req.method} {req.path.split('?')[0]}"
        if self.scheme == "https" and not self.client_cert and "isconnected" in last:
            # With TLS 1.3 a node that demands a client certificate checks it after the
            # handshake and just closes the connection: say what that usually means.
            last += ("; a node that requires a client certificate closes the connections of "
                     "clients without one: --cert/--key")
        if req.write and maybe_applied:
            return OutcomeUnknownError(
                f"{what}: no definite answer within {self.timeout}s (last: {last}); the write "
                "may or may not have been applied")
        return UnavailableError(f"{what}: no node answered within {self.timeout}s (last: {last})")

    def refused_everywhere(self, req: Request) -> UnavailableError:
        what = f"{req.method} {req.path.split('?')[0]}"
        return UnavailableError(
            f"{what}: connection refused by every endpoint ({', '.join(self.endpoints)}); "
            "is the cluster running?")


class Attempt(Generic[T]):
    """The retry state of one call, from its first send to its last.

    Tracks the deadline, the attempt count for backoff, the last problem seen, and whether an
    attempt of a write may have been applied: that decides "unknown" against "unavailable".
    A write holds one seq for all its resends, so the cluster applies it at most once.
    """

    def __init__(self, core: ClientCore, call: Call[T], clock: Callable[[], float]) -> None:
        self.core = core
        self.call = call
        self.clock = clock
        self._seq: int | None = None
        headers: dict[str, str] = {}
        if call.write:
            self._seq, headers = core.begin_write()
        self.request = core.request(call, headers)
        self.deadline = clock() + core.timeout
        self.maybe_applied = False
        self.attempt = 0
        self.last = "nothing tried"
        self.refused: set[str] = set()
        """The nodes that refused the connection since the last answer from any node."""
        self.untrusted: dict[str, ClientError] = {}
        """The nodes whose TLS handshake failed for good (``tls_failure``), with the error."""
        self._tls_failed_now = False  # the failure hopeless() just saw was such a handshake

    def finish(self) -> None:
        """The call is over (answered or given up): its seq is no longer awaited."""
        if self._seq is not None:
            self.core.end_write(self._seq)
            self._seq = None

    def request_timeout(self) -> float:
        return max(0.05, min(self.core.request_timeout, self.deadline - self.clock()))

    def hopeless(self, base: str, exc: BaseException) -> ClientError | None:
        """Called first for every failed request (then ``failed``): the error to raise at
        once, or None to go on. A TLS failure that retrying cannot fix (``tls_failure``) rules
        ``base`` out, and the error is raised once every endpoint is ruled out so: one
        plaintext or expired node listed first must not fail every call. A write that an
        earlier attempt may have applied is then of unknown outcome, not unavailable."""
        error = tls_failure(base, exc)
        self._tls_failed_now = error is not None
        if error is None:
            return None
        self.untrusted[base] = error
        if not self.untrusted.keys() >= set(self.core.endpoints):
            return None
        return self._unusable(error)

    def _unusable(self, error: ClientError) -> ClientError:
        if self.request.write and self.maybe_applied:
            return OutcomeUnknownError(f"{error} (an earlier attempt may have applied the "
                                       "write)")
        return error

    def failed(self, base: str, exc: BaseException, *, maybe_sent: bool) -> None:
        """The request got no answer; ``maybe_sent`` unless it surely never left (a failed
        TLS handshake, which ``hopeless`` saw, never carries the request)."""
        tls_failed, self._tls_failed_now = self._tls_failed_now, False
        self.last = f"{base}: {type(exc).__name__}: {exc}"
        if tls_failed:
            self.last = str(self.untrusted[base])
        else:
            self.maybe_applied = self.maybe_applied or (maybe_sent and self.request.write)
            if not maybe_sent:
                self.refused.add(base)
        self.core.rotate()

    def answered(self, base: str, resp: Response) -> Step:
        verdict = self.core.verdict(self.request, resp)
        self.last = f"{base}: {resp.status} {resp.error_message()}"
        self.refused.clear()
        if verdict is Verdict.DONE:
            return Step.DONE
        if verdict is Verdict.REDIRECT and self.attempt < _MAX_REDIRECTS:
            self.attempt += 1
            return Step.SEND_NOW
        if verdict is Verdict.UNKNOWN:
            self.maybe_applied = True
        elif verdict is Verdict.RETRY_ELSEWHERE:
            self.core.rotate()
        return Step.WAIT

    def pause(self) -> float:
        """How long to wait before the next attempt; raises once the deadline has passed."""
        self.core.mark_retry(self.request, self.maybe_applied)
        now = self.clock()
        if now >= self.deadline:
            raise self.core.give_up(self.request, self.maybe_applied, self.last)
        if self.core.fail_fast and not self.maybe_applied \
                and (self.refused | self.untrusted.keys()).issuperset(self.core.endpoints):
            if self.untrusted:  # some refused, the others failed TLS: say why those did
                raise next(iter(self.untrusted.values()))
            raise self.core.refused_everywhere(self.request)
        pause = min(self.core.backoff(self.attempt), self.deadline - now)
        self.attempt += 1
        return pause

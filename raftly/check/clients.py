"""The workload: concurrent clients doing random reads, writes and compare-and-sets.

Every operation is exactly one attempt, on purpose: the retrying ``raftly`` client would hide the
outcomes the checker needs to see. An op goes to a randomly chosen node over aiohttp, follows a
``307`` to the leader (at most twice), and has a deadline. Its outcome is classified
conservatively, because a ``fail`` tells the checker the op *certainly* did not take effect:

- ``200`` -> ok; a ``404`` on a read -> ok with value ``null``.
- ``412`` on a cas -> fail (the state machine compared and refused).
- a read that did not answer 200/404, for whatever reason -> fail: a read has no effect, so
  claiming it did not happen is always safe.
- ``503`` on a write whose body says the node refused before proposing (no leader known, or
  "not applied, safe to retry": Busy, dropped, replaced by a new leader's entry) -> fail.
- a refused TCP connection -> fail (nothing was sent), but only when it was the request's one
  and only connection attempt (see ``open_session``).
- anything else on a write (timeout, connection lost mid-request, ``504``, ``500``, an unexpected
  status or body) -> info: it may have happened, now or later.

aiohttp silently resends an "idempotent" request (PUT is one) once when its connection drops;
for a write that may already have been applied that second attempt is wrong twice over: it is
a second attempt, and when it is refused the op would be recorded as a certain ``fail``. A real
run caught exactly that (a write proposed on a leader that was then SIGKILLed, read back later,
recorded as failed). ``open_session`` turns the resend off and counts connection attempts per
request, so a refused connection counts as "not sent" only if it was the first attempt.

A process that got ``info`` may still have its op take effect at any later time, so it never
issues again: the worker continues as a new process number (the Jepsen convention).

Values are unique per run (``v<process>-<n>``), so a read names exactly the write it saw.

The txn workload also grants short leases nobody keeps alive, on keys of their own
(``raftly.check.leased`` says how their expiry is modelled); a write on a lease that has
ended is refused by the state machine (``404 lease_not_found``): a sure ``fail``.

Against a TLS cluster (``raftly check --tls``) the same ops go over https with the cluster's CA.
A TLS handshake that failed is a connection error like a refused one: the request was never
sent, so the op is a sure ``fail``.

Every ``fail`` and ``info`` also records a ``reason``: a short, fixed phrase (``REFUSED``,
``NO_LEADER``, ``CAS_MISS``, ``TIMEOUT``, ...) that the summary and the report count, where the
``error`` keeps the detail.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from urllib.parse import quote

import aiohttp

from raftly.check.history import HistoryWriter, now
from raftly.check.leased import LeaseRounds
from raftly.kv.client_core import redirect_url
from raftly.kv.protocol import LEASES_PATH, TXN_PATH
from raftly.testing.history import Function, Status

# Why an op failed or has an unknown outcome, in words a reader of the summary knows.
REFUSED = "connection refused"
CANNOT_CONNECT = "cannot connect"
CONNECTION_LOST = "connection lost"
TIMEOUT = "timeout"
NO_LEADER = "503 no leader"
NOT_APPLIED = "503 not applied (busy or dropped)"
UNAVAILABLE = "503 unavailable"
CAS_MISS = "412 cas miss"
OUTCOME_UNKNOWN = "504 outcome unknown"
REDIRECTS = "too many redirects"
BAD_REDIRECT = "redirect refused"
"""A 307 to where a client must not go (from https down to http)."""
LEASE_GONE = "404 lease ended"


def _status_reason(status: int, text: str) -> str:
    if status == 412:
        return CAS_MISS
    if status == 503:
        if "no leader known" in text:
            return NO_LEADER
        return NOT_APPLIED if "not applied" in text else UNAVAILABLE
    if status == 504:
        return OUTCOME_UNKNOWN
    return f"HTTP {status}"


async def _count_connect(session: aiohttp.ClientSession, ctx: SimpleNamespace,
                         params: aiohttp.TraceConnectionCreateStartParams) -> None:
    attempts = ctx.trace_request_ctx
    if isinstance(attempts, SimpleNamespace):
        attempts.connects += 1


def open_session(context: ssl.SSLContext | None = None) -> aiohttp.ClientSession:
    """An aiohttp session for one-attempt ops: a fresh connection per request, no resends;
    https URLs are verified with ``context`` (the cluster's CA)."""
    trace = aiohttp.TraceConfig()
    trace.on_connection_create_start.append(_count_connect)
    # A fresh connection per request: a pooled connection to a node that was since killed
    # would fail mid-request (unknown outcome), where a new one is cleanly refused.
    connector = aiohttp.TCPConnector(limit=0, force_close=True,
                                     ssl=context if context is not None else True)
    session = aiohttp.ClientSession(connector=connector, trace_configs=[trace])
    # No public switch exists for the resend of idempotent requests (see the module
    # docstring); the attempt count below keeps classification safe if this ever stops working.
    if hasattr(session, "_retry_connection"):
        session._retry_connection = False
    return session


class _Resent(Exception):
    """A request made more than one connection attempt: its first may have been delivered."""


@dataclass(frozen=True)
class Workload:
    clients: int = 10
    keys: int = 8
    rate: float = 100.0
    """Total offered operations per second over all clients (0: as fast as they go)."""
    op_timeout: float = 1.5
    read_ratio: float = 0.5
    write_ratio: float = 0.3
    """The rest are compare-and-sets."""
    txn: bool = False
    """Every op as a ``POST /v1/txn`` (``--workload txn``): a read is a txn get, a write a put
    attached to the run's lease, a cas a compare on the value with a put in its success
    branch; the same register model is checked. Besides, short leases that do expire
    (``raftly.check.leased``): ``lease_ratio`` of the ops go to their keys."""
    lease_ttl: int = 1
    lease_round: float = 2.0
    """Seconds between two short-lease grants (each on new keys)."""
    lease_keys: int = 2
    lease_ratio: float = 0.3

    @property
    def key_names(self) -> list[str]:
        return [f"k{i}" for i in range(self.keys)]


@dataclass
class Outcome:
    type: Status
    value: object = None
    node: str | None = None
    error: str | None = None
    reason: str | None = None
    """Why a fail or info came out so: one of the fixed phrases above (``REFUSED``, ...)."""


@dataclass
class ClientPool:
    """``workload.clients`` workers sharing one aiohttp session and one history."""

    urls: dict[str, str]
    """Node name -> API base URL."""
    history: HistoryWriter
    workload: Workload
    rng: random.Random
    context: ssl.SSLContext | None = None
    """For https nodes: the client TLS context (the cluster's CA)."""
    lease: int = 0
    """The lease the txn workload's puts attach to (granted for longer than the run)."""
    leases: LeaseRounds | None = None
    """The txn workload's short leases (set by ``run``)."""
    _processes: itertools.count[int] = field(default_factory=itertools.count)
    recent: dict[str, list[str]] = field(default_factory=dict)
    """Recently seen values per key: cas expectations are drawn from them, so some succeed."""

    def add_node(self, name: str, url: str) -> None:
        """Send ops to a new member too."""
        self.urls[name] = url

    def remove_node(self, name: str) -> None:
        """Stop sending new ops to a member about to be removed (ops under way finish)."""
        self.urls.pop(name, None)

    def next_process(self) -> int:
        return next(self._processes)

    def session(self) -> aiohttp.ClientSession:
        """A one-attempt session (``open_session``) that reaches these nodes."""
        return open_session(self.context)

    async def run(self, duration: float) -> None:
        """Run every worker for ``duration`` seconds; ops in flight then finish or time out."""
        async with self.session() as session:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + duration
            workers = [asyncio.create_task(self._worker(session, deadline, random.Random(
                self.rng.getrandbits(64)))) for _ in range(self.workload.clients)]
            if self.workload.txn:
                wl = self.workload
                self.leases = LeaseRounds(self.history, wl.lease_ttl, wl.lease_keys,
                                          self.next_process)
                workers.append(asyncio.create_task(self._lease_rounds(
                    session, deadline, self.leases)))
            try:
                await asyncio.gather(*workers)
            finally:
                for w in workers:
                    w.cancel()
                await asyncio.gather(*workers, return_exceptions=True)

    async def _worker(self, session: aiohttp.ClientSession, deadline: float,
                      rng: random.Random) -> None:
        loop = asyncio.get_running_loop()
        wl = self.workload
        process = self.next_process()
        counter = 0
        mean_gap = wl.clients / wl.rate if wl.rate > 0 else 0.0
        while loop.time() < deadline:
            if mean_gap:
                await asyncio.sleep(min(rng.expovariate(1 / mean_gap), 5 * mean_gap))
                if loop.time() >= deadline:
                    break
            key = self._pick_key(rng)
            node = rng.choice(sorted(self.urls))  # the members of the moment
            roll = rng.random()
            f: Function
            value: object
            if roll < wl.read_ratio:
                f, value = "read", None
            else:
                counter += 1
                new = f"v{process}-{counter}"
                if roll < wl.read_ratio + wl.write_ratio or not self.recent.get(key):
                    f, value = "write", new
                else:
                    f, value = "cas", [rng.choice(self.recent[key][-3:]), new]
            outcome = await self.invoke(session, process, f, key, value, node)
            if outcome.type == "info":
                process = self.next_process()

    def _pick_key(self, rng: random.Random) -> str:
        leased = self.leases.live_keys() if self.leases is not None else []
        if leased and rng.random() < self.workload.lease_ratio:
            return rng.choice(leased)
        return rng.choice(self.workload.key_names)

    async def _lease_rounds(self, session: aiohttp.ClientSession, deadline: float,
                            rounds: LeaseRounds) -> None:
        """Grant a short lease every ``lease_round`` s; a grant whose outcome is unknown is
        simply not used (no key ever attaches to it)."""
        loop = asyncio.get_running_loop()
        rng = random.Random(self.rng.getrandbits(64))
        while loop.time() < deadline:
            invoked = now()
            lease = await self._grant(session, rng.choice(sorted(self.urls)))
            if lease is not None:
                rounds.granted(lease, invoked)
            await asyncio.sleep(self.workload.lease_round)

    async def _grant(self, session: aiohttp.ClientSession, node: str) -> int | None:
        """One grant, following 307s to the leader; its id, or None if not known granted."""
        url = f"{self.urls[node]}{LEASES_PATH}"
        body = json.dumps({"ttl": self.workload.lease_ttl}).encode()
        try:
            async with asyncio.timeout(self.workload.op_timeout):
                for _hop in range(3):
                    async with session.post(url, data=body, allow_redirects=False) as resp:
                        if resp.status == 307 and "Location" in resp.headers:
                            url = redirect_url(url, resp.headers["Location"]) or ""
                            if not url:
                                return None
                            continue
                        if resp.status != 200:
                            return None
                        return int(json.loads(await resp.read())["id"])
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError, KeyError,
                TypeError):
            pass
        return None

    def _remember(self, key: str, value: object) -> None:
        if isinstance(value, str):
            seen = self.recent.setdefault(key, [])
            seen.append(value)
            del seen[:-8]

    async def invoke(self, session: aiohttp.ClientSession, process: int, f: Function, key: str,
                     value: object, node: str) -> Outcome:
        """One recorded operation: invoke, one attempt, completion."""
        self.history.record(process, "invoke", f, key, value)
        try:
            async with asyncio.timeout(self.workload.op_timeout):
                outcome = await self._attempt(session, f, key, value, node)
        except TimeoutError:
            outcome = Outcome("fail" if f == "read" else "info", node=node, error="timeout",
                              reason=TIMEOUT)
        except _Resent as exc:
            outcome = Outcome("fail" if f == "read" else "info", node=node, error=str(exc),
                              reason=CONNECTION_LOST)
        except aiohttp.ClientConnectorError as exc:
            # The only connection attempt of this hop failed: the request was not sent. (An
            # earlier hop, if any, answered 307: nothing was proposed there either.)
            refused = isinstance(exc.os_error, ConnectionRefusedError)
            outcome = Outcome("fail", node=node, error=f"connect: {exc.os_error}",
                              reason=REFUSED if refused else CANNOT_CONNECT)
        except (aiohttp.ClientError, OSError) as exc:
            outcome = Outcome("fail" if f == "read" else "info", node=node,
                              error=f"{type(exc).__name__}: {exc}", reason=CONNECTION_LOST)
        result_value = outcome.value if f == "read" else value
        if outcome.type == "ok":
            self._remember(key, result_value if f == "read" else
                           (value[1] if f == "cas" and isinstance(value, list) else value))
        self.history.record(process, outcome.type, f, key, result_value,
                            node=outcome.node, error=outcome.error, reason=outcome.reason)
        return outcome

    async def _attempt(self, session: aiohttp.ClientSession, f: Function, key: str, value: object,
                       node: str) -> Outcome:
        url = f"{self.urls[node]}/v1/kv/{quote(key, safe='')}"
        method = "GET" if f == "read" else "PUT"
        params: dict[str, str] = {}
        data: bytes | None = None
        if self.workload.txn:
            lease = self.leases.lease_of(key) if self.leases is not None else None
            url, method, data = f"{self.urls[node]}{TXN_PATH}", "POST", txn_body(
                f, key, value, self.lease if lease is None else lease)
        elif f == "write":
            assert isinstance(value, str)
            data = value.encode()
        elif f == "cas":
            assert isinstance(value, Sequence) and len(value) == 2
            params["expect"] = str(value[0])
            data = str(value[1]).encode()
        at = node
        for _hop in range(3):
            attempts = SimpleNamespace(connects=0)
            try:
                resp = await session.request(method, url, params=params if at == node else None,
                                             data=data, allow_redirects=False,
                                             trace_request_ctx=attempts)
            except aiohttp.ClientConnectorError as exc:
                if attempts.connects > 1:
                    raise _Resent(f"resent after a lost connection, then: {exc}") from exc
                raise
            async with resp:
                body = await resp.read()
                status = resp.status
                if status == 307 and "Location" in resp.headers:
                    # Not the leader: nothing was proposed; the Location keeps the query string.
                    target = redirect_url(url, resp.headers["Location"])
                    if target is None:  # e.g. from https down to http: never followed
                        return Outcome("fail", node=at, error=f"307 to {resp.headers['Location']}",
                                       reason=BAD_REDIRECT)
                    url = target
                    at = self._name_of(url)
                    continue
                if self.workload.txn:
                    return self._classify_txn(f, status, body, at)
                return self._classify(f, status, body, at)
        # Every hop answered 307: nothing was proposed anywhere.
        return Outcome("fail", node=at, error="too many redirects", reason=REDIRECTS)

    def _name_of(self, url: str) -> str:
        for name, base in self.urls.items():
            if url.startswith(base + "/"):
                return name
        return url

    @staticmethod
    def _classify(f: Function, status: int, body: bytes, node: str) -> Outcome:
        text = body.decode("utf-8", "replace")
        if f == "read":
            if status == 200:
                return Outcome("ok", text, node)
            if status == 404:
                return Outcome("ok", None, node)
            return Outcome("fail", node=node, error=f"{status} {text[:200]}",
                           reason=_status_reason(status, text))
        if status == 200:
            return Outcome("ok", node=node)
        if status == 412 and f == "cas":
            return Outcome("fail", node=node, error="412 precondition failed", reason=CAS_MISS)
        reason = _status_reason(status, text)
        if reason in (NO_LEADER, NOT_APPLIED):  # refused before it was proposed: a sure fail
            return Outcome("fail", node=node, error=f"503 {text[:200]}", reason=reason)
        return Outcome("info", node=node, error=f"{status} {text[:200]}", reason=reason)


    @classmethod
    def _classify_txn(cls, f: Function, status: int, body: bytes, node: str) -> Outcome:
        """A txn's answer: 200 with the branch taken and the get's value; anything else as
        the plain ops' (``_classify``)."""
        if status == 404 and f != "read" and _code(body) == "lease_not_found":
            # The state machine refused the whole txn: nothing of it was applied.
            return Outcome("fail", node=node, error="404 lease not found", reason=LEASE_GONE)
        if status != 200:
            return cls._classify(f, status, body, node)
        try:
            answer = json.loads(body)
            succeeded, results = bool(answer["succeeded"]), answer["results"]
            if f == "read":
                kv = results[0]["kv"]
                return Outcome("ok", None if kv is None else str(kv["value"]), node)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            # Applied or not, nobody can tell from this: unknown for a write, a fail for a read.
            return Outcome("fail" if f == "read" else "info", node=node,
                           error=f"malformed txn answer: {exc}", reason="malformed answer")
        if f == "cas" and not succeeded:
            return Outcome("fail", node=node, error="compare failed", reason=CAS_MISS)
        return Outcome("ok", node=node)


def _code(body: bytes) -> object:
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    return answer.get("code") if isinstance(answer, dict) else None


def txn_body(f: Function, key: str, value: object, lease: int) -> bytes:
    """The ``POST /v1/txn`` body of one op of the txn workload."""
    if f == "read":
        return json.dumps({"success": [{"get": {"key": key}}]}).encode()
    attach = {"lease": lease} if lease else {}
    if f == "write":
        return json.dumps({"success": [{"put": {"key": key, "value": str(value),
                                                **attach}}]}).encode()
    assert isinstance(value, Sequence) and len(value) == 2
    return json.dumps({
        "compare": [{"key": key, "target": "value", "op": "=", "value": str(value[0])}],
        "success": [{"put": {"key": key, "value": str(value[1]), **attach}}]}).encode()


__all__ = ["ClientPool", "Outcome", "Workload", "txn_body"]

"""The key-value HTTP API of one node (aiohttp), on top of ``RaftServer``.

The reference, every route, parameter and status code with examples, is docs/http-api.md; in
short: ``PUT``/``GET``/``DELETE /v1/kv/{key}`` (values are raw bytes; ``?expect=`` or
``?expect_base64=`` makes a PUT a compare-and-set, ``?lease=`` attaches a lease; answers carry
revisions, a GET the key's metadata), ``GET /v1/kv?prefix=&limit=`` (JSON, paged with
``start_after``), ``DELETE /v1/kv?prefix=``, and ``GET /v1/status``; here too the app takes the
routes of the other modules: membership (raftly.kv.members_http), ``POST /v1/txn``
(raftly.kv.txn_http), ``/v1/leases`` (raftly.kv.leases_http, with the leader's countdowns in
raftly.kv.lease_manager) and ``GET /v1/watch`` (raftly.kv.watch_http on raftly.kv.watch_hub).

How this module behaves, in the terms of that reference: every query string is checked against
the route's ``QUERY_PARAMS`` (raftly.kv.query) before the handler runs, so a refused request never
reaches the log. Writes on a follower get ``307`` to the leader before their body is read.
Linearizable reads are served by any node: a follower asks the leader for a read index
(ReadIndex) and answers from its own copy once it has applied that far. Every error leaves as
JSON ``{"error": ..., "leader": name-or-null}`` through one middleware. Exactly-once: a write may
carry the session headers of raftly.kv.protocol; the state machine answers a retried seq with
its first result.

With an ``Authorizer`` (``serve --auth-file``) every request needs a bearer token whose role
covers its route (``required_role``), checked right after the error middleware, before the
handler runs or the body is read: 401 ``{"error", "code": "unauthorized"}`` with
``WWW-Authenticate: Bearer`` for a missing or unknown token (nothing else is told to a stranger,
not even the leader's name), 403 ``code: "forbidden"`` for a role too low. A request that comes
over TLS with a verified certificate of the cluster CA whose name (CN) is a member's, now or
earlier, gets the read role without a token, never more: the nodes' own look-ups (addresses,
removal, lost disk) need no token, and a removed node can still learn it was removed. With
``tls`` the URLs this API hands out (redirects, member addresses in the status) are https.

Resource limits (``Limits``, applied by ``make_runner``): at most ``max_connections`` open
connections, TLS handshakes included (more are closed at once, see raftly.kv.connections, which
also does the TLS under ``handshake_timeout``), an idle keep-alive connection or one whose
request headers never finish is closed after ``idle_timeout``, and a request body that has not
arrived whole within ``body_timeout`` is answered 408 and its connection closed (a slowloris
client holds a connection for a bounded time only).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from raftly.core.errors import NotLeader, ProposalDropped
from raftly.core.types import ConfState
from raftly.kv import connections
from raftly.kv.admission import DEFAULT_MAX_INFLIGHT_WRITES, WriteAdmission
from raftly.kv.backup_http import SnapshotApi
from raftly.kv.cluster_file import ClusterSpec, NodeSpec
from raftly.kv.commands import MAX_INT
from raftly.kv.connections import ConnectionCap, connection_cap
from raftly.kv.http_common import PARAMS as _PARAMS
from raftly.kv.http_common import Reply as _Reply
from raftly.kv.http_common import int_param
from raftly.kv.http_common import params as _params
from raftly.kv.http_common import parse_int as _parse_int
from raftly.kv.http_errors import JsonErrorRunner
from raftly.kv.kv_json import kv_object
from raftly.kv.lease_manager import LeaseManager
from raftly.kv.leases_http import LeasesApi
from raftly.kv.members_http import MembersApi, cluster_view
from raftly.kv.metrics import NodeMetrics, add_metrics_route
from raftly.kv.protocol import (
    ACK_HEADER,
    CLIENT_HEADER,
    KV_PATH,
    LEASES_PATH,
    RETRY_HEADER,
    SEQ_HEADER,
    SNAPSHOT_PATH,
    STALE_SEQ_CODE,
    STATUS_PATH,
    TXN_PATH,
    UI_PATH,
    WATCH_PATH,
    encode_list_item,
)
from raftly.kv.query import QueryError, parse_query
from raftly.kv.records import (
    DUPLICATE_KEY,
    LEASE_EXISTS,
    LEASE_NOT_FOUND,
    TOO_MANY_LEASES,
    TXN_TOO_LARGE,
)
from raftly.kv.state_machine import (
    DEFAULT_HISTORY_BYTES,
    DEFAULT_HISTORY_LIMIT,
    KEY_TOO_LARGE,
    MALFORMED,
    STALE_SEQ,
    Cas,
    CommandError,
    Delete,
    DeleteRange,
    KVStateMachine,
    Op,
    Put,
    Result,
    Session,
    encode,
)
from raftly.kv.txn_http import TxnApi
from raftly.kv.watch_http import WatchApi
from raftly.kv.watch_hub import WatchHub
from raftly.security.auth import Authorizer, Forbidden, Role, Unauthorized
from raftly.security.tls import common_name
from raftly.server.server import Busy, OutcomeUnknown, RaftServer, ServerStopped

logger = logging.getLogger("raftly.kv.http")

RETRY_AFTER = "1"
TOO_MANY_WRITES = "too_many_writes"
"""The ``code`` of a write refused by admission (raftly.kv.admission)."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

QUERY_PARAMS: dict[tuple[str, str], frozenset[str]] = {
    ("GET", KV_PATH): frozenset({"prefix", "limit", "consistency", "start_after", "page",
                                 "format"}),
    ("DELETE", KV_PATH): frozenset({"prefix", "all"}),
    ("GET", KV_PATH + "/{key}"): frozenset({"consistency", "format"}),
    ("PUT", KV_PATH + "/{key}"): frozenset({"expect", "expect_base64", "lease"}),
    ("GET", WATCH_PATH): frozenset({"prefix", "from_revision"}),
}
"""The query parameters each route (method, canonical path) takes; any other route takes none."""

WRITE_ROUTES = frozenset({
    ("PUT", KV_PATH + "/{key}"), ("DELETE", KV_PATH + "/{key}"), ("DELETE", KV_PATH),
    ("POST", TXN_PATH), ("POST", LEASES_PATH), ("POST", LEASES_PATH + "/{id}/keepalive"),
    ("DELETE", LEASES_PATH + "/{id}"),
})
"""The routes a write token may use beyond reads; every other change needs admin."""

ADMIN_READ_ROUTES = frozenset({("GET", SNAPSHOT_PATH)})
"""Reads that need admin: the whole data set at once (raftly.kv.backup_http says why)."""
TOKENLESS_ROUTES = frozenset({("GET", UI_PATH), ("HEAD", UI_PATH)})
"""Read routes served without a token even with an auth file: the cluster page's HTML, the same
static file on every node, holding no data; it asks for a token before it fetches any (see
docs/cluster-page.md)."""

RESULT_ERRORS: dict[str, tuple[int, str | None]] = {
    MALFORMED: (400, None),
    KEY_TOO_LARGE: (413, None),
    STALE_SEQ: (409, STALE_SEQ_CODE),
    LEASE_NOT_FOUND: (404, LEASE_NOT_FOUND),
    LEASE_EXISTS: (409, LEASE_EXISTS),
    TOO_MANY_LEASES: (429, TOO_MANY_LEASES),
    TXN_TOO_LARGE: (413, TXN_TOO_LARGE),
    DUPLICATE_KEY: (400, DUPLICATE_KEY),
}
"""The status (and ``code``) a command's error result is answered with."""


def required_role(method: str, route: str | None) -> Role:
    """The role a request needs: ``route`` is the canonical path of the route it matched, None
    when it matched none (a 404 or 405, which runs no handler: read).

    Reads (GET/HEAD) need read, key writes (PUT/DELETE incl. compare-and-set) write, and any
    other method on a route admin: membership changes and leadership transfer, and whatever
    changing route is added later until it is listed here (the safe default). The reads of
    ``ADMIN_READ_ROUTES`` need admin too.
    """
    if (method, route) in ADMIN_READ_ROUTES:
        return Role.ADMIN
    if route is None or method in (hdrs.METH_GET, hdrs.METH_HEAD):
        return Role.READ
    if (method, route) in WRITE_ROUTES:
        return Role.WRITE
    return Role.ADMIN


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on requests; ``max_key_bytes`` should match the state machine's.

    ``max_connections``, ``idle_timeout``, ``body_timeout`` and ``handshake_timeout`` bound what
    one client can hold: open connections, how long an idle (or never finished) request may keep
    one, how long a request body may take to arrive (then 408), and a TLS handshake.
    """

    max_key_bytes: int = 4096
    max_value_bytes: int = 1 << 20
    max_list_limit: int = 10_000
    default_list_limit: int = 1000
    write_timeout: float = 5.0
    read_timeout: float = 5.0
    max_connections: int = 1024
    idle_timeout: float = 60.0
    body_timeout: float = 10.0
    handshake_timeout: float = 10.0
    max_txn_bytes: int = 4 << 20
    """A transaction's JSON body."""
    max_watches: int = 1000
    watch_max_events: int = 10_000
    watch_max_bytes: int = 16 << 20
    """A watcher whose unsent events (of more than one revision) pass either bound is cancelled
    (a slow watcher)."""
    watch_total_bytes: int = 256 << 20
    """All the watchers' unsent events together: past it, the biggest backlogs are cut off."""
    watch_progress_interval: float = 2.0
    """How often an idle watch stream gets a progress line."""
    watch_history: int = DEFAULT_HISTORY_LIMIT
    """Events kept for watchers (the state machine's ``history_limit``): how far back a watch
    may start."""
    watch_history_bytes: int = DEFAULT_HISTORY_BYTES
    """Bytes of keys and values kept for watchers (the state machine's ``history_bytes``)."""
    max_inflight_writes: int = DEFAULT_MAX_INFLIGHT_WRITES
    """Writes in flight on this node at once; more are answered 503 (raftly.kv.admission)."""


class KVApi:
    """The request handlers of one node; ``app()`` builds the aiohttp application."""

    def __init__(self, server: RaftServer, cluster: ClusterSpec, node: NodeSpec,
                 limits: Limits | None = None, *, auth: Authorizer | None = None,
                 tls: bool = False, metrics: NodeMetrics | None = None) -> None:
        self.server = server
        self.cluster = cluster
        self.node = node
        self.limits = limits or Limits()
        self.auth = auth
        self.tls = tls
        """Whether this node serves HTTPS, and so every member does: URLs handed out are https."""
        self.metrics = metrics
        """What ``GET /metrics`` serves and the request middleware counts into (None: off)."""
        self.admission = WriteAdmission(self.limits.max_inflight_writes)
        self.members = MembersApi(self)
        self.leases = LeaseManager(server)
        self.watches = WatchHub(self.kv, max_watches=self.limits.max_watches,
                                max_events=self.limits.watch_max_events,
                                max_bytes=self.limits.watch_max_bytes,
                                max_total_bytes=self.limits.watch_total_bytes)
        self._node_names = {n.name for n in cluster.nodes}
        """Names whose certificates get the read role (see the module docstring): added, never
        dropped, like the transport's peer names."""
        # Names and API addresses (for redirects) follow the configuration in the log.
        server.on_conf_change.append(self._conf_changed)

    def _conf_changed(self, conf: ConfState) -> None:
        self.cluster = cluster_view(self.cluster, conf)
        self._node_names.update(n.name for n in self.cluster.nodes)
        own = self.cluster.by_id(self.server.id)
        if own is not None:
            self.node = own

    @property
    def kv(self) -> KVStateMachine:
        sm = self.server.state_machine
        assert isinstance(sm, KVStateMachine)
        return sm

    def app(self) -> web.Application:
        # One middleware does the request checks and the bookkeeping (``_middleware``): each
        # middleware costs every request two more coroutine frames.
        middlewares: list[Middleware] = [self._middleware]
        app = web.Application(middlewares=middlewares)
        app.router.add_get(STATUS_PATH, self.status)
        app.router.add_get(KV_PATH, self.list)
        app.router.add_get(KV_PATH + "/{key:.+}", self.get)
        app.router.add_put(KV_PATH + "/{key:.+}", self.put)
        app.router.add_delete(KV_PATH + "/{key:.+}", self.delete)
        app.router.add_delete(KV_PATH, self.delete_prefix)
        self.members.add_routes(app)
        TxnApi(self).add_routes(app)
        LeasesApi(self, self.leases).add_routes(app)
        WatchApi(self, self.watches).add_routes(app)
        SnapshotApi(self).add_routes(app)
        add_metrics_route(app, self.metrics)
        return app

    def start(self) -> None:
        """Start the background work: the lease countdowns (which act on the leader only)."""
        self.leases.start()

    async def close(self) -> None:
        """End the watch streams and stop the lease countdowns."""
        self.watches.close()
        await self.leases.close()

    # -- helpers --------------------------------------------------------------------------------

    def _name(self, node_id: int | None) -> str | None:
        if node_id is None:
            return None
        spec = self.cluster.by_id(node_id)
        return spec.name if spec is not None else str(node_id)

    def url_of(self, spec: NodeSpec) -> str:
        """The base URL of a member's API, in this node's scheme."""
        return spec.api.base_url(self.tls)

    def _leader_spec(self, leader: int | None) -> NodeSpec | None:
        if leader is None or leader == self.server.id:
            return None
        return self.cluster.by_id(leader)

    def _json(self, status: int, body: object, headers: dict[str, str] | None = None
              ) -> web.Response:
        # The newline ends the answer as a line, so a shell prompt after `curl` starts afresh.
        return web.Response(status=status, text=json.dumps(body) + "\n", headers=headers,
                            content_type="application/json")

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None,
               **extra: object) -> web.Response:
        body: dict[str, object] = {"error": message, "leader": self._name(self.server.leader)}
        body.update(extra)
        return self._json(status, body, headers)

    def _too_many_writes(self) -> web.Response:
        return self._error(503, "too many writes in flight on this node; not applied, safe to "
                                "retry", {"Retry-After": RETRY_AFTER}, code=TOO_MANY_WRITES)

    def _not_leader(self, request: web.Request, leader: int | None) -> web.Response:
        spec = self._leader_spec(leader)
        if spec is None:
            return self._error(503, "no leader known; retry shortly",
                               {"Retry-After": RETRY_AFTER})
        # raw_path keeps the percent-encoding and the query string exactly as the client sent.
        location = self.url_of(spec) + request.raw_path
        return self._error(307, f"not the leader; the leader is {spec.name}",
                           {"Location": location}, leader=spec.name)

    def _key(self, request: web.Request) -> str:
        key = request.match_info["key"]
        try:
            size = len(key.encode("utf-8"))
        except UnicodeEncodeError:
            raise _Reply(400, "key is not valid UTF-8") from None
        if size > self.limits.max_key_bytes:
            raise _Reply(413, f"key longer than {self.limits.max_key_bytes} bytes")
        return key

    def _session(self, request: web.Request) -> Session | None:
        client = request.headers.get(CLIENT_HEADER)
        seq = request.headers.get(SEQ_HEADER)
        ack = request.headers.get(ACK_HEADER)
        if client is None and seq is None and ack is None:
            return None
        if client is None or seq is None:
            raise _Reply(400, f"{CLIENT_HEADER} and {SEQ_HEADER} go together")
        retry = request.headers.get(RETRY_HEADER, "0")
        if retry not in ("0", "1"):
            raise _Reply(400, f"{RETRY_HEADER} must be 0 or 1")
        try:
            return Session(client, _parse_int(seq), _parse_int(ack) if ack is not None else 0,
                           retry == "1")
        except (ValueError, CommandError) as exc:
            raise _Reply(400, f"bad session headers: {exc}") from None

    async def read_body(self, request: web.Request, limit: int, what: str = "value") -> bytes:
        """The request body: 413 beyond ``limit`` bytes, 408 (and the connection closed) if it
        has not arrived whole within ``Limits.body_timeout``."""
        coding = request.headers.get(hdrs.TRANSFER_ENCODING)
        if coding is not None and coding.rsplit(",", 1)[-1].strip().lower() != "chunked":
            # aiohttp reads such a body as empty (the bytes become the "next request"); RFC 9112
            # says the length cannot be known, so refuse rather than store an empty value.
            raise _Reply(400, f"unsupported Transfer-Encoding {coding!r}")
        if request.content_length is not None and request.content_length > limit:
            raise _Reply(413, f"{what} larger than {limit} bytes")
        # Read in chunks so an oversized body without Content-Length is cut off early rather
        # than buffered whole.
        chunks: list[bytes] = []
        size = 0
        timeout = self.limits.body_timeout
        # A body already here whole (a small PUT comes in the packet of its headers) cannot be
        # slow: it is read without arming a timer, which costs every request otherwise.
        complete = request.content.is_eof()
        try:
            async with contextlib.nullcontext() if complete else asyncio.timeout(timeout):
                while True:
                    try:
                        chunk = await request.content.readany()
                    except ConnectionResetError:
                        # The client went away mid-body: nothing to store, nobody to answer, and
                        # no traceback to log (any client can do it).
                        raise _Reply(400, "connection lost inside the request body") from None
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > limit:
                        raise _Reply(413, f"{what} larger than {limit} bytes")
                    chunks.append(chunk)
        except TimeoutError:
            reply = _Reply(408, f"the request body did not arrive within {timeout:g}s")
            reply.close = True
            raise reply from None
        return b"".join(chunks)

    def _consistency_stale(self, request: web.Request) -> bool:
        consistency = _params(request).get("consistency", "linearizable")
        if consistency not in ("linearizable", "stale"):
            raise _Reply(400, "consistency must be 'linearizable' or 'stale'",
                         parameter="consistency")
        return consistency == "stale"

    def _expect(self, request: web.Request) -> bytes | None:
        """The value a PUT compares against (a compare-and-set), or None for a plain write."""
        params = _params(request)
        text, b64 = params.get("expect"), params.get("expect_base64")
        if text is not None and b64 is not None:
            raise _Reply(400, "give expect or expect_base64, not both", parameter="expect_base64")
        if text is not None:
            if not text:
                # Most often an unset shell variable; comparing against "" would be a surprise.
                raise _Reply(400, "query parameter 'expect' is empty; to expect the empty "
                                  "value, send expect_base64= (empty)", parameter="expect")
            return text.encode("utf-8")
        if b64 is not None:
            try:
                return base64.b64decode(b64, validate=True)
            except binascii.Error:
                raise _Reply(400, "query parameter 'expect_base64' is not valid base64 "
                                  "(percent-encode '+' as %2B)", parameter="expect_base64"
                             ) from None
        return None

    async def _propose(self, request: web.Request, op: Op, session: Session | None
                       ) -> Result | web.Response:
        if not self.admission.enter():
            return self._too_many_writes()
        try:
            result = await self.server.propose(encode(op, session),
                                               timeout=self.limits.write_timeout)
        except NotLeader as exc:
            return self._not_leader(request, exc.leader)
        except (Busy, ProposalDropped) as exc:
            return self._error(503, f"{exc}; not applied, safe to retry",
                               {"Retry-After": RETRY_AFTER})
        except OutcomeUnknown as exc:
            return self._error(504, f"outcome unknown: {exc}")
        except ServerStopped as exc:
            # Raised for a proposal still open when the node stops: it may yet commit elsewhere.
            return self._error(504, f"outcome unknown: {exc}")
        except CommandError as exc:
            return self._refused(exc.code, str(exc))
        finally:
            self.admission.leave()
        assert isinstance(result, Result)
        if result.error is not None:
            return self._refused(result.error, result.message)
        return result

    def _refused(self, error: str, message: str) -> web.Response:
        """The answer to a command refused with ``error`` (see ``RESULT_ERRORS``)."""
        status, code = RESULT_ERRORS.get(error, (400, error))
        if code is None:
            return self._error(status, message)
        return self._error(status, message, code=code)

    async def write(self, request: web.Request, op: Op) -> Result | web.Response:
        """A write without a body: its session headers checked, then ``307`` on a follower, else
        ``op`` proposed (``propose``)."""
        session = self._session(request)
        if not self.server.is_leader:
            return self._not_leader(request, self.server.leader)
        return await self._propose(request, op, session)

    async def propose(self, request: web.Request, op: Op) -> Result | web.Response:
        """Propose ``op`` with the request's session headers (exactly-once); the ``Result``, or
        the error answer. For the route modules: the leader check comes first, in each."""
        return await self._propose(request, op, self._session(request))

    async def json_body(self, request: web.Request, limit: int) -> dict[str, object]:
        """The request body as a JSON object (400 otherwise; 413 beyond ``limit`` bytes)."""
        raw = await self.read_body(request, limit, "body")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):  # nesting past the stack
            raise _Reply(400, "body is not valid JSON") from None
        if not isinstance(body, dict):
            raise _Reply(400, "body must be a JSON object")
        return body

    async def _linearizable(self, request: web.Request) -> web.Response | None:
        """Wait until a linearizable read may be served here, or return the error response."""
        try:
            await self.server.wait_read_index(timeout=self.limits.read_timeout)
        except NotLeader:
            return self._error(503, "no leader known; retry shortly",
                               {"Retry-After": RETRY_AFTER})
        except (OutcomeUnknown, ServerStopped) as exc:
            # A read has no effect, so a read that timed out is simply safe to retry.
            return self._error(503, f"read not confirmed: {exc}", {"Retry-After": RETRY_AFTER})
        return None

    async def _key_read_barrier(self, request: web.Request) -> web.Response | None:
        """What a linearizable GET of one key waits for before answering from local state.

        ReadIndex (``_linearizable``); a separate step so that a subclass can change the read
        path of single-key GETs alone, leaving lists and writes as they are.
        """
        return await self._linearizable(request)

    # -- handlers -------------------------------------------------------------------------------

    async def put(self, request: web.Request) -> web.Response:
        key = self._key(request)
        session = self._session(request)
        expect = self._expect(request)
        lease = int_param(request, "lease", 1, MAX_INT, 0)
        assert lease is not None
        if expect is not None and lease:
            # A compare-and-set keeps the key's lease; a txn can compare and attach at once.
            raise _Reply(400, "lease cannot go with expect (use POST /v1/txn)",
                         parameter="lease")
        if not self.server.is_leader:
            # Answer before reading the body: the client sends it again to the leader anyway.
            return self._not_leader(request, self.server.leader)
        if self.admission.full:
            # Refused before its body is read: admission exists to spare the leader that work.
            self.admission.refuse()
            return self._too_many_writes()
        value = await self.read_body(request, self.limits.max_value_bytes)
        op: Op = Put(key, value, lease) if expect is None else Cas(key, expect, value)
        result = await self._propose(request, op, session)
        if isinstance(result, web.Response):
            return result
        if isinstance(op, Cas):
            if not result.ok:
                return self._error(412, "current value does not match expect (or no such key)",
                                   index=result.index, revision=result.revision)
            return self._json(200, {"index": result.index, "revision": result.revision,
                                    "swapped": True})
        return self._json(200, {"index": result.index, "revision": result.revision})

    async def delete(self, request: web.Request) -> web.Response:
        result = await self.write(request, Delete(self._key(request)))
        if isinstance(result, web.Response):
            return result
        return self._json(200, {"index": result.index, "revision": result.revision,
                                "deleted": result.ok})

    async def delete_prefix(self, request: web.Request) -> web.Response:
        params = _params(request)
        prefix = params.get("prefix", "")
        every = params.get("all")
        if every not in (None, "true"):
            raise _Reply(400, "all must be 'true'", parameter="all")
        if every is not None and prefix:
            raise _Reply(400, "give a prefix or all=true, not both", parameter="all")
        if every is None and not prefix:
            # An empty prefix is every key: say so explicitly, never by a missing variable.
            raise _Reply(400, "prefix is required and must not be empty (all=true deletes "
                              "every key)", parameter="prefix")
        if len(prefix.encode("utf-8", "surrogatepass")) > self.limits.max_key_bytes:
            raise _Reply(413, f"prefix longer than {self.limits.max_key_bytes} bytes")
        result = await self.write(request, DeleteRange(prefix))
        if isinstance(result, web.Response):
            return result
        return self._json(200, {"index": result.index, "revision": result.revision,
                                "deleted": result.count})

    async def get(self, request: web.Request) -> web.Response:
        key = self._key(request)
        as_json = self._format_json(request)
        if not self._consistency_stale(request):
            failed = await self._key_read_barrier(request)
            if failed is not None:
                return failed
        # Both read at once (no await between): the revision is that of the state shown.
        kv, revision = self.kv.get_entry(key), self.kv.revision
        if kv is None:
            return self._error(404, "key not found", revision=revision)
        if as_json:
            return self._json(200, {**kv_object(kv), "revision": revision})
        return web.Response(body=kv.value, content_type="application/octet-stream", headers={
            "X-Raftly-Revision": str(revision),
            "X-Raftly-Mod-Revision": str(kv.mod_revision),
            "X-Raftly-Create-Revision": str(kv.create_revision),
            "X-Raftly-Version": str(kv.version),
            "X-Raftly-Lease": str(kv.lease),
        })

    def _format_json(self, request: web.Request) -> bool:
        fmt = _params(request).get("format")
        if fmt not in (None, "json"):
            raise _Reply(400, "format must be 'json'", parameter="format")
        return fmt is not None

    async def list(self, request: web.Request) -> web.Response:
        params = _params(request)
        prefix = params.get("prefix", "")
        default = min(self.limits.default_list_limit, self.limits.max_list_limit)
        limit = int_param(request, "limit", 1, self.limits.max_list_limit, default)
        start_after = params.get("start_after")
        if params.get("page") not in (None, "1"):
            raise _Reply(400, "page must be 1", parameter="page")
        # Any of these asks for the paged object; without them, the list of before.
        paged = self._format_json(request) or "page" in params or start_after is not None
        if not self._consistency_stale(request):
            failed = await self._linearizable(request)
            if failed is not None:
                return failed
        kvs, more = self.kv.range(prefix, start_after=start_after or "", limit=limit)
        if paged:
            return self._json(200, {"kvs": [kv_object(kv) for kv in kvs], "more": more,
                                    "revision": self.kv.revision})
        return self._json(200, [encode_list_item(kv.key, kv.value) for kv in kvs])

    async def status(self, request: web.Request) -> web.Response:
        return self._json(200, self.status_json())

    def status_json(self) -> dict[str, object]:
        """The ``GET /v1/status`` answer (the cluster page shows it too, raftly.kv.ui_http)."""
        st = self.server.status()
        leader = self.cluster.by_id(st.leader) if st.leader is not None else None
        members: list[dict[str, object]] = []
        learners: list[dict[str, object]] = []
        for ids, into in ((st.voters, members), (st.learners, learners)):
            for node_id in ids:
                spec = self.cluster.by_id(node_id)
                into.append({"id": self._name(node_id), "raft_id": node_id,
                             "api": self.url_of(spec) if spec is not None else None})
        return {
            # Tools compare it with the cluster they mean before reporting on this node.
            "cluster_id": self.cluster.cluster_id,
            "id": self.node.name,
            "raft_id": st.id,
            "role": st.role,
            "term": st.term,
            "leader": self._name(st.leader),
            "leader_api": self.url_of(leader) if leader is not None else None,
            "commit_index": st.commit_index,
            "applied_index": st.applied_index,
            "last_index": st.last_index,
            # What the log holds (first_index..last_index), what the newest snapshot covers,
            # and the log's size on disk: an operator sees compaction at work here.
            "first_index": st.first_index,
            "snapshot_index": st.snapshot_index,
            "log_bytes": st.log_bytes,
            "members": members,
            "learners": learners,
            # The driver's counters (fsyncs, entries_persisted, readies): `raftly bench` reads
            # them to show how many entries one fsync carries.
            "stats": dict(self.server.stats),
            # Writes in flight, the limit, and writes refused past it (raftly.kv.admission).
            "admission": self.admission.as_json(),
        }

    # -- middlewares ----------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """What every request goes through, outermost first: the metrics count and time the
        answer as it leaves (refusals and errors included), every error leaves as JSON (an
        unexpected exception is a logged 500, never a crash), the token is checked against the
        route (``_auth_refusal``), and the query string against what the route takes, before
        the handler does anything. The token check comes before the query check, so a stranger
        learns nothing from a 400."""
        began = time.perf_counter()
        try:
            refusal = self._auth_refusal(request) if self.auth is not None else None
            if refusal is not None:
                response: web.StreamResponse = refusal
            else:
                if request.match_info.http_exception is None:  # 404 and 405 say so themselves
                    request[_PARAMS] = _parse_params(request)
                response = await handler(request)
        except _Reply as reply:
            response = self._error(reply.status, str(reply), reply.headers, **reply.extra)
            if reply.close:
                # Answer, then drop the connection rather than wait (aiohttp would linger to
                # drain the rest of the body) for a client that sends too slowly.
                response.force_close()
                await response.prepare(request)
                await response.write_eof()
                if request.protocol is not None:
                    request.protocol.force_close()
        except web.HTTPException as exc:
            headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow",)}
            response = self._error(exc.status, exc.reason, headers)
        except ServerStopped as exc:
            response = self._error(503, str(exc), {"Retry-After": RETRY_AFTER})
        except Exception:
            logger.exception("error handling %s %s", request.method, request.path)
            response = self._error(500, "internal error (logged on the server)")
        if self.metrics is not None:
            self.metrics.count_request(request, response.status, time.perf_counter() - began)
        return response

    def _auth_refusal(self, request: web.Request) -> web.Response | None:
        """The 401 or 403 for a request whose token does not cover its route (see
        ``required_role``), or None to go on."""
        assert self.auth is not None
        match = request.match_info
        resource = match.route.resource if match.http_exception is None else None
        route = resource.canonical if resource is not None else None
        needed = required_role(request.method, route)
        if needed is Role.READ and ((request.method, route) in TOKENLESS_ROUTES
                                    or self._from_a_node(request)):
            return None
        try:
            self.auth.check(request.headers.get(hdrs.AUTHORIZATION), needed)
        except Unauthorized as exc:
            # No leader name: a stranger is told nothing about the cluster.
            return self._json(401, {"error": str(exc), "code": "unauthorized"},
                              {hdrs.WWW_AUTHENTICATE: "Bearer"})
        except Forbidden as exc:
            return self._error(403, str(exc), code="forbidden")
        return None

    def _from_a_node(self, request: web.Request) -> bool:
        """Whether the request came with a verified certificate naming a member (no token)."""
        if not self.tls or hdrs.AUTHORIZATION in request.headers:
            return False  # a token, when sent, is what is checked
        transport = request.transport
        # Only the TLS layer verified it against the cluster CA (peercert is empty otherwise).
        name = common_name(transport.get_extra_info("peercert")) if transport else None
        return name is not None and name in self._node_names


def _parse_params(request: web.Request) -> dict[str, str]:
    """The request's query parameters, checked against what its route takes (else a 400)."""
    resource = request.match_info.route.resource
    method = "GET" if request.method == "HEAD" else request.method
    allowed = QUERY_PARAMS.get((method, resource.canonical if resource else ""), frozenset())
    # From raw_path: the escapes exactly as sent (the parsed URL would repair a malformed one).
    _, _, query_string = request.raw_path.partition("?")
    try:
        return parse_query(query_string, allowed)
    except QueryError as exc:
        raise _Reply(400, str(exc), parameter=exc.parameter) from None


def make_runner(app: web.Application, limits: Limits | None = None,
                tls: ssl.SSLContext | None = None) -> web.AppRunner:
    """An AppRunner whose request-line limit admits the longest key (percent-encoded, 3x), which
    closes idle connections after ``idle_timeout`` and keeps at most ``max_connections`` open
    (fewer when the open file limit cannot hold that many: logged, see ``connection_cap``).

    With ``tls`` the runner's connections speak HTTPS: its site must listen without an SSL
    context of its own (the handshake is done per connection, counted and under
    ``handshake_timeout``, see raftly.kv.connections). Malformed HTTP is answered with a JSON
    error (``http_errors``).
    """
    limits = limits or Limits()
    max_line = max(8190, 3 * limits.max_key_bytes + 64 * 1024)
    # A cap above the file descriptor limit never engages: accept() fails with EMFILE first.
    fd_limit = connections.open_file_limit()
    effective = connection_cap(limits.max_connections, fd_limit)
    if effective < limits.max_connections:
        logger.warning("API: at most %d open connections, not %d: the open file limit is %s "
                       "(raise it with ulimit -n)", effective, limits.max_connections, fd_limit)
    else:
        logger.info("API: at most %d open connections", effective)
    connections.limit_accept_errors()
    cap = ConnectionCap(effective, limits.handshake_timeout)
    # shutdown_timeout: the Raft server closes first and answers its waiters, so a long grace
    # period for open requests would only delay the exit.
    return _CappedRunner(cap, tls, app, access_log=None,
                         max_line_size=max_line, max_field_size=16 * 1024, shutdown_timeout=2.0,
                         keepalive_timeout=limits.idle_timeout,
                         # How long the rest of a body no handler read (a redirected PUT) is
                         # drained before the connection closes: no longer than any body.
                         lingering_time=limits.body_timeout)


class _CappedRunner(JsonErrorRunner):
    """An AppRunner whose sites accept connections through a ``ConnectionCap`` (and its TLS)."""

    def __init__(self, cap: ConnectionCap, tls: ssl.SSLContext | None, app: web.Application,
                 **kwargs: object) -> None:
        super().__init__(app, **kwargs)  # type: ignore[arg-type]
        self.cap = cap
        self.tls = tls

    @property
    def server(self) -> web.Server | None:
        # What a site hands the event loop as its protocol factory.
        server = super().server
        if server is None:
            return None
        return self.cap.factory(server, self.tls)  # type: ignore[return-value]


__all__ = ["KVApi", "Limits", "make_runner", "required_role"]

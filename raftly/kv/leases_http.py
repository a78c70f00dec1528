"""The lease routes of the HTTP API: grant, keep alive, revoke, list and read leases.

``POST /v1/leases`` grants (``{"ttl": S, "id"?: N}``), ``POST /v1/leases/{id}/keepalive``
restarts a lease's countdown, ``DELETE /v1/leases/{id}`` revokes it (deleting its keys in one
revision); ``GET /v1/leases`` and ``GET /v1/leases/{id}`` read them. Grants, revokes and
keepalives go to the leader (a follower answers ``307`` before reading a body): the countdowns
live there (raftly.kv.lease_manager). A keepalive is answered only after a ReadIndex confirms
this node still leads, so a deposed leader never renews a lease the new leader counts down.
Grants and revokes are log entries and take the session headers (exactly-once). The reference
is docs/http-api.md.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from aiohttp import web

from raftly.kv.commands import MAX_INT, LeaseGrant, LeaseRevoke
from raftly.kv.commands import int_in as _int_in
from raftly.kv.http_common import Reply
from raftly.kv.lease_manager import LeaseExpired, LeaseManager
from raftly.kv.leases import LeaseInfo
from raftly.kv.protocol import LEASES_PATH
from raftly.kv.records import LEASE_NOT_FOUND

if TYPE_CHECKING:
    from raftly.kv.http import KVApi

MIN_TTL = 1
MAX_TTL = 24 * 3600
"""Granted TTLs, in seconds: from a second to a day."""
MAX_BODY = 4096


class LeasesApi:
    """The lease handlers of one node's API."""

    def __init__(self, api: KVApi, manager: LeaseManager) -> None:
        self.api = api
        self.manager = manager

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(LEASES_PATH, self.grant)
        app.router.add_get(LEASES_PATH, self.list)
        app.router.add_get(LEASES_PATH + r"/{id}", self.get)
        app.router.add_delete(LEASES_PATH + r"/{id}", self.revoke)
        app.router.add_post(LEASES_PATH + r"/{id}/keepalive", self.keepalive)

    def _lease_id(self, request: web.Request) -> int:
        text = request.match_info["id"]
        # The length first: int() of thousands of digits is refused (or slow).
        if (not text.isascii() or not text.isdigit() or len(text) > len(str(MAX_INT))
                or not _int_in(int(text), 1, MAX_INT)):
            raise Reply(400, f"a lease id is an integer from 1 to {MAX_INT}")
        return int(text)

    def _leader_check(self, request: web.Request) -> web.Response | None:
        api = self.api
        return None if api.server.is_leader else api._not_leader(request, api.server.leader)

    def _infos(self, leases: list[LeaseInfo]) -> list[dict[str, object]]:
        remaining = self.manager.remaining()
        return [{"id": lease.id, "ttl": lease.ttl,
                 "remaining": round(remaining[lease.id], 3) if lease.id in remaining else None,
                 "keys": list(lease.keys)} for lease in leases]

    async def grant(self, request: web.Request) -> web.Response:
        self.api._session(request)  # a malformed session is a 400 wherever the request goes
        redirect = self._leader_check(request)
        if redirect is not None:
            return redirect
        body = await self.api.json_body(request, MAX_BODY)
        unknown = sorted(set(body) - {"ttl", "id"})
        if unknown:
            raise Reply(400, f"unknown field {unknown[0]!r} (a grant takes ttl and id)",
                        field=unknown[0])
        ttl, lease_id = body.get("ttl"), body.get("id", 0)
        if not _int_in(ttl, MIN_TTL, MAX_TTL):
            raise Reply(400, f"ttl must be an integer from {MIN_TTL} to {MAX_TTL} seconds",
                        field="ttl")
        if "id" in body and not _int_in(lease_id, 1, MAX_INT):
            raise Reply(400, f"id must be an integer from 1 to {MAX_INT}", field="id")
        assert isinstance(ttl, int) and isinstance(lease_id, int)
        result = await self.api.propose(request, LeaseGrant(ttl, lease_id))
        if isinstance(result, web.Response):
            return result
        # Counted from the answer on (the manager would start it on its next round anyway).
        with contextlib.suppress(LeaseExpired):  # an id re-granted while its old revoke runs
            self.manager.renew(result.lease, result.ttl, asyncio.get_running_loop().time())
        return self.api._json(200, {"id": result.lease, "ttl": result.ttl,
                                    "index": result.index, "revision": result.revision})

    async def revoke(self, request: web.Request) -> web.Response:
        result = await self.api.write(request, LeaseRevoke(self._lease_id(request)))
        if isinstance(result, web.Response):
            return result
        return self.api._json(200, {"index": result.index, "revision": result.revision,
                                    "deleted": result.count})

    async def keepalive(self, request: web.Request) -> web.Response:
        lease_id = self._lease_id(request)
        redirect = self._leader_check(request)
        if redirect is not None:
            return redirect
        # The renewal counts from its arrival, before the check: not earlier than the client
        # sent it, so the lease never ends here before the client's own count says it may.
        since = asyncio.get_running_loop().time()
        lease = await self._read_lease(request, lease_id)
        if isinstance(lease, web.Response):
            return lease
        try:
            remaining = self.manager.renew(lease_id, lease.ttl, since)
        except LeaseExpired:
            # Its revoke may be in the log already: the holder must not think it renewed.
            raise Reply(404, f"lease {lease_id} expired", code=LEASE_NOT_FOUND) from None
        if remaining is None:
            # Leadership moved during the check: the new leader counts this lease afresh.
            return self.api._not_leader(request, self.api.server.leader)
        return self.api._json(200, {"id": lease_id, "ttl": round(remaining)})

    async def list(self, request: web.Request) -> web.Response:
        failed = await self.api._linearizable(request)
        if failed is not None:
            return failed
        return self.api._json(200, self._infos(self.api.kv.leases()))

    async def get(self, request: web.Request) -> web.Response:
        lease = await self._read_lease(request, self._lease_id(request))
        if isinstance(lease, web.Response):
            return lease
        return self.api._json(200, self._infos([lease])[0])

    async def _read_lease(self, request: web.Request, lease_id: int
                          ) -> LeaseInfo | web.Response:
        """The lease as of a ReadIndex (a linearizable read); 404 if it does not exist."""
        failed = await self.api._linearizable(request)
        if failed is not None:
            return failed
        lease = self.api.kv.lease(lease_id)
        if lease is None:
            raise Reply(404, f"lease {lease_id} does not exist", code=LEASE_NOT_FOUND)
        return lease


__all__ = ["MAX_TTL", "MIN_TTL", "LeasesApi"]

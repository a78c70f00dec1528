"""``GET /v1/watch?prefix=P&from_revision=N``: a node's watch stream, newline-delimited JSON.

Served by any node from its own applied state (raftly.kv.watch_hub): one line per changed key
in revision order (``kv_json.event_object``), a ``{"type": "progress", "revision": R}`` line
when the stream starts with nothing to send and then whenever it has been idle for
``Limits.watch_progress_interval`` (it says every change up to R was sent, and shows a dead
connection), and a last ``{"type": "cancelled", "reason", "next_revision"}`` line when the node
ends the watch (slow watcher, a snapshot restore skipped revisions, shutdown). A client resumes
anywhere with ``from_revision`` = the last revision it got + 1, or ``next_revision``. A
``from_revision`` older than the history is ``410`` (``"code": "compacted"``); past the node's
``max_watches``, ``503``. The reference is docs/http-api.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING

from aiohttp import web

from raftly.kv.commands import MAX_INT
from raftly.kv.history import Compacted
from raftly.kv.http_common import int_param, params
from raftly.kv.kv_json import event_object
from raftly.kv.protocol import WATCH_PATH
from raftly.kv.watch_hub import Cancelled, TooManyWatches, Watcher, WatchHub

if TYPE_CHECKING:
    from raftly.kv.http import KVApi

logger = logging.getLogger("raftly.kv.watch_http")

NDJSON = "application/x-ndjson"
COMPACTED_CODE = "compacted"
TOO_MANY_WATCHES_CODE = "too_many_watches"


class WatchApi:
    """The watch handler of one node's API."""

    def __init__(self, api: KVApi, hub: WatchHub) -> None:
        self.api = api
        self.hub = hub

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(WATCH_PATH, self.watch)

    async def watch(self, request: web.Request) -> web.StreamResponse:
        api = self.api
        prefix = params(request).get("prefix", "")
        from_revision = int_param(request, "from_revision", 1, MAX_INT)
        try:
            watcher = self.hub.watch(prefix, from_revision)
        except Compacted as exc:
            return api._error(410, str(exc), code=COMPACTED_CODE,
                              oldest_available=exc.oldest_available, current=exc.current)
        except TooManyWatches as exc:
            return api._error(503, str(exc), {"Retry-After": "1"}, code=TOO_MANY_WATCHES_CODE)
        try:
            response = web.StreamResponse(headers={"Cache-Control": "no-store"})
            response.content_type = NDJSON
            await response.prepare(request)
            await self._stream(response, watcher)
        except (ConnectionError, TimeoutError):
            # The client went away, or stopped reading for longer than a connection may idle:
            # the watch ends here (a live client reconnects from its last revision + 1).
            if request.transport is not None:
                request.transport.abort()
        except Exception:
            # Past the headers no error answer can be sent: log it and break the stream, which
            # the client sees as a lost connection and resumes from.
            logger.exception("watch stream of %s failed", request.remote)
            if request.transport is not None:
                request.transport.abort()
        finally:
            watcher.close()
        return response

    async def _stream(self, response: web.StreamResponse, watcher: Watcher) -> None:
        limits = self.api.limits
        if watcher.idle:
            await self._send(response, [self._progress(watcher)])
        while True:
            item = await watcher.next(limits.watch_progress_interval)
            if item is None:
                if watcher.idle:
                    await self._send(response, [self._progress(watcher)])
            elif isinstance(item, Cancelled):
                await self._send(response, [{"type": "cancelled", "reason": item.reason,
                                             "next_revision": item.next_revision}])
                return
            else:
                await self._send(response, [event_object(e) for e in item])

    @staticmethod
    def _progress(watcher: Watcher) -> dict[str, object]:
        # What THIS watcher was sent up to, never the store's revision: after a restore the
        # store may be ahead of what the watcher got, and a client moving its cursor there
        # would skip the revisions between.
        return {"type": "progress", "revision": watcher.next_revision - 1}

    async def _send(self, response: web.StreamResponse, lines: list[dict[str, object]]) -> None:
        data = "".join(json.dumps(line) + "\n" for line in lines).encode()
        # A client that reads nothing fills the socket and stalls this write: bounded, so its
        # connection is let go (meanwhile its queue ends it as a slow watcher).
        async with asyncio.timeout(self.api.limits.idle_timeout):
            await response.write(data)



__all__ = ["COMPACTED_CODE", "NDJSON", "TOO_MANY_WATCHES_CODE", "WatchApi"]

"""``GET /v1/snapshot``: a consistent image of the whole key-value state, streamed by the leader
for ``raftly snapshot save`` (the backup file format is raftly.kv.backup).

Admin role: the answer holds every key and value of the cluster, and every lease and client
session, whatever prefix a token could otherwise be limited to reading; it is a bulk export of
the data set and costs the leader a capture and a full serialisation, so it is an operator's
action, not a reader's.

Served by the leader only; a follower answers ``307`` to the leader (or ``503`` when none is
known), as the write routes do, and the client follows. Consistency: a read barrier
(ReadIndex, as for a linearizable read) confirms this node still leads and waits until it has
applied everything committed before the request; then, with no await in between, the state
machine's ``capture`` (a cheap copy of its containers) is taken together with the applied index
and the term of the entry there. Everything acknowledged before the request is in the image.

Streaming: a worker thread runs the capture's ``persist`` into a pipe at most ``_DEPTH`` chunks
(of about 1 MiB) ahead of the connection, so a slow client holds the capture but never a second
copy of the state in memory. The metadata leaves in response headers (raftly.kv.backup:
``INDEX_HEADER`` ...) and the body ends with ``STREAM_TRAILER`` (payload size and SHA-256): a
stream cut short or damaged on its way is refused by the client. A failure while streaming
drops the connection, so the body never ends with a trailer. At most ``MAX_STREAMS`` snapshots
stream at once (more get ``503``, retried by the client), so a client that stops reading (a
suspended ``snapshot save``, a peer gone without a reset) is dropped once a chunk has waited
``Limits.idle_timeout`` to be taken: it would otherwise hold a slot, a worker thread and the
capture until TCP gave up on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
import time
from typing import TYPE_CHECKING, Final

from aiohttp import web

from raftly.core.state_machine import SnapshotCapture
from raftly.kv.backup import (
    CLUSTER_ID_HEADER,
    CREATED_HEADER,
    INDEX_HEADER,
    KEYS_HEADER,
    STREAM_CONTENT_TYPE,
    TERM_HEADER,
    quote_cluster_id,
    stream_trailer,
)
from raftly.kv.protocol import SNAPSHOT_PATH

if TYPE_CHECKING:
    from raftly.kv.http import KVApi

logger = logging.getLogger("raftly.kv.backup")

MAX_STREAMS: Final = 2
"""Snapshots streamed at once by one node: each holds a capture while its client reads."""
_DEPTH: Final = 4
"""Chunks the worker may write ahead of the connection."""


class _Abandoned(Exception):
    """The connection is gone: the worker stops persisting."""


class _Stalled(Exception):
    """The client took nothing for ``idle_timeout``: the stream is dropped."""


class _Pipe:
    """Chunks from a worker thread (``write``) to the event loop (``get``), at most ``_DEPTH``
    ahead; counts and hashes what passes. ``close`` makes the worker's next write raise."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._space = threading.Semaphore(_DEPTH)
        self._closed = False
        self.size = 0
        self.sha256 = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self._space.acquire()
        if self._closed:
            self._space.release()  # another write after this one must not block either
            raise _Abandoned
        chunk = bytes(data)
        self.sha256.update(chunk)
        self.size += len(chunk)
        self._loop.call_soon_threadsafe(self._queue.put_nowait, chunk)
        return len(chunk)

    def end(self) -> None:
        """The worker is done (or failed): ``get`` returns None after the last chunk."""
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody reads
            self._loop.call_soon_threadsafe(self._queue.put_nowait, None)

    async def get(self) -> bytes | None:
        chunk = await self._queue.get()
        if chunk is not None:
            self._space.release()
        return chunk

    def close(self) -> None:
        self._closed = True
        self._space.release()


def _persist(capture: SnapshotCapture, pipe: _Pipe) -> None:
    try:
        capture.persist(pipe)
    except _Abandoned:
        pass
    finally:
        pipe.end()


class SnapshotApi:
    """The ``GET /v1/snapshot`` handler of one node's API."""

    def __init__(self, api: KVApi) -> None:
        self.api = api
        self._streams = 0

    def add_routes(self, app: web.Application) -> None:
        # No HEAD: it would capture and serialise the whole state to send nothing.
        app.router.add_get(SNAPSHOT_PATH, self.snapshot, allow_head=False)

    async def snapshot(self, request: web.Request) -> web.StreamResponse:
        api = self.api
        server = api.server
        if not server.is_leader:
            return api._not_leader(request, server.leader)
        if self._streams >= MAX_STREAMS:
            return api._error(503, f"{self._streams} snapshots are being streamed already; "
                                   "retry shortly", {"Retry-After": "1"})
        self._streams += 1
        try:
            return await self._stream(request)
        finally:
            self._streams -= 1

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        api = self.api
        server = api.server
        failed = await api._linearizable(request)
        if failed is not None:
            return failed
        # From here to the capture, no await: the image is the state at exactly this index.
        index = server.status().applied_index
        term = server.node.log.term_at(index)
        if term is None:  # the log moved past it (a leader's snapshot installed): ask again
            return api._error(503, "the applied entry is no longer in the log; retry",
                              {"Retry-After": "1"})
        capture = api.kv.capture()
        keys = len(capture.data)
        created_ms = time.time_ns() // 1_000_000
        response = web.StreamResponse(headers={
            CLUSTER_ID_HEADER: quote_cluster_id(api.cluster.cluster_id), INDEX_HEADER: str(index),
            TERM_HEADER: str(term), KEYS_HEADER: str(keys), CREATED_HEADER: str(created_ms)})
        response.content_type = STREAM_CONTENT_TYPE
        loop = asyncio.get_running_loop()
        pipe = _Pipe(loop)
        began = loop.time()
        try:
            await response.prepare(request)
        except ConnectionError:
            logger.info("snapshot %d/%d: the client went away before it began", term, index)
            return response
        worker = loop.run_in_executor(None, _persist, capture, pipe)
        try:
            while (chunk := await pipe.get()) is not None:
                await self._write(response, chunk)
            await worker  # raises what persist raised
            await self._write(response, stream_trailer(pipe.size, pipe.sha256.digest()))
            await response.write_eof()
        except ConnectionError:
            logger.info("snapshot %d/%d: the client went away after %d bytes", term, index,
                        pipe.size)
        except _Stalled:
            logger.warning("snapshot %d/%d: the client read nothing for %gs after %d bytes; "
                           "dropped", term, index, api.limits.idle_timeout, pipe.size)
            if request.transport is not None:
                request.transport.abort()
        except Exception:
            # The status line is out: all that is left is to drop the connection, so that the
            # client never sees a trailer, and say why here.
            logger.exception("snapshot %d/%d failed after %d bytes", term, index, pipe.size)
            if request.transport is not None:
                request.transport.abort()
        else:
            logger.info("snapshot %d/%d (%d keys, %d bytes) sent in %.3fs", term, index, keys,
                        pipe.size, loop.time() - began)
        finally:
            pipe.close()  # a worker still writing stops at its next chunk
        return response

    async def _write(self, response: web.StreamResponse, data: bytes) -> None:
        try:
            async with asyncio.timeout(self.api.limits.idle_timeout):
                await response.write(data)
        except TimeoutError:
            raise _Stalled from None


__all__ = ["MAX_STREAMS", "SnapshotApi"]

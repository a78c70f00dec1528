"""``TcpTransport``: Raft messages between processes over TCP (asyncio streams).

Shape of the connections: every node opens one outbound connection to each peer it sends to and
only writes on it; what a peer sends us arrives on the peer's own outbound connection, which our
server accepted. So each ordered pair of nodes has one connection, and replies never wait behind
requests on a shared socket.

Outbound, per peer: a bounded queue of encoded frames and one writer task. ``send`` encodes and
appends (or drops and counts, when the queue is full) and wakes the writer; the writer connects
lazily, sends the handshake, then repeatedly takes everything queued and writes it with a single
``write()`` of the concatenated frames followed by ``drain()``. Batching like this is several
times faster than one write per message, and it never waits to fill a batch. A peer that cannot be
reached is retried with exponential backoff (capped at ``_BACKOFF_MAX``, with jitter), and what was
queued for it is dropped: by the time it is back those messages are stale and Raft resends.

Inbound: an asyncio server. A connection must send a valid handshake within the handshake timeout,
naming our cluster id and protocol version, or it is refused with a logged reason. Then frames are
read in large chunks, split, decoded, checked (``src`` must be the node that shook hands, ``dst``
must be us) and handed to ``on_message``. A malformed or oversized frame closes only that
connection, with one log line.

All socket setup goes through ``_open_connection`` and ``_start_server`` so that TLS (a later
issue) is a change in one place; ``server_ssl`` and ``client_ssl`` are already passed through.

Every task is started by ``_spawn``: an unexpected exception is logged with its traceback (and a
dead peer writer is replaced on the next send), and ``close()`` cancels and awaits all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections import deque
from collections.abc import Coroutine, Mapping
from typing import Any

from raftly.core.messages import Message
from raftly.transport.base import MessageHandler
from raftly.transport.codec import (
    DEFAULT_MAX_FRAME_SIZE,
    HANDSHAKE_MAX_FRAME_SIZE,
    HEADER_SIZE,
    PROTOCOL_VERSION,
    CodecError,
    FrameDecoder,
    decode_handshake,
    decode_handshake_reply,
    decode_message,
    encode_frame,
    encode_handshake,
    encode_handshake_reply,
    frame_length,
    frame_message,
)

__all__ = ["TcpTransport", "read_frame"]

logger = logging.getLogger(__name__)

Address = tuple[str, int]

_BACKOFF_BASE = 0.05
"""Seconds before the first retry of a peer that could not be reached."""
_BACKOFF_MAX = 1.0
"""Retry delays double up to this: a restarted peer is found again within about a second."""
_BATCH_BYTES = 4 << 20
"""At most this much goes into one write(), so a long queue does not become one huge copy."""
_READ_CHUNK = 256 << 10
_STREAM_LIMIT = 1 << 20
_WRITE_TIMEOUT = 10.0
"""A peer that accepts nothing for this long (no TCP progress) is disconnected and redialled."""


class _Peer:
    """Outbound state for one peer: address, bounded queue, connection and writer task."""

    __slots__ = (
        "address",
        "failures",
        "last_problem",
        "node_id",
        "queue",
        "queued_bytes",
        "reader",
        "task",
        "wakeup",
        "writer",
    )

    def __init__(self, node_id: int, address: Address) -> None:
        self.node_id = node_id
        self.address = address
        self.queue: deque[bytes] = deque()
        self.queued_bytes = 0
        self.wakeup = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.failures = 0
        # The last connection problem logged, so that a peer that stays down is logged once at
        # INFO and then only at DEBUG on every retry, instead of flooding the log.
        self.last_problem = ""

    def connected(self) -> bool:
        return (
            self.writer is not None
            and self.reader is not None
            and not self.writer.is_closing()
            and not self.reader.at_eof()  # the peer closed its end; fed even when not reading
        )

    def disconnect(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    def clear(self) -> int:
        n = len(self.queue)
        self.queue.clear()
        self.queued_bytes = 0
        return n


class TcpTransport:
    """Raft messages over TCP with a handshake, bounded per-peer queues and reconnection.

    ``peers`` maps node ids to the addresses their transports listen on (this node's own id, if
    present, is ignored). ``queue_limit`` bounds the messages and ``queue_bytes_limit`` the bytes
    waiting for one peer; beyond either, messages are dropped and counted in ``stats()``.
    """

    def __init__(
        self,
        node_id: int,
        listen: Address,
        peers: Mapping[int, Address],
        *,
        cluster_id: str,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        queue_limit: int = 10_000,
        connect_timeout: float = 1.0,
        queue_bytes_limit: int = 64 << 20,
        handshake_timeout: float = 5.0,
        max_entries: int | None = None,
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
    ) -> None:
        if type(node_id) is not int or node_id < 0:
            raise ValueError(f"node_id must be a non-negative int, got {node_id!r}")
        encode_handshake(cluster_id, node_id)  # validates the cluster id early, with a clear error
        FrameDecoder(max_frame_size)  # validates the limit
        if queue_limit < 1 or queue_bytes_limit < 1:
            raise ValueError("queue limits must be positive")
        self.node_id = node_id
        self.cluster_id = cluster_id
        self._listen = listen
        self._max_frame_size = max_frame_size
        self._queue_limit = queue_limit
        self._queue_bytes_limit = queue_bytes_limit
        self._connect_timeout = connect_timeout
        self._handshake_timeout = handshake_timeout
        self._decode_kwargs: dict[str, int] = {}
        if max_entries is not None:
            self._decode_kwargs["max_entries"] = max_entries
        self._server_ssl = server_ssl
        self._client_ssl = client_ssl
        self._rng = random.Random()  # backoff jitter only; nothing here needs to be replayable

        self._on_message: MessageHandler | None = None
        self._server: asyncio.Server | None = None
        self._listen_address: Address | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._inbound: dict[asyncio.StreamWriter, int | None] = {}  # writer -> shaken-hands id
        self._closing = False
        self._unknown_logged: set[int] = set()

        self._sent = 0
        self._dropped = 0
        self._received = 0
        self._decode_errors = 0
        self._refused = 0
        self._connects = 0
        self._connect_failures = 0

        self._peers: dict[int, _Peer] = {}
        self.set_peers(peers)

    # -- the interface ----------------------------------------------------------------------------

    @property
    def listen_address(self) -> Address:
        """The address actually listened on (the real port when 0 was asked); after start()."""
        if self._listen_address is None:
            raise RuntimeError("the transport is not started")
        return self._listen_address

    async def start(self, on_message: MessageHandler) -> None:
        """Listen for peers; ``on_message`` gets every valid message addressed to this node."""
        if self._on_message is not None or self._closing:
            raise RuntimeError("a TcpTransport can be started once")
        self._on_message = on_message
        self._server = await self._start_server(self._listen)
        sockname = self._server.sockets[0].getsockname()
        self._listen_address = (str(sockname[0]), int(sockname[1]))
        logger.info(
            "node %d listening on %s:%d (cluster %r)",
            self.node_id,
            *self._listen_address,
            self.cluster_id,
        )

    def set_peers(self, peers: Mapping[int, Address]) -> None:
        """Replace the peer address book. Changed addresses are redialled; removed peers dropped."""
        wanted = {nid: (str(addr[0]), int(addr[1])) for nid, addr in peers.items()}
        wanted.pop(self.node_id, None)
        for nid in list(self._peers):
            if nid not in wanted:
                peer = self._peers.pop(nid)
                self._dropped += peer.clear()
                peer.disconnect()
                if peer.task is not None:
                    peer.task.cancel()  # still in self._tasks: close() awaits it
        for nid, address in wanted.items():
            known = self._peers.get(nid)
            if known is None:
                self._peers[nid] = _Peer(nid, address)
                self._unknown_logged.discard(nid)
            elif known.address != address:
                logger.info("peer %d moved from %s:%d to %s:%d", nid, *known.address, *address)
                known.address = address
                known.failures = 0
                known.disconnect()  # the writer dials the new address on its next batch

    def send(self, msg: Message) -> None:
        """Queue ``msg`` for its ``dst``; drops (and counts) rather than block or raise."""
        if self._closing or self._on_message is None:
            self._dropped += 1
            return
        peer = self._peers.get(msg.dst)
        if peer is None:
            self._dropped += 1
            if msg.dst not in self._unknown_logged:
                self._unknown_logged.add(msg.dst)
                logger.warning("no address for node %d: dropping messages to it", msg.dst)
            return
        if len(peer.queue) >= self._queue_limit:
            self._dropped += 1
            return
        if msg.src != self.node_id:
            # The receiver would close the connection over it; refuse it here, where it is a bug.
            logger.error("dropping %s with src %d from node %d", type(msg).__name__, msg.src,
                         self.node_id)
            self._dropped += 1
            return
        try:
            frame = frame_message(msg)
        except CodecError as exc:
            logger.error("cannot encode %s for node %d: %s", type(msg).__name__, msg.dst, exc)
            self._dropped += 1
            return
        too_big = len(frame) - 4 > self._max_frame_size  # the receiver would close on it
        if too_big or (peer.queued_bytes + len(frame) > self._queue_bytes_limit and peer.queue):
            if too_big:
                logger.error(
                    "dropping %s of %d bytes for node %d: over max_frame_size %d",
                    type(msg).__name__, len(frame), msg.dst, self._max_frame_size,
                )
            self._dropped += 1
            return
        peer.queue.append(frame)
        peer.queued_bytes += len(frame)
        if peer.task is None:
            name = f"raftly-send-{self.node_id}-{peer.node_id}"
            peer.task = self._spawn(self._run_peer(peer), name)
        peer.wakeup.set()

    async def close(self) -> None:
        """Stop listening, close every connection, cancel and await every task."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for peer in self._peers.values():
            self._dropped += peer.clear()
            peer.disconnect()
        for writer in list(self._inbound):
            writer.close()
        me = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not me]  # close() may be called from a callback
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
            logger.info("node %d transport closed", self.node_id)

    def stats(self) -> dict[str, int]:
        """Counters for metrics: messages sent/dropped/received, errors, open connections."""
        outbound = sum(1 for p in self._peers.values() if p.connected())
        return {
            "sent": self._sent,
            "dropped": self._dropped,
            "received": self._received,
            "decode_errors": self._decode_errors,
            "connections": outbound + len(self._inbound),
            "outbound_connections": outbound,
            "inbound_connections": len(self._inbound),
            "queued": sum(len(p.queue) for p in self._peers.values()),
            "connects": self._connects,
            "connect_failures": self._connect_failures,
            "refused": self._refused,
        }

    # -- socket setup: the one place TLS will change ----------------------------------------------

    async def _open_connection(
        self, address: Address
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host, port = address
        return await asyncio.open_connection(
            host, port, ssl=self._client_ssl, limit=_STREAM_LIMIT
        )

    async def _start_server(self, address: Address) -> asyncio.Server:
        host, port = address
        return await asyncio.start_server(
            self._accept, host, port, ssl=self._server_ssl, limit=_STREAM_LIMIT
        )

    # -- tasks ---------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        logger.error("transport task %s crashed", task.get_name(), exc_info=exc)
        for peer in self._peers.values():
            if peer.task is task:
                # Forget the dead writer so the next send starts a fresh one: a crash must not
                # silently cut this node off from a peer for good.
                peer.task = None
                peer.disconnect()
                self._dropped += peer.clear()

    # -- outbound ------------------------------------------------------------------------------

    def _backoff(self, failures: int) -> float:
        delay: float = min(_BACKOFF_MAX, _BACKOFF_BASE * 2.0 ** min(failures - 1, 16))
        return delay * (0.5 + 0.5 * self._rng.random())  # jitter: peers do not retry in step

    def _problem(self, peer: _Peer, text: str, level: int = logging.INFO) -> None:
        if text != peer.last_problem:
            peer.last_problem = text
            logger.log(level, "node %d -> %d: %s", self.node_id, peer.node_id, text)
        else:
            logger.debug("node %d -> %d: %s (again)", self.node_id, peer.node_id, text)

    async def _run_peer(self, peer: _Peer) -> None:
        """The writer task of one peer: connect when there is work, write batches, reconnect."""
        while True:
            if not peer.queue:
                peer.wakeup.clear()
                await peer.wakeup.wait()
                continue
            if not peer.connected():
                peer.disconnect()
                if not await self._connect(peer):
                    peer.failures += 1
                    self._connect_failures += 1
                    self._dropped += peer.clear()  # stale by the time the peer is back
                    await asyncio.sleep(self._backoff(peer.failures))
                    continue
            writer = peer.writer
            assert writer is not None
            batch: list[bytes] = []
            size = 0
            queue = peer.queue
            while queue and size < _BATCH_BYTES:
                frame = queue.popleft()
                batch.append(frame)
                size += len(frame)
            peer.queued_bytes -= size
            try:
                writer.write(b"".join(batch))
                async with asyncio.timeout(_WRITE_TIMEOUT):
                    await writer.drain()
            except (OSError, TimeoutError) as exc:
                self._dropped += len(batch)
                self._problem(peer, f"connection lost: {_describe(exc)}")
                peer.disconnect()
                continue
            self._sent += len(batch)

    async def _connect(self, peer: _Peer) -> bool:
        """Dial the peer and shake hands; True when connected and accepted."""
        address = peer.address
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(self._connect_timeout):
                reader, writer = await self._open_connection(address)
                writer.write(encode_frame(encode_handshake(self.cluster_id, self.node_id)))
                await writer.drain()
                payload = await read_frame(reader, HANDSHAKE_MAX_FRAME_SIZE)
                if payload is None:
                    raise ConnectionError("closed during the handshake")
                reply = decode_handshake_reply(payload)
        except (OSError, TimeoutError, CodecError) as exc:
            if writer is not None:
                writer.close()
            self._problem(peer, f"cannot connect to {address[0]}:{address[1]}: {_describe(exc)}")
            return False
        except BaseException:
            if writer is not None:
                writer.close()
            raise
        if peer.address != address:  # set_peers moved the peer while we were dialling
            writer.close()
            return False
        if not reply.accepted:
            writer.close()
            self._problem(peer, f"refused by {address[0]}:{address[1]}: {reply.reason}",
                          logging.WARNING)
            return False
        peer.reader, peer.writer = reader, writer
        peer.failures = 0
        peer.last_problem = ""
        self._connects += 1
        logger.info("node %d -> %d: connected to %s:%d", self.node_id, peer.node_id, *address)
        return True

    # -- inbound -------------------------------------------------------------------------------

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain function rather than a coroutine: asyncio would run a coroutine in a task of its
        # own that close() could not see; this way every connection runs in a supervised task.
        if self._closing:
            writer.close()
            return
        self._inbound[writer] = None
        self._spawn(self._serve_inbound(reader, writer), f"raftly-recv-{self.node_id}")

    async def _serve_inbound(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peername = writer.get_extra_info("peername")
        where = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        try:
            node = await self._handshake(reader, writer, where)
            if node is not None:
                await self._read_messages(reader, node, where)
        finally:
            self._inbound.pop(writer, None)
            writer.close()

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, where: str
    ) -> int | None:
        """Read and check the handshake; the peer's node id, or None after refusing it."""
        try:
            async with asyncio.timeout(self._handshake_timeout):
                payload = await read_frame(reader, HANDSHAKE_MAX_FRAME_SIZE)
            if payload is None:
                logger.info("node %d: %s closed before its handshake", self.node_id, where)
                return None
            hello = decode_handshake(payload)
        except TimeoutError:
            logger.warning("node %d: no handshake from %s within %.1fs, closing",
                           self.node_id, where, self._handshake_timeout)
            return None
        except (CodecError, OSError) as exc:
            self._decode_errors += 1
            logger.warning("node %d: bad handshake from %s, closing: %s", self.node_id, where, exc)
            return None
        reason = ""
        if hello.version != PROTOCOL_VERSION:
            reason = (
                f"protocol version {hello.version} not supported "
                f"(this node speaks {PROTOCOL_VERSION})"
            )
        elif hello.cluster_id != self.cluster_id:
            reason = f"cluster id {hello.cluster_id!r} is not this cluster's {self.cluster_id!r}"
        elif hello.node_id == self.node_id:
            reason = f"node id {hello.node_id} is this node's own id"
        if reason:
            self._refused += 1
            logger.warning("node %d: refused node %d from %s: %s", self.node_id, hello.node_id,
                           where, reason)
            with contextlib.suppress(OSError, TimeoutError):
                writer.write(encode_frame(encode_handshake_reply(False, reason)))
                async with asyncio.timeout(self._handshake_timeout):
                    await writer.drain()
            return None
        try:
            writer.write(encode_frame(encode_handshake_reply(True)))
            await writer.drain()
        except OSError as exc:
            logger.info("node %d: %s went away during the handshake: %s", self.node_id, where,
                        _describe(exc))
            return None
        # One inbound connection per node: a newer one means the old one is dead (the peer
        # restarted or redialled), so close it rather than let half-open sockets pile up.
        for other, other_node in list(self._inbound.items()):
            if other_node == hello.node_id and other is not writer:
                other.close()
        self._inbound[writer] = hello.node_id
        logger.info("node %d: accepted node %d from %s", self.node_id, hello.node_id, where)
        return hello.node_id

    async def _read_messages(self, reader: asyncio.StreamReader, node: int, where: str) -> None:
        decoder = FrameDecoder(self._max_frame_size)
        on_message = self._on_message
        assert on_message is not None
        me = self.node_id
        kwargs = self._decode_kwargs
        while True:
            try:
                data = await reader.read(_READ_CHUNK)
            except OSError as exc:
                logger.info("node %d: connection from node %d lost: %s", me, node, _describe(exc))
                return
            if not data:
                if decoder.buffered:
                    self._decode_errors += 1
                    logger.warning("node %d: node %d closed inside a frame", me, node)
                else:
                    logger.info("node %d: node %d closed its connection", me, node)
                return
            try:
                for payload in decoder.feed(data):
                    msg = decode_message(payload, **kwargs)
                    if msg.src != node or msg.dst != me:
                        raise CodecError(
                            f"{type(msg).__name__} from {msg.src} to {msg.dst} on the "
                            f"connection of node {node} to node {me}"
                        )
                    self._received += 1
                    try:
                        on_message(msg)
                    except Exception:
                        # The handler's bug, not the peer's: log it loudly, keep the connection.
                        logger.exception("node %d: on_message failed for %s", me,
                                         type(msg).__name__)
            except CodecError as exc:
                self._decode_errors += 1
                logger.warning("node %d: closing connection from node %d (%s): %s", me, node,
                               where, exc)
                return


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def read_frame(
    reader: asyncio.StreamReader, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
) -> bytes | None:
    """Read one frame's payload; None on a clean end of stream before any byte of a frame.

    Raises FrameTooLarge before reading the body of an oversized frame, and CodecError if the
    stream ends in the middle of a frame.
    """
    try:
        header = await reader.readexactly(HEADER_SIZE)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise CodecError("stream ended inside a frame header") from None
    size = frame_length(header, max_frame_size)
    try:
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError as exc:
        raise CodecError(
            f"stream ended inside a frame ({len(exc.partial)} of {size} bytes)"
        ) from None

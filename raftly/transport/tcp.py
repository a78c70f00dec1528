"""``TcpTransport``: Raft messages between processes over TCP (asyncio streams).

Shape of the connections: every node opens one outbound connection to each peer it sends to and
only writes on it; what a peer sends us arrives on the peer's own outbound connection, which our
server accepted. So each ordered pair of nodes has one connection, and replies never wait behind
requests on a shared socket.

Outbound, per peer: a bounded queue of encoded frames and one writer task. ``send`` encodes;
when the peer is connected, nothing is queued and the transport holds nothing unsent at this layer
(with TLS, the raw TCP transport beneath may still hold up to its high-water mark, about 64 KiB),
it writes the frame at once (no task wake-up on the hot path); otherwise it appends (or drops and
counts, when the queue is full) and wakes the writer; the writer connects
lazily, sends the handshake, then repeatedly takes everything queued and writes it with a single
``write()`` of the concatenated frames followed by ``drain()``. Batching like this is several
times faster than one write per message, and it never waits to fill a batch. A peer that cannot be
reached is retried with exponential backoff (capped at ``_BACKOFF_MAX``, with jitter), and what was
queued for it is dropped: by the time it is back those messages are stale and Raft resends.

Inbound: an asyncio server. A connection must send a valid handshake within the handshake timeout,
naming our cluster id and protocol version, or it is refused with a logged reason. Then frames are
read in large chunks, split, decoded, checked (``src`` must be the node that shook hands, ``dst``
must be us) and handed to ``on_message``. A malformed or oversized frame closes only that
connection, with one log line. A connection that has shaken hands and then sends nothing for
``idle_timeout`` (10 minutes by default: far longer than any election timeout, because a
follower's connection to another follower is silent for a whole term, and redialling it costs a
TLS handshake when the next election needs it) is closed; a peer with something to say redials.

Connections that have not shaken hands yet are what a stranger can open: each is bounded by the
handshake timeout (once for TLS, once for the handshake frame), at most ``max_pending`` of them
are open at once and ``_PENDING_PER_SOURCE`` from one source address (more are closed at
accept), and their refusals are logged at most once per ``_REFUSAL_LOG_INTERVAL`` per source
address, the next line saying how many were not logged, and at most
``_REFUSAL_LINES_PER_INTERVAL`` times per interval in all, so that a port scanner cannot flood
the log.

Snapshot files (``send_snapshot``) travel on a connection of their own per transfer, opened with
the same handshake naming the snapshot channel, so a long transfer never delays heartbeats on the
message connection; the stream itself (chunks, acks, flow control, timeouts) is
``raftly.transport.snapshot_stream``. One transfer per peer at a time, on each side: a newer one
replaces the running one (see ``send_snapshot``).

Mutual TLS (``server_ssl`` and ``client_ssl``, from ``raftly.security.tls``): both contexts demand
a certificate of the cluster CA, and a node's identity is its certificate's common name, which
must be the name ``peer_name`` gives for the node's id. The dialler checks the listener's name
against the node it dialled before it shakes hands; the listener checks the dialler's against the
id its handshake claims, and refuses an id it has no name for (``on_unknown_peer`` is told, so
that its owner can look the member up; the peer redials). The listener accepts plain TCP and
upgrades it with ``start_tls`` inside the connection's supervised task, under the handshake
timeout, so that a failed TLS handshake (a plaintext peer, a certificate of another CA, none, an
expired one) is one WARNING line saying who and why, like every other refusal, and counted in
``stats()["refused"]``. Snapshot connections are checked the same way.

Every task is started by ``_spawn``: an unexpected exception is logged with its traceback (and a
dead peer writer is replaced on the next send), and ``close()`` cancels and awaits all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import ssl
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from raftly.core.messages import InstallSnapshot, Message
from raftly.logevents import event
from raftly.security.tls import common_name
from raftly.transport.base import MessageHandler, PeerTraffic, SnapshotSinkFactory
from raftly.transport.codec import (
    CHANNEL_MESSAGES,
    CHANNEL_SNAPSHOT,
    DEFAULT_MAX_FRAME_SIZE,
    HANDSHAKE_MAX_FRAME_SIZE,
    PROTOCOL_VERSION,
    CodecError,
    FrameDecoder,
    Handshake,
    decode_handshake,
    decode_handshake_reply,
    decode_message,
    encode_frame,
    encode_handshake,
    encode_handshake_reply,
    frame_message,
)
from raftly.transport.framing import read_frame
from raftly.transport.snapshot_stream import (
    TransferError,
    receive_snapshot,
    send_snapshot_stream,
)
from raftly.transport.snapshot_stream import describe as _describe

__all__ = ["TcpTransport", "read_frame"]

logger = logging.getLogger(__name__)

Address = tuple[str, int]
T = TypeVar("T")

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
_REFUSAL_LOG_INTERVAL = 10.0
"""Seconds between two WARNING lines about refused connections from one source address."""
_REFUSAL_SOURCES = 1024
"""Source addresses remembered for that rate limit; beyond it the quiet ones are forgotten."""
_REFUSAL_LINES_PER_INTERVAL = 100
"""WARNING lines about refusals per ``_REFUSAL_LOG_INTERVAL`` from all sources together, so
that connections from many addresses cannot flood the log either."""
_PENDING_PER_SOURCE = 16
"""Unfinished handshakes one source address may hold: a stranger holding idle sockets takes
up its own share of ``max_pending``, not the slots of peers on other hosts."""
_SNAPSHOT_WINDOW = 4
"""Chunks of a snapshot in flight before the sender waits for an ack: enough to keep loopback
and LAN links busy, little enough that a slow receiver's disk throttles the sender."""


class _RefusalLog:
    """Rate limit of the WARNING lines about refused inbound connections, per source address:
    the first line of a source is logged, then at most one per ``_REFUSAL_LOG_INTERVAL``,
    saying how many refusals of that source were not logged (those go to DEBUG); and at most
    ``_REFUSAL_LINES_PER_INTERVAL`` lines per interval from all sources together."""

    __slots__ = ("_sources", "_window_end", "_window_lines")

    def __init__(self) -> None:
        self._sources: dict[str, tuple[float, int]] = {}  # source -> (next line due, not logged)
        self._window_end = 0.0
        self._window_lines = 0

    def log(self, source: str, text: str, extra: dict[str, Any] | None = None) -> None:
        now = asyncio.get_running_loop().time()
        due, unlogged = self._sources.get(source, (now, 0))
        if now < due:
            self._sources[source] = (due, unlogged + 1)
            logger.debug("%s", text)
            return
        if now >= self._window_end:
            self._window_end, self._window_lines = now + _REFUSAL_LOG_INTERVAL, 0
        if self._window_lines >= _REFUSAL_LINES_PER_INTERVAL:
            logger.debug("%s", text)  # many sources at once: the budget of lines is spent
            return
        self._window_lines += 1
        if unlogged:
            text = f"{text} ({unlogged} more refusals of {source} not logged since the last)"
        logger.warning("%s", text, extra=extra)
        if len(self._sources) >= _REFUSAL_SOURCES and source not in self._sources:
            # Forget the sources whose window has passed: a scan of many addresses must not
            # grow this without bound (their unlogged counts are lost, which is fine).
            self._sources = {k: v for k, v in self._sources.items() if v[0] > now}
        self._sources[source] = (now + _REFUSAL_LOG_INTERVAL, 0)


class _Refused(Exception):
    """The listener answered our handshake with a refusal; the text is its reason."""


class _Untrusted(Exception):
    """This node refuses the peer it dialled (its certificate); the text is the reason."""


@dataclass(slots=True)
class _Outgoing:
    """The snapshot transfer running to one peer, and how many callers wait for it."""

    msg: InstallSnapshot
    path: str
    task: asyncio.Task[bool]
    waiters: int = 0


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
        "traffic",
        "wakeup",
        "writer",
    )

    def __init__(self, node_id: int, address: Address, traffic: PeerTraffic) -> None:
        self.node_id = node_id
        self.address = address
        self.traffic = traffic
        """The transport's counters for this node id (they outlive this object)."""
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

    def writable(self) -> bool:
        """Connected, and the transport holds nothing unsent at this layer: nothing of this
        peer's is waiting for drain. (Under TLS, ``get_write_buffer_size`` counts only the SSL
        layer's buffers; the raw TCP transport beneath may still hold up to its high-water mark,
        about 64 KiB, before the SSL buffer fills and sends take the queue. Order is kept.)"""
        writer = self.writer
        return (writer is not None and writer.transport.get_write_buffer_size() == 0
                and self.connected())

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
    ``connect_timeout`` bounds a dial's TCP connect, ``handshake_timeout`` its TLS and
    handshake (and, inbound, each of those of a connection accepted). ``idle_timeout`` closes
    a peer's connection silent that long after its handshake; ``max_pending`` caps the inbound
    connections that have not shaken hands yet.
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
        snapshot_timeout: float = 30.0,
        peer_name: Callable[[int], str | None] | None = None,
        idle_timeout: float = 600.0,
        max_pending: int = 64,
    ) -> None:
        if type(node_id) is not int or node_id < 0:
            raise ValueError(f"node_id must be a non-negative int, got {node_id!r}")
        encode_handshake(cluster_id, node_id)  # validates the cluster id early, with a clear error
        FrameDecoder(max_frame_size)  # validates the limit
        if queue_limit < 1 or queue_bytes_limit < 1:
            raise ValueError("queue limits must be positive")
        if not snapshot_timeout > 0:
            raise ValueError(f"snapshot_timeout must be positive, got {snapshot_timeout!r}")
        if not idle_timeout > 0:
            raise ValueError(f"idle_timeout must be positive, got {idle_timeout!r}")
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending!r}")
        if (server_ssl is None) != (client_ssl is None):
            raise ValueError("give both server_ssl and client_ssl (mutual TLS), or neither")
        if server_ssl is not None and peer_name is None:
            raise ValueError("TLS needs peer_name: the certificate name each node id must show")
        self.node_id = node_id
        self.cluster_id = cluster_id
        self._listen = listen
        self._max_frame_size = max_frame_size
        self._queue_limit = queue_limit
        self._queue_bytes_limit = queue_bytes_limit
        self._connect_timeout = connect_timeout
        self._handshake_timeout = handshake_timeout
        self._snapshot_timeout = snapshot_timeout
        self._idle_timeout = idle_timeout
        self._max_pending = max_pending
        self._pending = 0  # accepted connections that have not finished their handshake
        self._pending_from: dict[str, int] = {}  # source host -> its share of _pending
        self._refusal_log = _RefusalLog()
        self._decode_kwargs: dict[str, int] = {}
        if max_entries is not None:
            self._decode_kwargs["max_entries"] = max_entries
        self._server_ssl = server_ssl
        self._client_ssl = client_ssl
        self._peer_name = peer_name
        self._rng = random.Random()  # backoff jitter only; nothing here needs to be replayable

        self._on_message: MessageHandler | None = None
        self.on_unknown_peer: Callable[[int], None] | None = None
        """Called (on the event loop) with the id of a node this transport has no address for
        (for every message dropped), or no name for (a TLS peer refused), so that its owner
        can go and find the member."""
        self._snapshot_sink: SnapshotSinkFactory | None = None
        self._server: asyncio.Server | None = None
        self._listen_address: Address | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._outgoing: dict[int, _Outgoing] = {}  # peer -> the snapshot transfer to it
        self._incoming: dict[int, asyncio.Task[Any]] = {}  # peer -> the transfer from it
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
        self._snapshots_sent = 0
        self._snapshots_send_failed = 0
        self._snapshots_received = 0
        self._snapshots_receive_failed = 0

        self._traffic: dict[int, PeerTraffic] = {}
        """Per peer id, kept when a peer is removed: counters never go back."""

        self._peers: dict[int, _Peer] = {}
        self.set_peers(peers)

    # -- the interface ----------------------------------------------------------------------------

    @property
    def listen_address(self) -> Address:
        """The address actually listened on (the real port when 0 was asked); after start()."""
        if self._listen_address is None:
            raise RuntimeError("the transport is not started")
        return self._listen_address

    async def start(
        self, on_message: MessageHandler, *, snapshot_sink: SnapshotSinkFactory | None = None
    ) -> None:
        """Listen for peers; ``on_message`` gets every valid message addressed to this node.

        ``snapshot_sink`` gives the sink for each incoming snapshot file; its InstallSnapshot
        reaches ``on_message`` once the sink's ``finish()`` succeeded. None refuses them all.
        """
        if self._on_message is not None or self._closing:
            raise RuntimeError("a TcpTransport can be started once")
        self._on_message = on_message
        self._snapshot_sink = snapshot_sink
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
                outgoing = self._outgoing.pop(nid, None)
                if outgoing is not None:
                    outgoing.task.cancel()  # its caller gets False
        for nid, address in wanted.items():
            known = self._peers.get(nid)
            if known is None:
                self._peers[nid] = _Peer(nid, address, self._traffic_of(nid))
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
            if self.on_unknown_peer is not None:
                self.on_unknown_peer(msg.dst)
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
        if not peer.queue and peer.writable():
            # Nothing waits before it and the socket took everything so far: write now rather
            # than wake the writer task (a loop iteration, a coroutine step and a drain timer
            # per message, on the critical path of every commit). The writer task still owns
            # connecting, back-pressure and the write timeout: anything left unsent in the
            # transport's buffer makes the next message take the queue.
            assert peer.writer is not None  # writable() checked it
            peer.writer.write(frame)
            self._count_sent(peer, 1, len(frame))
            return
        peer.queue.append(frame)
        peer.queued_bytes += len(frame)
        if peer.task is None:
            name = f"raftly-send-{self.node_id}-{peer.node_id}"
            peer.task = self._spawn(self._run_peer(peer), name)
        peer.wakeup.set()

    async def send_snapshot(
        self, msg: InstallSnapshot, path: str, *, chunk_size: int = 1 << 20
    ) -> bool:
        """Stream the snapshot file at ``path`` to ``msg.dst`` on a connection of its own.

        ``msg`` carries the metadata only (``data == b""``). True once the receiver has written
        the whole file, its sink's ``finish()`` verified it and the message was handed to its
        ``on_message``; False on any failure (peer unknown or unreachable, refused, connection
        broken, no progress for ``snapshot_timeout``, file unreadable, transport closed), with
        one log line saying why. Never raises because of the network or the peer; ValueError
        for a caller's mistake (data in ``msg``, a foreign ``src``, a ``chunk_size`` that does not
        fit ``max_frame_size``).

        One transfer per peer at a time. A call with the same message and path as the running
        transfer to that peer waits for that transfer's outcome rather than starting over (so a
        leader re-asking for the same snapshot never restarts it); any other call replaces the
        running transfer, whose caller then gets False: the newest request is what the leader
        wants now, and the older one may carry a stale term or snapshot. Cancelling the caller
        cancels the transfer unless another caller waits for it too.
        """
        if type(chunk_size) is not int or not 0 < chunk_size < self._max_frame_size:
            raise ValueError(
                f"chunk_size must be in [1, {self._max_frame_size - 1}] (max_frame_size "
                f"{self._max_frame_size} less the tag byte), got {chunk_size!r}"
            )
        if msg.snapshot.data:
            raise ValueError("send_snapshot sends the file at path: msg must carry no data")
        if msg.src != self.node_id:
            raise ValueError(f"InstallSnapshot with src {msg.src} sent by node {self.node_id}")
        if self._closing or self._on_message is None:
            return False
        peer = self._peers.get(msg.dst)
        if peer is None:
            logger.warning("no address for node %d: cannot send it a snapshot", msg.dst)
            return False
        transfer = self._outgoing.get(msg.dst)
        if transfer is not None and not transfer.task.done() and (
            transfer.msg != msg or transfer.path != path
        ):
            logger.info("node %d -> %d: snapshot %s replaces the transfer of %s", self.node_id,
                        msg.dst, _show_meta(msg), _show_meta(transfer.msg))
            transfer.task.cancel()
            transfer = None
        if transfer is None or transfer.task.done():
            name = f"raftly-snapshot-{self.node_id}-{msg.dst}"
            task = self._spawn(self._send_snapshot(peer, msg, path, chunk_size), name)
            transfer = self._outgoing[msg.dst] = _Outgoing(msg, path, task)
        transfer.waiters += 1
        try:
            await asyncio.wait([transfer.task])
        finally:
            transfer.waiters -= 1
            if transfer.waiters == 0 and not transfer.task.done():  # our caller was cancelled
                transfer.task.cancel()
        if self._outgoing.get(msg.dst) is transfer:
            del self._outgoing[msg.dst]
        task = transfer.task
        # A crash of the task (a bug) was logged with its traceback by _task_done.
        return not task.cancelled() and task.exception() is None and task.result()

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
            "pending_connections": self._pending,
            "queued": sum(len(p.queue) for p in self._peers.values()),
            "connects": self._connects,
            "connect_failures": self._connect_failures,
            "refused": self._refused,
            "snapshots_sent": self._snapshots_sent,
            "snapshots_send_failed": self._snapshots_send_failed,
            "snapshots_received": self._snapshots_received,
            "snapshots_receive_failed": self._snapshots_receive_failed,
        }

    def traffic(self) -> dict[int, PeerTraffic]:
        """Messages and bytes sent to and received from each peer id (a copy), for metrics.

        Counted once per write of a batch and once per read of a chunk, never per message:
        this is the hot path. Only ids that were in the address book appear: what an unknown
        id sends is delivered (Raft judges it) but not counted, so the ids are bounded."""
        return {nid: PeerTraffic(t.messages_sent, t.bytes_sent, t.messages_received,
                                 t.bytes_received) for nid, t in self._traffic.items()}

    def _traffic_of(self, node_id: int) -> PeerTraffic:
        traffic = self._traffic.get(node_id)
        if traffic is None:
            traffic = self._traffic[node_id] = PeerTraffic()
        return traffic

    # -- socket setup --------------------------------------------------------------------------

    async def _open_connection(
        self, address: Address
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        # Plain TCP even with TLS: _dial upgrades it under its own timeout.
        host, port = address
        return await asyncio.open_connection(host, port, limit=_STREAM_LIMIT)

    async def _start_server(self, address: Address) -> asyncio.Server:
        # Plain TCP even with TLS: _serve_inbound upgrades each connection (see _start_tls).
        host, port = address
        return await asyncio.start_server(self._accept, host, port, limit=_STREAM_LIMIT)

    # -- tasks ---------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
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
            self._count_sent(peer, len(batch), size)

    def _count_sent(self, peer: _Peer, messages: int, size: int) -> None:
        self._sent += messages
        peer.traffic.messages_sent += messages
        peer.traffic.bytes_sent += size

    async def _dial(
        self, node_id: int, address: Address, channel: str = CHANNEL_MESSAGES
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect to node ``node_id``, check its certificate (with TLS) and shake hands.

        Raises OSError (ssl.SSLError included), TimeoutError, CodecError, _Refused (by the
        listener) or _Untrusted (by us: the listener's certificate is not the node's).
        """
        writer: asyncio.StreamWriter | None = None
        try:
            # Two budgets: connect_timeout for the TCP connect alone, handshake_timeout for
            # what follows (TLS and the handshake frame take two or three round trips more,
            # which a short connect timeout would not leave room for on a slow link).
            async with asyncio.timeout(self._connect_timeout):
                reader, writer = await self._open_connection(address)
            async with asyncio.timeout(self._handshake_timeout):
                if self._client_ssl is not None:
                    try:
                        await writer.start_tls(self._client_ssl, server_hostname=address[0])
                    except ssl.SSLCertVerificationError as exc:
                        raise _Untrusted(_describe_tls(exc)) from None
                    reason = self._wrong_name(node_id, writer)
                    if reason:
                        raise _Untrusted(reason)
                writer.write(
                    encode_frame(encode_handshake(self.cluster_id, self.node_id, channel=channel))
                )
                await writer.drain()
                payload = await read_frame(reader, HANDSHAKE_MAX_FRAME_SIZE)
                if payload is None:
                    raise ConnectionError("closed during the handshake")
                reply = decode_handshake_reply(payload)
            if not reply.accepted:
                raise _Refused(f"refused by {address[0]}:{address[1]}: {reply.reason}")
        except BaseException:
            if writer is not None:
                writer.close()
            raise
        return reader, writer

    async def _connect(self, peer: _Peer) -> bool:
        """Dial the peer and shake hands; True when connected and accepted."""
        address = peer.address
        try:
            reader, writer = await self._dial(peer.node_id, address)
        except _Untrusted as exc:
            self._refused += 1
            self._problem(peer, f"refused {address[0]}:{address[1]}: {exc}", logging.WARNING)
            return False
        except _Refused as exc:
            self._problem(peer, str(exc), logging.WARNING)
            return False
        except ssl.SSLError as exc:  # the listener refused our certificate, or speaks no TLS
            self._problem(peer, f"TLS with {address[0]}:{address[1]} failed: "
                          f"{_describe_tls(exc)}", logging.WARNING)
            return False
        except (OSError, TimeoutError, CodecError) as exc:
            self._problem(peer, f"cannot connect to {address[0]}:{address[1]}: {_describe(exc)}")
            return False
        if peer.address != address:  # set_peers moved the peer while we were dialling
            writer.close()
            return False
        peer.reader, peer.writer = reader, writer
        peer.failures = 0
        peer.last_problem = ""
        self._connects += 1
        logger.info("node %d -> %d: connected to %s:%d", self.node_id, peer.node_id, *address)
        return True

    async def _send_snapshot(
        self, peer: _Peer, msg: InstallSnapshot, path: str, chunk_size: int
    ) -> bool:
        """The task of one outgoing transfer: open the file, dial, stream; logs its failure."""
        loop = asyncio.get_running_loop()
        what = f"snapshot {_show_meta(msg)}"  # then with its size, as the receiver logs it
        # One worker thread per transfer: file reads stay off the event loop and in order.
        executor = ThreadPoolExecutor(1, thread_name_prefix=f"raftly-snapshot-{msg.dst}")
        file = None
        writer: asyncio.StreamWriter | None = None
        started = loop.time()
        try:
            try:
                file = await loop.run_in_executor(executor, open, path, "rb")
                size = os.fstat(file.fileno()).st_size
            except OSError as exc:
                raise TransferError(f"cannot read {path}: {_describe(exc)}") from exc
            what = f"{what} ({size} bytes)"
            reader, writer = await self._dial(peer.node_id, peer.address, CHANNEL_SNAPSHOT)
            await send_snapshot_stream(
                reader, writer, msg, file, size, chunk_size=chunk_size, window=_SNAPSHOT_WINDOW,
                timeout=self._snapshot_timeout, executor=executor,
            )
        except _Untrusted as exc:
            self._refused += 1
            return self._snapshot_failed(msg.dst, what, f"refused {peer.address[0]}:"
                                         f"{peer.address[1]}: {exc}")
        except (TransferError, _Refused) as exc:
            return self._snapshot_failed(msg.dst, what, str(exc))
        except ssl.SSLError as exc:
            return self._snapshot_failed(msg.dst, what, f"TLS failed: {_describe_tls(exc)}")
        except (OSError, TimeoutError, CodecError) as exc:
            return self._snapshot_failed(msg.dst, what, _describe(exc))
        finally:
            if writer is not None:
                writer.close()
            if file is not None:
                executor.submit(file.close)
            executor.shutdown(wait=False)
        elapsed = loop.time() - started
        self._snapshots_sent += 1
        logger.info("node %d -> %d: sent %s in %.2fs (%.0f MB/s)", self.node_id, msg.dst, what,
                    elapsed, size / 1e6 / max(elapsed, 1e-6), extra=event(
                        "snapshot_sent", peer=msg.dst, index=msg.snapshot.meta.index,
                        size=size, seconds=round(elapsed, 6)))
        return True

    def _snapshot_failed(self, dst: int, what: str, why: str) -> bool:
        self._snapshots_send_failed += 1
        logger.warning("node %d -> %d: %s failed: %s", self.node_id, dst, what, why,
                       extra=event("snapshot_send_failed", peer=dst, reason=why))
        return False

    # -- inbound -------------------------------------------------------------------------------

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain function rather than a coroutine: asyncio would run a coroutine in a task of its
        # own that close() could not see; this way every connection runs in a supervised task.
        if self._closing:
            writer.close()
            return
        source = _host(writer)
        held = self._pending_from.get(source, 0)
        if self._pending >= self._max_pending or held >= _PENDING_PER_SOURCE:
            # Strangers (or a stuck peer) hold that many unfinished handshakes: refuse at once
            # rather than hold a socket and a task for each up to the handshake timeout.
            self._refuse(_where(writer), None, f"{self._pending} connections ({held} from "
                         f"{source}) are still shaking hands (max_pending)")
            writer.close()
            return
        self._pending += 1
        self._pending_from[source] = held + 1
        if self._server_ssl is not None:
            # Nothing may be read as plaintext before start_tls takes the socket over: the
            # peer's first TLS bytes would be lost to the stream reader.
            transport = writer.transport
            assert isinstance(transport, asyncio.Transport)  # a socket's: it reads too
            transport.pause_reading()
        self._inbound[writer] = None
        self._spawn(self._serve_inbound(reader, writer), f"raftly-recv-{self.node_id}")

    async def _serve_inbound(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        where = _where(writer)
        pending = True
        try:
            if self._server_ssl is not None and not await self._start_tls(writer, where):
                return
            hello = await self._handshake(reader, writer, where)
            self._done_pending(writer)
            pending = False
            if hello is not None and hello.channel == CHANNEL_SNAPSHOT:
                await self._receive_snapshot(reader, writer, hello.node_id)
            elif hello is not None:
                await self._read_messages(reader, hello.node_id, where)
        finally:
            if pending:
                self._done_pending(writer)
            self._inbound.pop(writer, None)
            writer.close()

    def _done_pending(self, writer: asyncio.StreamWriter) -> None:
        self._pending -= 1
        source = _host(writer)
        left = self._pending_from.get(source, 1) - 1
        if left > 0:
            self._pending_from[source] = left
        else:
            self._pending_from.pop(source, None)

    async def _start_tls(self, writer: asyncio.StreamWriter, where: str) -> bool:
        """Upgrade an accepted connection to TLS; False (logged, counted) if it fails."""
        assert self._server_ssl is not None
        try:
            async with asyncio.timeout(self._handshake_timeout):
                await writer.start_tls(self._server_ssl)
        except TimeoutError:
            self._refuse(where, None, f"no TLS handshake within {self._handshake_timeout:.1f}s")
            return False
        except ssl.SSLError as exc:
            self._refuse(where, None, f"TLS handshake failed: {_describe_tls(exc)}")
            return False
        except OSError as exc:
            logger.info("node %d: %s went away during the TLS handshake: %s", self.node_id,
                        where, _describe(exc))
            return False
        return True

    def _wrong_name(self, node_id: int, writer: asyncio.StreamWriter) -> str:
        """Why the TLS peer on ``writer`` is not node ``node_id``; "" when it is."""
        assert self._peer_name is not None
        name = self._peer_name(node_id)
        if name is None:
            if self.on_unknown_peer is not None:
                self.on_unknown_peer(node_id)
            return f"node {node_id} is not a member this node knows"
        shown = common_name(writer.get_extra_info("peercert"))
        if shown is None:
            return "no certificate"
        if shown != name:
            return f"certificate names {shown!r}, not {name!r}"
        return ""

    def _refuse(self, where: str, node_id: int | None, reason: str) -> None:
        """Count and log (one line) a refused inbound connection."""
        self._refused += 1
        who = where if node_id is None else f"node {node_id} from {where}"
        self._warn(where, f"node {self.node_id}: refused {who}: {reason}",
                   event("peer_refused", source=where, peer=node_id, reason=reason))

    def _warn(self, where: str, text: str, extra: dict[str, Any] | None = None) -> None:
        """A WARNING about the inbound connection from ``where``, rate-limited per source."""
        self._refusal_log.log(where.rpartition(":")[0] or where, text, extra)

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, where: str
    ) -> Handshake | None:
        """Read and check the handshake; the peer's, or None after refusing it."""
        try:
            async with asyncio.timeout(self._handshake_timeout):
                payload = await read_frame(reader, HANDSHAKE_MAX_FRAME_SIZE)
            if payload is None:
                logger.info("node %d: %s closed before its handshake", self.node_id, where)
                return None
            hello = decode_handshake(payload)
        except TimeoutError:
            self._warn(where, f"node {self.node_id}: no handshake from {where} within "
                       f"{self._handshake_timeout:.1f}s, closing")
            return None
        except (CodecError, OSError) as exc:
            self._decode_errors += 1
            self._warn(where, f"node {self.node_id}: bad handshake from {where}, closing: {exc}")
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
        elif self._server_ssl is not None:
            reason = self._wrong_name(hello.node_id, writer)
        if reason:
            self._refuse(where, hello.node_id, reason)
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
        if hello.channel == CHANNEL_SNAPSHOT:
            logger.info("node %d: accepted a snapshot stream of node %d from %s", self.node_id,
                        hello.node_id, where)
            return hello  # stays in _inbound under None: closed by close(), not by the rule below
        # One inbound connection per node: a newer one means the old one is dead (the peer
        # restarted or redialled), so close it rather than let half-open sockets pile up.
        for other, other_node in list(self._inbound.items()):
            if other_node == hello.node_id and other is not writer:
                other.close()
        self._inbound[writer] = hello.node_id
        logger.info("node %d: accepted node %d from %s", self.node_id, hello.node_id, where)
        return hello

    async def _receive_snapshot(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, node: int
    ) -> None:
        """Serve one snapshot stream of ``node``; a newer stream of the same node replaces it."""
        me = asyncio.current_task()
        assert me is not None and self._on_message is not None
        running = self._incoming.get(node)
        if running is not None and not running.done():
            logger.info("node %d: a new snapshot stream of node %d replaces the running one",
                        self.node_id, node)
            running.cancel()  # it aborts its sink
        self._incoming[node] = me
        try:
            ok = await receive_snapshot(
                reader, writer, node=node, me=self.node_id, sink_factory=self._snapshot_sink,
                on_message=self._on_message, timeout=self._snapshot_timeout,
                max_frame_size=self._max_frame_size, decode_kwargs=self._decode_kwargs,
            )
        finally:
            if self._incoming.get(node) is me:
                del self._incoming[node]
        if ok:
            self._snapshots_received += 1
            self._received += 1
        else:
            self._snapshots_receive_failed += 1

    async def _read_messages(self, reader: asyncio.StreamReader, node: int, where: str) -> None:
        decoder = FrameDecoder(self._max_frame_size)
        loop = asyncio.get_running_loop()
        idle = self._idle_timeout
        last = loop.time()  # of the last read
        while True:
            # One timer per idle period, not one per read (this is the hot path): it is due
            # idle_timeout after the last read when set, and set again when reads came since.
            deadline = last + idle
            try:
                async with asyncio.timeout_at(deadline):
                    while True:
                        data = await reader.read(_READ_CHUNK)
                        last = loop.time()
                        if not self._deliver(decoder, data, node, where):
                            return
            except TimeoutError:
                if last + idle > deadline:
                    continue
                logger.info("node %d: closing the connection of node %d: idle for %gs",
                            self.node_id, node, idle)
                return
            except OSError as exc:
                logger.info("node %d: connection from node %d lost: %s", self.node_id, node,
                            _describe(exc))
                return

    def _deliver(self, decoder: FrameDecoder, data: bytes, node: int, where: str) -> bool:
        """Hand the messages in ``data`` (read from node ``node``) on; False (logged) when the
        connection must close: the peer closed it, or sent what is not its messages to us."""
        me = self.node_id
        if not data:
            if decoder.buffered:
                self._decode_errors += 1
                logger.warning("node %d: node %d closed inside a frame", me, node)
            else:
                logger.info("node %d: node %d closed its connection", me, node)
            return False
        on_message = self._on_message
        assert on_message is not None
        kwargs = self._decode_kwargs
        before = self._received
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
            self._count_received(node, self._received - before, 0)
            return False
        self._count_received(node, self._received - before, len(data))
        return True

    def _count_received(self, node: int, messages: int, nbytes: int) -> None:
        """Count what node ``node`` sent us: only for a member in the address book (anyone can
        claim an id in a plain handshake, and a stranger must not add peers to the metrics), and
        bytes only for a chunk whose frames all decoded and passed the src/dst check."""
        peer = self._peers.get(node)
        if peer is not None:
            peer.traffic.messages_received += messages
            peer.traffic.bytes_received += nbytes


_PLAINTEXT = frozenset({"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNKNOWN_PROTOCOL",
                        "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"})
"""OpenSSL's reasons for a first record that is no TLS at all."""


def _host(writer: asyncio.StreamWriter) -> str:
    """The other end's host (its address without the port)."""
    peername = writer.get_extra_info("peername")
    return str(peername[0]) if isinstance(peername, tuple) else str(peername)


def _where(writer: asyncio.StreamWriter) -> str:
    """``host:port`` of the other end of ``writer``, for log lines."""
    peername = writer.get_extra_info("peername")
    return f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)


def _describe_tls(exc: ssl.SSLError) -> str:
    """A failed TLS handshake in a few words: "certificate verify failed: certificate has
    expired", "no certificate", "plaintext on a TLS port"."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if exc.reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
        return "no certificate"
    if exc.reason in _PLAINTEXT:
        return f"plaintext on a TLS port ({exc.reason.lower().replace('_', ' ')})"
    text = re.sub(r"^\[[^]]*\]\s*|\s*\(_ssl\.c:\d+\)$", "", str(exc.strerror or exc))
    return text or type(exc).__name__


def _show_meta(msg: InstallSnapshot) -> str:
    meta = msg.snapshot.meta
    return f"{meta.term}/{meta.index}"

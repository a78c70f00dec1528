"""``MemoryNetwork``: in-process transports for unit tests of the server, with partitions.

Each ``MemoryTransport`` delivers with ``loop.call_soon`` on the receiver's event loop, so a send
never runs the receiver's handler inside the sender's call stack (as over a real network). By
default every message makes a round trip through the wire codec: the receiver gets a fresh copy
(no aliasing of lists between nodes) and the codec is exercised by every server test.

``send_snapshot`` copies the file into the receiver's snapshot sink in a worker thread, then
delivers the InstallSnapshot message once the sink's ``finish()`` succeeded, as ``TcpTransport``
does: a cut link fails the transfer (the sink is aborted), without chunks, acks or timeouts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from raftly.core.messages import InstallSnapshot, Message
from raftly.transport.base import IncomingSnapshotSink, MessageHandler, SnapshotSinkFactory
from raftly.transport.codec import decode_message, encode_message

__all__ = ["MemoryNetwork", "MemoryTransport"]

logger = logging.getLogger(__name__)


class MemoryNetwork:
    """A switch between in-process transports, with links that tests can cut and heal."""

    def __init__(self, *, use_codec: bool = True) -> None:
        self.use_codec = use_codec
        self._transports: dict[int, MemoryTransport] = {}
        self._down: set[int] = set()  # nodes cut off from everyone
        self._group: dict[int, int] = {}  # node -> partition group; absent means group 0
        self.sent = 0
        self.dropped = 0
        self.delivered = 0

    def transport(self, node_id: int) -> MemoryTransport:
        """The transport of ``node_id`` (the same object on every call)."""
        t = self._transports.get(node_id)
        if t is None:
            t = self._transports[node_id] = MemoryTransport(self, node_id)
        return t

    def disconnect(self, node_id: int) -> None:
        """Cut ``node_id`` off from every other node, both directions."""
        self._down.add(node_id)

    def connect(self, node_id: int) -> None:
        """Undo ``disconnect(node_id)``."""
        self._down.discard(node_id)

    def partition(self, *groups: Iterable[int]) -> None:
        """Only nodes in the same group can talk; nodes named in no group form one more group."""
        self._group = {}
        for g, members in enumerate(groups, start=1):
            for node in members:
                self._group[node] = g

    def heal(self) -> None:
        """Every node can reach every other again."""
        self._down.clear()
        self._group = {}

    def link_up(self, a: int, b: int) -> bool:
        return (
            a not in self._down
            and b not in self._down
            and self._group.get(a, 0) == self._group.get(b, 0)
        )

    def _route(self, msg: Message) -> None:
        self.sent += 1
        dst = self._transports.get(msg.dst)
        if dst is None or dst._loop is None or not self.link_up(msg.src, msg.dst):
            self.dropped += 1
            return
        if self.use_codec:
            msg = decode_message(encode_message(msg))
        dst._loop.call_soon(self._deliver, dst, msg)

    def _deliver(self, dst: MemoryTransport, msg: Message) -> None:
        # Checked again on arrival: a link cut or a node closed while the message was in flight
        # loses it, as a broken connection would.
        if dst._on_message is None or not self.link_up(msg.src, msg.dst):
            self.dropped += 1
            return
        self.delivered += 1
        dst._on_message(msg)


class MemoryTransport:
    """One node's end of a ``MemoryNetwork``; satisfies ``raftly.transport.Transport``."""

    def __init__(self, network: MemoryNetwork, node_id: int) -> None:
        self.network = network
        self.node_id = node_id
        self._on_message: MessageHandler | None = None
        self._snapshot_sink: SnapshotSinkFactory | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(
        self, on_message: MessageHandler, *, snapshot_sink: SnapshotSinkFactory | None = None
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._on_message = on_message
        self._snapshot_sink = snapshot_sink

    def send(self, msg: Message) -> None:
        if self._on_message is None:
            self.network.dropped += 1
            return
        self.network._route(msg)

    async def send_snapshot(
        self, msg: InstallSnapshot, path: str, *, chunk_size: int = 1 << 20
    ) -> bool:
        """Copy the file at ``path`` into the receiver's sink; True once it took the message."""
        if msg.snapshot.data:
            raise ValueError("send_snapshot sends the file at path: msg must carry no data")
        net = self.network
        dst = net._transports.get(msg.dst)
        if self._on_message is None or dst is None or dst._snapshot_sink is None:
            return False
        if not net.link_up(msg.src, msg.dst):
            return False
        try:
            sink = dst._snapshot_sink(msg)
        except Exception as exc:
            logger.warning("node %d: refused a snapshot from node %d: %s", msg.dst, msg.src, exc)
            return False
        if sink is None:
            return False
        try:
            await asyncio.to_thread(_copy, path, sink, chunk_size)
        except Exception as exc:
            logger.warning("node %d -> %d: snapshot transfer failed: %s", msg.src, msg.dst, exc)
            await asyncio.to_thread(sink.abort)
            return False
        if dst._on_message is None or not net.link_up(msg.src, msg.dst):
            return False  # the receiver holds the verified file but never got the message
        dst._on_message(decode_message(encode_message(msg)) if net.use_codec else msg)
        return True

    async def close(self) -> None:
        self._on_message = None
        self._snapshot_sink = None
        self._loop = None


def _copy(path: str, sink: IncomingSnapshotSink, chunk_size: int) -> None:
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            sink.write(chunk)
    sink.finish()

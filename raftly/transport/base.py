"""The ``Transport`` interface the server drives: start with a callback, send, close; and the
sink a receiving node writes an incoming snapshot file into.

A transport moves ``Message`` values between nodes. It is allowed to lose, delay, duplicate or
reorder them (Raft tolerates all of that); what it must never do is block the caller, raise because
a peer is down, or grow memory without bound while a peer is slow or gone. Snapshot files travel
beside the messages (``send_snapshot``), in chunks, without holding up heartbeats.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from raftly.core.messages import InstallSnapshot, Message
from raftly.core.types import SnapshotMeta

__all__ = ["IncomingSnapshotSink", "MessageHandler", "PeerTraffic", "SnapshotSinkFactory",
           "Transport"]

MessageHandler = Callable[[Message], None]
"""Called on the event loop with each message received for this node."""


@dataclass(slots=True)
class PeerTraffic:
    """What went to and came from one peer on the message connections, since the transport
    started: Raft messages, and the bytes of their frames (snapshot transfers not included).
    Counters: they only grow, also across a peer's removal and return."""

    messages_sent: int = 0
    bytes_sent: int = 0
    messages_received: int = 0
    bytes_received: int = 0


class IncomingSnapshotSink(Protocol):
    """Where a receiving node writes a snapshot file arriving from a leader (for instance
    ``SnapshotStore.receive()``). The transport calls these from a worker thread, one at a time
    and in order: ``write`` for each chunk, then ``finish`` after the last byte, or ``abort`` (at
    most once, instead of a successful ``finish``) when the transfer fails."""

    def write(self, data: bytes, /) -> object:
        """Append ``data`` to the file."""
        ...

    def finish(self) -> SnapshotMeta | None:
        """Verify the whole file and make it durable; raise (any Exception) if it is corrupt.

        May return the metadata the file itself holds: the transport then refuses a file whose
        metadata is not the one the InstallSnapshot message announced.
        """
        ...

    def abort(self) -> None:
        """Forget the partial file."""
        ...


SnapshotSinkFactory = Callable[[InstallSnapshot], IncomingSnapshotSink | None]
"""Called on the event loop when a snapshot transfer begins, with its InstallSnapshot message
(meta only); returns the sink for its file, or None (or raises) to refuse the transfer."""


@runtime_checkable
class Transport(Protocol):
    """What ``raftly.server`` needs from a network between Raft nodes."""

    async def start(
        self, on_message: MessageHandler, *, snapshot_sink: SnapshotSinkFactory | None = None
    ) -> None:
        """Begin accepting messages; ``on_message`` is called on the event loop for each one.

        ``snapshot_sink`` receives snapshot files sent with ``send_snapshot``: their
        InstallSnapshot message reaches ``on_message`` only once the sink's ``finish()`` has
        succeeded. Without it, incoming snapshot transfers are refused.
        """
        ...

    def send(self, msg: Message) -> None:
        """Queue ``msg`` for ``msg.dst``. Never blocks; never raises because a peer is down.

        A message that cannot be delivered (peer unknown or down, queue full) is dropped and
        counted: Raft retries by itself.
        """
        ...

    async def send_snapshot(
        self, msg: InstallSnapshot, path: str, *, chunk_size: int = 1 << 20
    ) -> bool:
        """Send the snapshot file at ``path`` with ``msg`` (meta only, ``data == b""``) to
        ``msg.dst``; True once the receiver has verified the whole file and taken the message,
        False on any failure (never raises because of the network or the peer)."""
        ...

    async def close(self) -> None:
        """Stop: close every connection and cancel and await every task the transport started."""
        ...

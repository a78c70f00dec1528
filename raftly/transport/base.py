"""The ``Transport`` interface the server drives: start with a callback, send, close.

A transport moves ``Message`` values between nodes. It is allowed to lose, delay, duplicate or
reorder them (Raft tolerates all of that); what it must never do is block the caller, raise because
a peer is down, or grow memory without bound while a peer is slow or gone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from raftly.core.messages import InstallSnapshot, Message

__all__ = ["IncomingSnapshotSink", "MessageHandler", "SnapshotSinkFactory", "Transport"]

MessageHandler = Callable[[Message], None]
"""Called on the event loop with each message received for this node."""


class IncomingSnapshotSink(Protocol):
    """Where a transport writes a snapshot file arriving from a leader."""

    def write(self, data: bytes) -> int: ...

    def finish(self) -> None:
        """The whole file arrived: verify it (raise if it is corrupt) and make it durable."""
        ...

    def abort(self) -> None:
        """The transfer failed: forget what was written."""
        ...


SnapshotSinkFactory = Callable[[InstallSnapshot], IncomingSnapshotSink]
"""Gives the sink for a snapshot announced by an InstallSnapshot; the message itself is
delivered to the ``MessageHandler`` only after the sink's ``finish`` succeeded."""


@runtime_checkable
class Transport(Protocol):
    """What ``raftly.server`` needs from a network between Raft nodes."""

    async def start(self, on_message: MessageHandler, *,
                    snapshot_sink: SnapshotSinkFactory | None = None) -> None:
        """Begin accepting messages; ``on_message`` is called on the event loop for each one.
        Without ``snapshot_sink``, incoming snapshot transfers are refused."""
        ...

    def send(self, msg: Message) -> None:
        """Queue ``msg`` for ``msg.dst``. Never blocks; never raises because a peer is down.

        A message that cannot be delivered (peer unknown or down, queue full) is dropped and
        counted: Raft retries by itself.
        """
        ...

    async def send_snapshot(self, msg: InstallSnapshot, path: str, *,
                            chunk_size: int = 1 << 20) -> bool:
        """Stream the snapshot file at ``path`` to ``msg.dst``, then deliver ``msg`` there.

        True once the receiver has the whole file verified; False on any failure. Never raises
        because of the network. Other messages keep flowing meanwhile.
        """
        ...

    async def close(self) -> None:
        """Stop: close every connection and cancel and await every task the transport started."""
        ...

"""The ``Transport`` interface the server drives: start with a callback, send, close.

A transport moves ``Message`` values between nodes. It is allowed to lose, delay, duplicate or
reorder them (Raft tolerates all of that); what it must never do is block the caller, raise because
a peer is down, or grow memory without bound while a peer is slow or gone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from raftly.core.messages import Message

__all__ = ["MessageHandler", "Transport"]

MessageHandler = Callable[[Message], None]
"""Called on the event loop with each message received for this node."""


@runtime_checkable
class Transport(Protocol):
    """What ``raftly.server`` needs from a network between Raft nodes."""

    async def start(self, on_message: MessageHandler) -> None:
        """Begin accepting messages; ``on_message`` is called on the event loop for each one."""
        ...

    def send(self, msg: Message) -> None:
        """Queue ``msg`` for ``msg.dst``. Never blocks; never raises because a peer is down.

        A message that cannot be delivered (peer unknown or down, queue full) is dropped and
        counted: Raft retries by itself.
        """
        ...

    async def close(self) -> None:
        """Stop: close every connection and cancel and await every task the transport started."""
        ...

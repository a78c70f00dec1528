"""The interface between Raft and the user's replicated state machine, and its snapshot hooks.

``StateMachine`` is all Raft needs to replicate. A state machine that also has the snapshot hooks
(``SnapshottingStateMachine``: ``capture`` and ``restore``) lets its driver compact the log: the
capture is taken quickly between two applies and written out (``persist``) from a worker thread
while applies go on, hashicorp/raft's ``Snapshot()`` / ``Persist(sink)`` split.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


class SupportsWrite(Protocol):
    """A binary sink: ``write(b)`` as on a file opened for binary writing."""

    def write(self, b: bytes, /) -> int: ...


class SupportsRead(Protocol):
    """A binary source: ``read(n)`` as on a file opened for binary reading."""

    def read(self, n: int = -1, /) -> bytes: ...


class StateMachine(Protocol):
    """What Raft replicates: every node applies the same commands in the same order.

    ``apply`` must be deterministic: given the same sequence of commands, every node must reach
    the same state and return the same results. It should not raise for a bad command; return
    an error value instead, since every node applies it all the same.
    """

    def apply(self, index: int, command: bytes) -> object:
        """Apply the committed command at log ``index`` and return its result."""
        ...


class SnapshotCapture(Protocol):
    """A point-in-time image of a state machine, not yet written out."""

    def persist(self, sink: SupportsWrite) -> None:
        """Write the image to ``sink``; runs in a worker thread while applies go on."""
        ...


@runtime_checkable
class SnapshottingStateMachine(StateMachine, Protocol):
    """A state machine whose state can be captured into a snapshot and restored from one."""

    def capture(self) -> SnapshotCapture:
        """Take a point-in-time image: quick, on the driver's thread, between two applies."""
        ...

    def restore(self, source: SupportsRead) -> None:
        """Replace the whole state with the image read from ``source``.

        Validates what it reads: raises ValueError on malformed input.
        """
        ...


def supports_snapshots(sm: object) -> bool:
    """Whether ``sm`` has the snapshot hooks (``capture`` and ``restore``)."""
    return isinstance(sm, SnapshottingStateMachine)

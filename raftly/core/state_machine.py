"""The interface between Raft and the user's replicated state machine, and its snapshot hooks."""

from __future__ import annotations

from typing import Protocol, TypeGuard


class StateMachine(Protocol):
    """What Raft replicates: every node applies the same commands in the same order.

    ``apply`` must be deterministic: given the same sequence of commands, every node must reach
    the same state and return the same results. It should not raise for a bad command; return
    an error value instead, since every node applies it all the same.
    """

    def apply(self, index: int, command: bytes) -> object:
        """Apply the committed command at log ``index`` and return its result."""
        ...


class SupportsWrite(Protocol):
    """A binary sink, such as a file opened ``"wb"`` or a snapshot store's writer.

    ``write`` takes all of ``data`` (as buffered files do; a raw file's short writes are not).
    """

    def write(self, data: bytes, /) -> object:
        ...


class SupportsRead(Protocol):
    """A binary source, such as a file opened ``"rb"`` or a snapshot store's reader.

    ``read(n)`` returns at most ``n`` bytes (all that is left if ``n`` is -1), and b"" at the end.
    """

    def read(self, n: int = -1, /) -> bytes:
        ...


class SnapshotCapture(Protocol):
    """A point-in-time image of a state machine, taken by ``capture`` and written by ``persist``."""

    def persist(self, sink: SupportsWrite) -> None:
        """Write the image to ``sink``, streaming, so it need not fit in memory twice over.

        Runs in a worker thread while the state machine goes on applying commands, so it must
        read only what ``capture`` set aside, never the live state.
        """
        ...


class SnapshottingStateMachine(StateMachine, Protocol):
    """A state machine whose state can be snapshotted, so the log before it can be compacted.

    Hashicorp/raft's Snapshot/Persist split: ``capture`` is quick and runs on the driver's
    thread between two applies; the slow part, ``persist``, runs later in a worker thread.
    """

    def capture(self) -> SnapshotCapture:
        """Set aside the state as of the last applied command (cheaply: copy, don't encode)."""
        ...

    def restore(self, source: SupportsRead) -> None:
        """Replace the whole state with the image ``persist`` wrote to ``source``.

        Validates everything it reads and raises ValueError on malformed input, leaving the
        state as it was. Deterministic: every node restoring the same image ends in the same
        state as one that applied the commands the image covers.
        """
        ...


def supports_snapshots(sm: object) -> TypeGuard[SnapshottingStateMachine]:
    """Whether ``sm`` has the snapshot hooks (without them, the driver never compacts)."""
    return all(callable(getattr(sm, name, None)) for name in ("apply", "capture", "restore"))

"""The interface between Raft and the user's replicated state machine."""

from __future__ import annotations

from typing import Protocol


class StateMachine(Protocol):
    """What Raft replicates: every node applies the same commands in the same order.

    ``apply`` must be deterministic: given the same sequence of commands, every node must reach
    the same state and return the same results. It should not raise for a bad command; return
    an error value instead, since every node applies it all the same.
    """

    def apply(self, index: int, command: bytes) -> object:
        """Apply the committed command at log ``index`` and return its result."""
        ...

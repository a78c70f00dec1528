"""What a simulated run may spend: ``SimBudget``, and ``BudgetExceeded`` when a run overspends.

A healthy cluster does a bounded amount of work per virtual second: ticks, a few rounds of
messages, a few Readies per input. A broken core can instead livelock (elections that never
settle), flood the network (a node answering every message with several), or spin without
virtual time advancing (a node that always has more Ready work). Without a budget the simulator
would hang on such a run and tell nobody which property broke; with one it fails fast, like any
other violation, with the seed, the step and the events that led there.
"""

from __future__ import annotations

from dataclasses import dataclass

from raftly.testing.safety import SafetyViolation


class BudgetExceeded(SafetyViolation):
    """A simulated run did far more work than Raft needs: a runaway, reported, not hung on."""


@dataclass(slots=True, frozen=True)
class SimBudget:
    """Limits on a simulated run's work, each far above what a healthy cluster does.

    A healthy 5-node fuzz run stays under a few thousand events and messages per virtual
    second, even with one-entry messages and a one-tick heartbeat; the limits leave an order of
    magnitude of headroom so that only a runaway reaches them, yet reach it in well under a
    second of real time.
    """

    steps_per_second: int = 50_000
    """Events (deliveries, ticks, completed saves) per virtual second; also what trips when
    virtual time stops advancing, as every event then falls in the same second."""
    messages_per_second: int = 50_000
    """Messages sent per virtual second."""
    readies_per_input: int = 1_000
    """Readies one node may hand out in a row for one input, with no time passing."""

    def __post_init__(self) -> None:
        if min(self.steps_per_second, self.messages_per_second, self.readies_per_input) < 1:
            raise ValueError("budget limits must be positive")

"""One client's entry in the KV state machine's exactly-once session table."""

from __future__ import annotations

from dataclasses import dataclass, field

from raftly.kv.records import Result


@dataclass(slots=True)
class ClientState:
    floor: int = 0  # every seq below it is forgotten: the client promised not to retry it
    results: dict[int, Result] = field(default_factory=dict)
    # The machine's capture count when ``results`` was made: a capture taken since may share it,
    # so it is copied before its next change (sessions can hold millions of results in all).
    made_at: int = 0

    def own_results(self, captures: int) -> dict[int, Result]:
        """``results``, to change: copied first if a capture may share it."""
        if self.made_at != captures:
            self.results = dict(self.results)
            self.made_at = captures
        return self.results


__all__ = ["ClientState"]

"""Write admission on one node's HTTP API: a bound on the writes in flight, the rest refused.

Past its peak a leader gains nothing from more concurrent writes: they only queue, each waiting
longer, until clients time out and retry into a queue that is longer still. So at most
``limit`` writes (proposals made through the HTTP API, of any route: PUT, DELETE, txn, lease
grants and revokes; reads and lease keepalives propose nothing and are never refused here)
are in flight on a node at once; one more is answered ``503`` with ``Retry-After`` before
anything is proposed (a PUT even before its body is read), so it was certainly not applied and
is safe to retry. A polite client waits the Retry-After and tries again; the writes admitted
keep their latency, which the limit bounds (about ``limit`` divided by the peak rate).

The default was chosen by measurement (docs/performance.md): it never refuses at 256 clients,
where the HTTP benchmark peaks, so the peak is not cut (64 already refused there); at four times
as many clients the leader stays up and every refusal is a 503 with Retry-After (p99 was still
2.7x the peak's in the 2026-12-02 run: docs/performance.md).
``raftly serve --max-inflight-writes N`` sets it.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_INFLIGHT_WRITES = 256
"""Writes in flight on one node before more are refused (``serve --max-inflight-writes``)."""


@dataclass(slots=True)
class WriteAdmission:
    """The count of writes in flight on one node and of those refused, against ``limit``."""

    limit: int = DEFAULT_MAX_INFLIGHT_WRITES
    in_flight: int = 0
    rejected: int = 0
    """Writes refused since the node started."""

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError(f"the write limit must be at least 1, not {self.limit}")

    @property
    def full(self) -> bool:
        """Whether a write arriving now would be refused (checked early, before its body)."""
        return self.in_flight >= self.limit

    def enter(self) -> bool:
        """Admit one write (True; ``leave`` when it is done), or count it refused (False)."""
        if self.in_flight >= self.limit:
            self.rejected += 1
            return False
        self.in_flight += 1
        return True

    def refuse(self) -> None:
        """Count a write refused before ``enter`` (when ``full`` said so)."""
        self.rejected += 1

    def leave(self) -> None:
        """An admitted write is done, whatever its outcome."""
        self.in_flight -= 1

    def as_json(self) -> dict[str, int]:
        return {"in_flight": self.in_flight, "limit": self.limit, "rejected": self.rejected}


__all__ = ["DEFAULT_MAX_INFLIGHT_WRITES", "WriteAdmission"]

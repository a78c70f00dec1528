"""The benchmark's results: one ``Sample`` per measured level, medians over runs, the table."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(slots=True)
class Sample:
    """One closed-loop measurement at one concurrency level."""

    clients: int
    ops: int
    seconds: float
    latencies: list[float]
    """Seconds per completed write, in the measured window."""
    errors: int = 0
    leader_fsyncs: int = 0
    leader_entries: int = 0
    follower_fsyncs: int = 0
    follower_entries: int = 0

    @property
    def rate(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float:
        """Latency percentile ``q`` (0-100) in milliseconds; nan with no samples."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        rank = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
        return ordered[rank] * 1000

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p99(self) -> float:
        return self.percentile(99)

    @property
    def leader_batch(self) -> float:
        """Mean entries per fsync on the leader (nan when it did not fsync)."""
        return self.leader_entries / self.leader_fsyncs if self.leader_fsyncs else float("nan")

    @property
    def follower_batch(self) -> float:
        if not self.follower_fsyncs:
            return float("nan")
        return self.follower_entries / self.follower_fsyncs


def sample_to_json(sample: Sample) -> dict[str, Any]:
    return asdict(sample)


def sample_from_json(data: Any) -> Sample:
    """A Sample from ``sample_to_json``'s dict (written by a benchmark child process);
    ValueError when it is not one."""
    if not isinstance(data, dict) or set(data) != {f.name for f in fields(Sample)}:
        raise ValueError(f"not a benchmark sample: {str(data)[:200]}")
    latencies = data["latencies"]
    if (not isinstance(latencies, list)
            or not all(isinstance(x, (int, float)) and x >= 0 for x in latencies)):
        raise ValueError("a sample's latencies must be a list of non-negative numbers")
    counts = {k: v for k, v in data.items() if k not in ("latencies", "seconds")}
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
               for v in counts.values()):
        raise ValueError(f"a sample's counts must be non-negative integers: {counts}")
    if not isinstance(data["seconds"], (int, float)) or not data["seconds"] > 0:
        raise ValueError("a sample's seconds must be positive")
    return Sample(**{**counts, "seconds": float(data["seconds"]),
                     "latencies": [float(x) for x in latencies]})


@dataclass(slots=True)
class Row:
    """The medians over runs of one concurrency level."""

    clients: int
    rate: float
    p50: float
    p99: float
    errors: float
    leader_batch: float
    follower_batch: float
    runs: int = 1


def _median(values: Sequence[float]) -> float:
    finite = [v for v in values if v == v]  # drop nan
    return statistics.median(finite) if finite else float("nan")


def summarize(samples: Sequence[Sample]) -> list[Row]:
    """Median of each column per concurrency level, in the order the levels first appear."""
    by_level: dict[int, list[Sample]] = {}
    for s in samples:
        by_level.setdefault(s.clients, []).append(s)
    return [Row(c, _median([s.rate for s in ss]), _median([s.p50 for s in ss]),
                _median([s.p99 for s in ss]), _median([float(s.errors) for s in ss]),
                _median([s.leader_batch for s in ss]), _median([s.follower_batch for s in ss]),
                len(ss))
            for c, ss in by_level.items()]


def format_table(rows: Sequence[Row], unit: str = "puts/s") -> str:
    head = (f"{'clients':>7} {unit:>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
            f"{'entries/fsync leader':>21} {'followers':>10}")
    lines = [head]
    for r in rows:
        lines.append(f"{r.clients:>7} {r.rate:>10.0f} {r.p50:>8.2f} {r.p99:>8.2f} "
                     f"{r.errors:>7.0f} {r.leader_batch:>21.1f} {r.follower_batch:>10.1f}")
    return "\n".join(lines)


def format_ratios(plain: Sequence[Row], tls: Sequence[Row]) -> str:
    """Throughput and p50 with and without TLS per level, and TLS / plain for each."""
    head = (f"{'clients':>7} {'plain puts/s':>12} {'TLS puts/s':>10} {'ratio':>6} "
            f"{'plain p50 ms':>12} {'TLS p50 ms':>10} {'ratio':>6}")
    lines = [head]
    by_level = {r.clients: r for r in tls}
    for p in plain:
        t = by_level.get(p.clients)
        if t is None:
            continue
        rate = t.rate / p.rate if p.rate else float("nan")
        p50 = t.p50 / p.p50 if p.p50 else float("nan")
        lines.append(f"{p.clients:>7} {p.rate:>12.0f} {t.rate:>10.0f} {rate:>6.2f} "
                     f"{p.p50:>12.2f} {t.p50:>10.2f} {p50:>6.2f}")
    return "\n".join(lines)


__all__ = ["Row", "Sample", "format_ratios", "format_table", "sample_from_json",
           "sample_to_json", "summarize"]

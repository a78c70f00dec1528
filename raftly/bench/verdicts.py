"""The comparison's judgements: ratios between systems and the issue's targets, met or not.

Pure functions of the figures (medians per system and level, the raw fsync median, the read,
overload and simulator results): no measuring here, so the thresholds are unit-tested on fake
figures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from raftly.bench.stats import Row

Rows = Mapping[str, Mapping[int, Row]]
"""Per system, per concurrency level: the medians over rounds."""

RATIO_PAIRS = (("raftly-http", "etcd-http"), ("raftly-lib", "pysyncobj"),
               ("raftly-lib-3proc", "pysyncobj"))
"""Numerator / denominator systems of the ratio table."""

FSYNC_FACTOR = 4.0
"""One-client library p50 target: at most this many raw fsync medians."""
HTTP_FACTOR = 1.5
HTTP_LEVELS = (16, 64, 256)
LIBRARY_FACTORS = ((16, 2.0), (256, 5.0))
READS_FACTOR = 3.0
READS_LEVEL = 64
STALE_FRACTION = 0.8
"""Stale reads "near the HTTP server's ceiling": at least this fraction of it."""
GOODPUT_FRACTION = 0.9
OVERLOAD_P99_FACTOR = 2.0
"""Admission keeps about the peak's writes in flight, so an admitted write should wait about as
long as at the peak: "p99 bounded" means within this factor of the peak's p99."""
SIM_FACTOR = 100.0


@dataclass(slots=True, frozen=True)
class Ratio:
    pair: str
    clients: int
    throughput: float
    """Numerator's rate / denominator's: > 1 is the numerator faster."""
    p50: float
    """Numerator's p50 / denominator's: < 1 is the numerator quicker."""


@dataclass(slots=True, frozen=True)
class Target:
    target: str
    measured: str
    met: bool | None
    """None: not measured in this run (a system or level skipped, an extra that failed)."""

    @property
    def verdict(self) -> str:
        return "not measured" if self.met is None else "met" if self.met else "NOT met"


@dataclass(slots=True, frozen=True)
class Extras:
    """The single measurements beside the rounds; None where not measured."""

    linearizable_reads: float | None = None
    """Reads/s at READS_LEVEL clients."""
    stale_reads: float | None = None
    http_ceiling: float | None = None
    """``GET /v1/status``/s at READS_LEVEL clients: the HTTP server's own ceiling."""
    overload_goodput_ratio: float | None = None
    """Goodput at 4x the peak clients / peak puts/s."""
    overload_leader_changes: int | None = None
    overload_p99_ms: float | None = None
    overload_peak_p99_ms: float | None = None
    """p99 of writes at the peak: the yardstick of "p99 bounded" under overload."""
    overload_unruly: int | None = None
    """Overload answers that were neither a success nor a 503 with Retry-After."""
    sim_x_real_time: float | None = None


def _div(a: float, b: float) -> float:
    return a / b if b and not math.isnan(b) else float("nan")


def ratios(rows: Rows) -> list[Ratio]:
    """Every RATIO_PAIRS pair measured, at every level both measured."""
    out = []
    for num, den in RATIO_PAIRS:
        if num not in rows or den not in rows:
            continue
        for clients, a in rows[num].items():
            b = rows[den].get(clients)
            if b is not None:
                out.append(Ratio(f"{num} / {den}", clients, _div(a.rate, b.rate),
                                 _div(a.p50, b.p50)))
    return out


def _row(rows: Rows, system: str, clients: int) -> Row | None:
    return rows.get(system, {}).get(clients)


def targets(rows: Rows, fsync_median_ms: float | None, extras: Extras = Extras()
            ) -> list[Target]:
    """The issue's targets, in its order, each with its measured figure and verdict."""
    out: list[Target] = []
    for system in ("raftly-lib", "raftly-lib-3proc"):
        name = f"1 client: {system} p50 <= {FSYNC_FACTOR:g}x raw fsync median"
        row = _row(rows, system, 1)
        if row is None or fsync_median_ms is None:
            out.append(Target(name, "-", None))
        else:
            limit = FSYNC_FACTOR * fsync_median_ms
            out.append(Target(name, f"{row.p50:.2f} ms vs {limit:.2f} ms", row.p50 <= limit))
    ours, theirs = _row(rows, "raftly-http", 1), _row(rows, "etcd-http", 1)
    name = "1 client: raftly-http p50 <= etcd-http p50"
    out.append(Target(name, "-", None) if ours is None or theirs is None else
               Target(name, f"{ours.p50:.2f} ms vs {theirs.p50:.2f} ms", ours.p50 <= theirs.p50))
    for clients in HTTP_LEVELS:
        out.append(_faster(rows, "raftly-http", "etcd-http", clients, HTTP_FACTOR))
    for system in ("raftly-lib", "raftly-lib-3proc"):
        for clients, factor in LIBRARY_FACTORS:
            out.append(_faster(rows, system, "pysyncobj", clients, factor))
    writes = _row(rows, "raftly-http", READS_LEVEL)
    name = f"{READS_LEVEL} clients: linearizable reads/s >= {READS_FACTOR:g}x raftly-http puts/s"
    if extras.linearizable_reads is None or writes is None:
        out.append(Target(name, "-", None))
    else:
        ratio = _div(extras.linearizable_reads, writes.rate)
        out.append(Target(name, f"{extras.linearizable_reads:.0f} vs {writes.rate:.0f}/s = "
                                f"{ratio:.2f}x", ratio >= READS_FACTOR))
    name = (f"{READS_LEVEL} clients: stale reads/s >= {STALE_FRACTION:.0%} of the HTTP "
            "ceiling (GET /v1/status/s)")
    stale, ceiling = extras.stale_reads, extras.http_ceiling
    if stale is None or ceiling is None:
        out.append(Target(name, "-", None))
    else:
        ratio = _div(stale, ceiling)
        out.append(Target(name, f"{stale:.0f} vs {ceiling:.0f}/s = {ratio:.0%}",
                          ratio >= STALE_FRACTION))
    name = f"overload (4x peak clients): goodput >= {GOODPUT_FRACTION:.0%} of peak"
    g = extras.overload_goodput_ratio
    out.append(Target(name, "-", None) if g is None else
               Target(name, f"{g:.0%} (p99 {_ms(extras.overload_p99_ms)})",
                      g >= GOODPUT_FRACTION))
    name = (f"overload: p99 <= {OVERLOAD_P99_FACTOR:g}x the peak's, every refusal a 503 with "
            "Retry-After")
    p99, peak_p99, unruly = (extras.overload_p99_ms, extras.overload_peak_p99_ms,
                             extras.overload_unruly)
    out.append(Target(name, "-", None) if p99 is None or peak_p99 is None or unruly is None else
               Target(name, f"p99 {_ms(p99)} vs {_ms(peak_p99)}, {unruly} other answer(s)",
                      p99 <= OVERLOAD_P99_FACTOR * peak_p99 and unruly == 0))
    name = "overload: no leader change"
    changes = extras.overload_leader_changes
    out.append(Target(name, "-", None) if changes is None else
               Target(name, f"{changes} leader change(s)", changes == 0))
    name = f"simulator: 5 nodes, 500 cmd/virtual s >= {SIM_FACTOR:g}x real time"
    sim = extras.sim_x_real_time
    out.append(Target(name, "-", None) if sim is None else
               Target(name, f"{sim:.0f}x", sim >= SIM_FACTOR))
    return out


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _faster(rows: Rows, ours: str, theirs: str, clients: int, factor: float) -> Target:
    name = f"{clients} clients: {ours} throughput >= {factor:g}x {theirs}"
    a, b = _row(rows, ours, clients), _row(rows, theirs, clients)
    if a is None or b is None:
        return Target(name, "-", None)
    ratio = _div(a.rate, b.rate)
    return Target(name, f"{a.rate:.0f} vs {b.rate:.0f}/s = {ratio:.2f}x", ratio >= factor)


__all__ = ["RATIO_PAIRS", "Extras", "Ratio", "Rows", "Target", "ratios", "targets"]

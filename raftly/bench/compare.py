"""``raftly bench --compare``: raftly, etcd and PySyncObj side by side, in one sitting.

Systems (``SYSTEMS``), each a fresh 3-node cluster on 127.0.0.1 per round:

- ``raftly-http``: three ``raftly serve`` processes (``http.py``), fsync on;
- ``etcd-http``: three etcd processes (``etcd.py``), its default fsync, the same aiohttp client;
- ``raftly-lib``: three ``RaftServer`` in this process (``library.py``), fsync on;
- ``raftly-lib-3proc``: one ``RaftServer`` per process, the clients in the leader's
  (``library3.py``), as PySyncObj runs;
- ``pysyncobj``: PySyncObj's best setting, three processes (``pysyncobj.py``), never fsyncs.

Round r runs every system once, all levels each, the order rotated by r so that drift on the
machine hits all alike; the tables show medians over rounds, and the JSON records each round's
order. Beside the rounds, once: the raw fsync floor of the file system the nodes write to, and
linearizable and stale reads at 64 clients, overload at 4x the peak clients, and the
simulator's speed. Then the ratios and the issue's targets
(``verdicts.py``), printed and written to OUT/compare.json, OUT/compare.md and two SVG plots.

A system that is not installed is skipped with one line saying how to install it; a system
that fails in a round is reported and the others go on (exit status 1). Every child process
and temporary directory is gone when this returns or raises.
"""

from __future__ import annotations

import datetime
import functools
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from raftly.bench import etcd, plots, pysyncobj
from raftly.bench.fsync import FsyncFloor, raw_fsync
from raftly.bench.load import WARMUP
from raftly.bench.places import temp_dir
from raftly.bench.report import (
    figures_table,
    machine,
    machine_line,
    markdown,
    ratios_table,
    targets_table,
    text,
)
from raftly.bench.stats import Row, Sample, summarize
from raftly.bench.verdicts import READS_LEVEL, Extras, Ratio, Target, ratios, targets

SYSTEMS = ("raftly-http", "etcd-http", "raftly-lib", "raftly-lib-3proc", "pysyncobj")
HTTP_SYSTEMS = frozenset({"raftly-http", "etcd-http"})
HTTP_VALUE_SIZE = 256
LIBRARY_VALUE_SIZE = 16
OVERLOAD_FACTOR = 4

Measured = Callable[[Sample], None]


@dataclass(slots=True)
class CompareOptions:
    clients: list[int]
    seconds: float
    rounds: int
    systems: list[str]
    out: Path
    base_dir: Path
    value_size: int | None = None
    """None: HTTP_VALUE_SIZE for the HTTP systems, LIBRARY_VALUE_SIZE for the others."""
    event_loop: str = "auto"
    extras: bool = True
    """Reads, overload and the simulator beside the rounds."""
    warmup: float = WARMUP

    def value(self, system: str) -> bytes:
        size = self.value_size
        if size is None:
            size = HTTP_VALUE_SIZE if system in HTTP_SYSTEMS else LIBRARY_VALUE_SIZE
        return b"v" * size


@dataclass(slots=True)
class Outcome:
    """Everything one comparison measured; ``to_json`` is compare.json."""

    options: CompareOptions
    machine: dict[str, str | int]
    date: str
    versions: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    order: list[list[str]] = field(default_factory=list)
    samples: dict[str, list[tuple[int, Sample]]] = field(default_factory=dict)
    """Per system: (round, Sample) for every level of every round that succeeded."""
    failures: list[dict[str, Any]] = field(default_factory=list)
    fsync: FsyncFloor | None = None
    extras: Extras = field(default_factory=Extras)
    extra_details: dict[str, Any] = field(default_factory=dict)

    def rows(self) -> dict[str, dict[int, Row]]:
        return {system: {r.clients: r for r in summarize([s for _, s in samples])}
                for system, samples in self.samples.items() if samples}

    def ratios(self, rows: dict[str, dict[int, Row]] | None = None) -> list[Ratio]:
        """``rows``: ``self.rows()`` when the caller has it already."""
        return ratios(self.rows() if rows is None else rows)

    def targets(self, rows: dict[str, dict[int, Row]] | None = None) -> list[Target]:
        return targets(self.rows() if rows is None else rows,
                       self.fsync.median_ms if self.fsync else None, self.extras)

    def to_json(self) -> dict[str, Any]:
        o = self.options
        rows = self.rows()
        out: dict[str, Any] = _finite({
            "date": self.date, "machine": self.machine, "versions": self.versions,
            "options": {"clients": o.clients, "seconds": o.seconds, "rounds": o.rounds,
                        "systems": o.systems, "event_loop": o.event_loop,
                        "value_sizes": {s: len(o.value(s)) for s in o.systems},
                        "warmup": o.warmup},
            "skipped": self.skipped, "order": self.order, "failures": self.failures,
            "fsync": asdict(self.fsync) if self.fsync else None,
            "samples": {system: [{"round": r, "clients": s.clients, "ops": s.ops,
                                  "seconds": s.seconds, "rate": s.rate, "p50_ms": s.p50,
                                  "p99_ms": s.p99, "errors": s.errors,
                                  "leader_entries_per_fsync": s.leader_batch}
                                 for r, s in samples]
                        for system, samples in self.samples.items()},
            "medians": {system: [asdict(r) for r in levels.values()]
                        for system, levels in rows.items()},
            "ratios": [asdict(r) for r in self.ratios(rows)],
            "targets": [{**asdict(t), "verdict": t.verdict} for t in self.targets(rows)],
            "extras": {**asdict(self.extras), "details": self.extra_details},
        })
        return out


def _finite(value: Any) -> Any:
    """NaN (no sample) as JSON null: compare.json stays strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def rotated(systems: Sequence[str], round_index: int) -> list[str]:
    """The order of round ``round_index`` (from 0): the systems rotated left by it."""
    if not systems:
        return []
    k = round_index % len(systems)
    return [*systems[k:], *systems[:k]]


def missing(system: str) -> str | None:
    """Why ``system`` cannot run here (how to install what it needs), or None."""
    if system == "etcd-http" and etcd.etcd_binary() is None:
        return etcd.MISSING
    if system == "pysyncobj" and not pysyncobj.available():
        return pysyncobj.MISSING
    return None


def run_system(system: str, o: CompareOptions, root: Path, measured: Measured | None
               ) -> list[Sample]:
    """One round of one system: a fresh cluster, one Sample per level."""
    from raftly.bench.http import bench_http
    from raftly.bench.library import bench_library
    from raftly.bench.library3 import bench_library3
    from raftly.eventloop import run

    value = o.value(system)
    if system == "raftly-http":
        return bench_http(o.clients, o.seconds, base_dir=root, warmup=o.warmup, value=value,
                          measured=measured, event_loop=o.event_loop)
    if system == "etcd-http":
        return etcd.bench_etcd(o.clients, o.seconds, base_dir=root, warmup=o.warmup,
                               value=value, event_loop=o.event_loop, measured=measured)
    if system == "raftly-lib":
        return run(bench_library(o.clients, o.seconds, base_dir=root, warmup=o.warmup,
                                 value=value, measured=measured), loop=o.event_loop)
    if system == "raftly-lib-3proc":
        samples = bench_library3(o.clients, o.seconds, base_dir=root, warmup=o.warmup,
                                 value=value, event_loop=o.event_loop)
    elif system == "pysyncobj":
        samples = pysyncobj.bench_pysyncobj(o.clients, o.seconds, base_dir=root,
                                            warmup=o.warmup, value=value)
    else:
        raise ValueError(f"unknown system {system!r}: choose from {', '.join(SYSTEMS)}")
    for sample in samples:  # measured in a child: reported all at once
        if measured is not None:
            measured(sample)
    return samples


def _versions(systems: Sequence[str]) -> dict[str, str]:
    from importlib.metadata import version

    out = {"raftly": version("raftly")}
    if "etcd-http" in systems:
        binary = etcd.etcd_binary()
        if binary is not None:
            out["etcd"] = etcd.etcd_version(binary)
    if "pysyncobj" in systems and pysyncobj.available():
        out["pysyncobj"] = pysyncobj.version()
    return out


def compare(o: CompareOptions, *, say: Callable[[str], None] = print,
            begin: Callable[[str, int], None] | None = None,
            measured: Measured | None = None) -> Outcome:
    """Measure (see the module docstring). ``say`` prints a line; ``begin(system, round)`` and
    ``measured(sample)`` report progress."""
    from raftly.eventloop import loop_factory

    loop = "asyncio" if loop_factory(o.event_loop) is None else "uvloop"
    # `auto` leaves the nodes on serve's own default (asyncio: see raftly.cli.serve).
    serve_loop = "uvloop" if o.event_loop == "uvloop" else "asyncio"
    outcome = Outcome(o, machine(loop, serve_loop), datetime.datetime.now(datetime.UTC).isoformat(
        timespec="seconds"), _versions(o.systems))
    for system in o.systems:
        reason = missing(system)
        if reason is not None:
            outcome.skipped[system] = reason
            say(reason)
    systems = [s for s in o.systems if s not in outcome.skipped]
    with temp_dir(o.base_dir, "raftly-bench-compare-") as root:
        outcome.fsync = raw_fsync(root)
        say(f"raw fsync (64-byte append + fdatasync, {outcome.fsync.count}x): median "
            f"{outcome.fsync.median_ms:.3f} ms, p99 {outcome.fsync.p99_ms:.3f} ms")
        for r in range(o.rounds):
            order = rotated(systems, r)
            outcome.order.append(order)
            for system in order:
                if begin is not None:
                    begin(system, r + 1)
                try:
                    samples = run_system(system, o, root, measured)
                except Exception as exc:  # one system failing must not lose the others
                    outcome.failures.append({"system": system, "round": r + 1,
                                             "error": f"{type(exc).__name__}: {exc}"})
                    say(f"{system}, round {r + 1}: failed: {type(exc).__name__}: "
                        f"{str(exc)[:2000]}")
                    continue
                outcome.samples.setdefault(system, []).extend((r + 1, s) for s in samples)
        if o.extras:
            _measure_extras(outcome, root, say)
    return outcome


def _measure_extras(outcome: Outcome, root: Path, say: Callable[[str], None]) -> None:
    """Reads, overload and the simulator, once each; a part that fails is said and left
    out."""
    o = outcome.options
    found: dict[str, Any] = {}
    details = outcome.extra_details

    def attempt(name: str, work: Callable[[], None]) -> None:
        try:
            work()
        except Exception as exc:  # said and recorded; the other parts still run
            details[name] = f"failed: {type(exc).__name__}: {exc}"
            say(f"{name}: failed: {type(exc).__name__}: {str(exc)[:2000]}")

    def reads() -> None:
        from raftly.bench import reads as module

        runs: dict[str, Callable[..., list[Sample]]] = {
            "linearizable_reads": functools.partial(module.bench_reads,
                                                    consistency="linearizable"),
            "stale_reads": functools.partial(module.bench_reads, consistency="stale"),
            "http_ceiling": module.bench_ceiling}
        for name, run in runs.items():
            (sample,) = run([READS_LEVEL], o.seconds, base_dir=root, warmup=o.warmup,
                            event_loop=o.event_loop)
            found[name] = sample.rate
            details[name] = {"clients": READS_LEVEL, "rate": sample.rate, "p50_ms": sample.p50,
                             "p99_ms": sample.p99, "errors": sample.errors}

    def overload() -> None:
        from raftly.bench.overload import bench_overload

        http = outcome.rows().get("raftly-http", {})
        peak = max(http.values(), key=lambda r: r.rate).clients if http else max(o.clients)
        result = bench_overload(peak, o.seconds, factor=OVERLOAD_FACTOR, base_dir=root,
                                event_loop=o.event_loop)
        details["overload"] = result.as_json()
        found["overload_goodput_ratio"] = result.ratio
        found["overload_leader_changes"] = result.leader_changes
        found["overload_p99_ms"] = result.p99_ms
        found["overload_peak_p99_ms"] = result.peak_p99_ms
        found["overload_unruly"] = result.errors + result.rejected_503 - result.retry_after_503

    def simulator() -> None:
        from raftly.bench.sim import sim_speed

        found["sim_x_real_time"] = sim_speed()
        details["sim"] = {"nodes": 5, "load": 500, "x_real_time": found["sim_x_real_time"]}

    attempt("reads", reads)
    attempt("overload", overload)
    attempt("simulator", simulator)
    outcome.extras = Extras(**found)


def report(outcome: Outcome) -> str:
    """The tables, as printed (plain text)."""
    o = outcome.options
    rows = outcome.rows()
    pairs = outcome.ratios(rows)
    parts = [f"\nabsolute figures, medians over {o.rounds} round(s)",
             text(figures_table(rows)),
             "\nratios (throughput > 1x and p50 < 1x: the first system is ahead)",
             text(ratios_table(pairs)) if pairs else "(no pair measured)",
             "\ntargets of issue 16", text(targets_table(outcome.targets(rows)), left=3)]
    return "\n".join(parts)


def markdown_report(outcome: Outcome) -> str:
    """compare.md: a fragment for the README's performance section."""
    o = outcome.options
    sizes = sorted({(s in HTTP_SYSTEMS, len(o.value(s))) for s in o.systems})
    size_text = ", ".join(f"{n}-byte values {'over HTTP' if http else 'in the library'}"
                          for http, n in sizes)
    fs = outcome.fsync
    lines = [f"Measured {outcome.date[:10]} with `raftly bench --compare` on "
             f"{machine_line(outcome.machine)}.",
             "",
             f"Raw fsync (64-byte append + fdatasync): median {fs.median_ms:.2f} ms, p99 "
             f"{fs.p99_ms:.2f} ms." if fs else "Raw fsync: not measured.",
             f"Systems: {', '.join(o.systems)}, each 3 nodes on 127.0.0.1; fsync on for "
             f"raftly and etcd (etcd's default), PySyncObj never fsyncs; {size_text}; "
             f"{o.seconds:g} s per level; medians of {o.rounds} round(s), the systems "
             "alternating.", ""]
    versions = ", ".join(f"{k} {v}" for k, v in outcome.versions.items())
    lines += [f"Versions: {versions}.", ""]
    if outcome.skipped:
        lines += [f"Skipped: {'; '.join(outcome.skipped.values())}.", ""]
    rows = outcome.rows()
    lines += [markdown(figures_table(rows)), ""]
    pairs = outcome.ratios(rows)
    if pairs:
        lines += [markdown(ratios_table(pairs)), ""]
    lines += [markdown(targets_table(outcome.targets(rows)), left=3), ""]
    return "\n".join(lines)


def write_outputs(outcome: Outcome, say: Callable[[str], None] = print) -> list[Path]:
    """OUT/compare.json, OUT/compare.md and (with matplotlib) the two SVG plots."""
    out = outcome.options.out
    out.mkdir(parents=True, exist_ok=True)
    written = []
    path = out / "compare.json"
    path.write_text(json.dumps(outcome.to_json(), indent=1, allow_nan=False) + "\n")
    written.append(path)
    path = out / "compare.md"
    path.write_text(markdown_report(outcome))
    written.append(path)
    if not plots.available():
        say(plots.MISSING)
    elif outcome.rows():
        title = f"{outcome.date[:10]}, {outcome.machine['cores']} cores"
        written += plots.write_plots(outcome.rows(), out, title)
    return written


def main_compare(o: CompareOptions, *, begin: Callable[[str, int], None] | None = None,
                 measured: Measured | None = None, echo: Callable[[str], None] | None = None,
                 before_output: Callable[[], None] | None = None) -> int:
    """Measure, print, write the files; 0, or 1 when a system failed in some round.
    ``echo`` prints a line while measuring (above a progress line); ``before_output`` is
    called before the tables (to erase it)."""
    def say(line: str) -> None:
        print(line, flush=True)

    outcome = compare(o, say=echo or say, begin=begin, measured=measured)
    if before_output is not None:
        before_output()
    print(report(outcome))
    for path in write_outputs(outcome, say):
        print(f"wrote {path}")
    sys.stdout.flush()
    return 1 if outcome.failures else 0


__all__ = ["HTTP_SYSTEMS", "SYSTEMS", "CompareOptions", "Outcome", "compare", "main_compare",
           "markdown_report", "missing", "report", "rotated", "run_system", "write_outputs"]

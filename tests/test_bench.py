"""Smoke test of ``raftly bench``: the library-API benchmark runs end to end (timing untested)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from raftly.bench import Sample, bench_library, format_table, summarize


def test_library_bench_runs(tmp_path: Path) -> None:
    samples = asyncio.run(bench_library([4], 1.0, fsync="never", base_dir=tmp_path, warmup=0.2))
    assert len(samples) == 1
    sample = samples[0]
    assert sample.clients == 4
    assert sample.ops > 0 and len(sample.latencies) == sample.ops
    assert sample.leader_entries > 0 and sample.leader_fsyncs > 0
    assert "commits/s" in format_table(summarize(samples), unit="commits/s")
    assert not list(tmp_path.iterdir()), "the temporary data directory is removed"


def test_summarize_takes_medians() -> None:
    runs = [Sample(8, ops, 1.0, [0.001 * ops]) for ops in (10, 30, 20)]
    (row,) = summarize(runs)
    assert row.clients == 8 and row.rate == 20 and row.runs == 3
    assert row.p50 == 20.0

"""The read benchmark (raftly.bench.reads) on real node processes: linearizable and stale GETs
and the status ceiling are all answered 200 with the preloaded value (timing untested)."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftly.bench.http import serve_options
from raftly.bench.reads import bench_ceiling, bench_reads


@pytest.mark.parametrize("consistency", ["linearizable", "stale"])
def test_read_bench_gets_every_preloaded_key_without_errors(tmp_path: Path,
                                                             consistency: str) -> None:
    samples = bench_reads([3], 0.5, consistency=consistency, fsync="never", base_dir=tmp_path,
                          warmup=0.1, value_size=32)
    assert [s.clients for s in samples] == [3]
    assert samples[0].ops > 0 and samples[0].errors == 0
    assert len(samples[0].latencies) == samples[0].ops


def test_ceiling_bench_answers_status_without_errors(tmp_path: Path) -> None:
    (sample,) = bench_ceiling([2], 0.3, fsync="never", base_dir=tmp_path, warmup=0.1)
    assert sample.ops > 0 and sample.errors == 0


def test_unknown_consistency_or_event_loop_is_refused() -> None:
    with pytest.raises(ValueError):
        bench_reads([1], 0.1, consistency="eventual")
    with pytest.raises(ValueError):
        serve_options("tokio")
    assert serve_options("auto", ("--x",)) == ("--x",)
    assert serve_options("uvloop") == ("--event-loop", "uvloop")

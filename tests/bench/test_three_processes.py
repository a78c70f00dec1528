"""The benchmarks whose nodes are three processes and whose clients run in the leader's:
raftly-lib-3proc and PySyncObj (when installed) measure, and leave nothing behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftly.bench.library3 import bench_library3


def test_library_over_three_processes_measures_in_the_leader(tmp_path: Path) -> None:
    (sample,) = bench_library3([3], 0.3, base_dir=tmp_path, warmup=0.2, fsync="never")
    assert sample.clients == 3 and sample.ops > 0 and len(sample.latencies) == sample.ops
    assert sample.leader_fsyncs > 0 and sample.leader_entries > 0, "fsync counts of the leader"
    assert not list(tmp_path.iterdir()), "the data directories are removed"


def test_pysyncobj_measures_with_its_best_setting(tmp_path: Path) -> None:
    from raftly.bench import pysyncobj

    if not pysyncobj.available():
        pytest.skip(pysyncobj.MISSING)
    (sample,) = pysyncobj.bench_pysyncobj([2], 0.3, base_dir=tmp_path, warmup=0.2,
                                          value=b"v" * 32)
    assert sample.clients == 2 and sample.ops > 0 and sample.errors == 0, sample
    assert not list(tmp_path.iterdir())

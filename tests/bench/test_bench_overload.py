"""Flooding a real three-node cluster (raftly.bench.overload): past the leader's write limit the
clients get 503 with Retry-After, the admitted writes go on, and the leader holds (no election),
as the heartbeats keep flowing while the API is flooded."""

from __future__ import annotations

from pathlib import Path

from raftly.bench.overload import bench_overload, retry_after_seconds


def test_a_flooded_cluster_answers_503_with_retry_after_and_keeps_its_leader(
        tmp_path: Path) -> None:
    result = bench_overload(8, 1.5, factor=4, fsync="never", base_dir=tmp_path, warmup=0.3,
                            extra_serve_options=("--max-inflight-writes", "4"))
    assert result.overload_clients == 32
    assert result.admission_limit == 4
    assert result.rejected_503 > 0
    assert result.retry_after_503 == result.rejected_503
    assert result.node_rejected >= result.rejected_503
    assert result.errors == 0
    assert result.goodput > 0 and result.peak_rate > 0
    assert result.leader_changes == 0
    assert result.leader_before is not None and result.leader_after == result.leader_before
    assert result.as_json()["ratio"] == result.ratio


def test_retry_after_is_read_in_seconds_and_capped() -> None:
    assert retry_after_seconds("1") == 1.0
    assert retry_after_seconds("0") == 0.0
    assert retry_after_seconds("3600") == 1.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") is None

"""The raw fsync floor and the simulator's speed, as ``raftly bench --compare`` measures them."""

from __future__ import annotations

from pathlib import Path

from raftly.bench.fsync import raw_fsync
from raftly.bench.sim import sim_run, sim_speed


def test_raw_fsync_reports_median_and_p99_and_leaves_no_file(tmp_path: Path) -> None:
    floor = raw_fsync(tmp_path, count=20)
    assert floor.count == 20
    assert 0 < floor.median_ms <= floor.p99_ms
    assert not list(tmp_path.iterdir())


def test_sim_speed_is_virtual_seconds_per_real_second_and_the_load_is_applied() -> None:
    speed, applied = sim_run(5, 500, 1.0, seed=0)
    assert speed > 0
    assert applied >= 400, "about 500 commands per virtual second reach node 0"
    assert sim_speed(nodes=3, load=100, seconds=0.5, seed=1) > 0

"""The benchmark's child processes: every wait is bounded, a child that dies early is reported
with its log, and stopping reaps even a child that ignores SIGTERM."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from raftly.bench.children import ChildFailed, Children, measure_in_children, write_samples
from raftly.bench.stats import Sample, sample_from_json, sample_to_json

PY = sys.executable


def test_a_child_that_exits_early_fails_the_wait_with_its_log(tmp_path: Path) -> None:
    with Children() as children:
        children.start([PY, "-c", "print('cannot bind'); raise SystemExit(4)"],
                       tmp_path / "n0.log")
        with pytest.raises(ChildFailed, match=r"(?s)n0 exited with code 4.*cannot bind"):
            children.wait_for(lambda: False, 30.0, "starting")


def test_a_wait_gives_up_at_its_deadline_and_stop_kills_what_ignores_sigterm(
        tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    stubborn = ("import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, "
                "signal.SIG_IGN); pathlib.Path(sys.argv[1]).touch(); time.sleep(60)")
    children = Children()
    with children:
        proc = children.start([PY, "-c", stubborn, str(ready)], tmp_path / "n0.log")
        children.wait_for(ready.exists, 30.0, "starting")
        began = time.monotonic()
        with pytest.raises(ChildFailed, match=r"not done within 0\.2 s"):
            children.wait_for(lambda: False, 0.2, "measuring")
        assert time.monotonic() - began < 5
        began = time.monotonic()
        children.stop(grace=0.3)
    assert proc.poll() is not None, "killed and reaped"
    assert time.monotonic() - began < 10


def test_measure_in_children_returns_what_the_measuring_child_wrote(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    writer = ("import sys; from raftly.bench.children import write_samples; "
              "from raftly.bench.stats import Sample; "
              "write_samples([Sample(3, 30, 1.0, [0.001] * 30, 1)], sys.argv[1])")
    idle = "import time; time.sleep(60)"
    samples = measure_in_children([[PY, "-c", idle], [PY, "-c", writer, str(out)]], tmp_path,
                                  out, 60.0, "test")
    assert [(s.clients, s.ops, s.errors) for s in samples] == [(3, 30, 1)]


def test_a_malformed_result_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    write_samples([Sample(1, 1, 1.0, [0.5])], out)
    good = json.loads(out.read_text())
    for bad in ([{**good[0], "ops": -1}], [{**good[0], "latencies": ["x"]}],
                [{**good[0], "extra": 1}], {"not": "a list"}):
        out.write_text(json.dumps(bad))
        with pytest.raises(ChildFailed, match="bad result"):
            measure_in_children([[PY, "-c", "import time; time.sleep(60)"]], tmp_path, out,
                                10.0, "test")


def test_samples_survive_the_json_round_trip() -> None:
    sample = Sample(4, 10, 2.0, [0.001, 0.002], 1, 5, 10, 8, 20)
    assert sample_from_json(json.loads(json.dumps(sample_to_json(sample)))) == sample
    with pytest.raises(ValueError):
        sample_from_json({**sample_to_json(sample), "seconds": 0})


def test_lead_watch_measures_after_a_stable_lead_and_yields_to_a_result_already_written(
        tmp_path: Path) -> None:
    from raftly.bench.children import LeadWatch

    out = tmp_path / "result.json"
    assert LeadWatch(out, 60.0, stable=0.0).poll(True) == "measure"
    patient = LeadWatch(out, 60.0, stable=60.0)
    assert patient.poll(True) is None, "not led long enough yet"
    assert patient.poll(False) is None, "a follower waits while nobody has measured"
    out.write_text("[]")
    assert patient.poll(False) == "other"
    assert LeadWatch(out, -1.0, stable=0.0).poll(True) == "timeout"

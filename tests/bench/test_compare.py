"""``raftly bench --compare``: the rounds alternate the systems (the order recorded in the
JSON), a missing or failing system leaves the others measured, and a tiny real run produces the
tables, the JSON, the Markdown and the SVG plots, leaving no process or temporary file behind."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from raftly.bench import compare as cmp
from raftly.bench.children import ChildFailed
from raftly.bench.compare import CompareOptions, Outcome, rotated
from raftly.bench.stats import Sample


def live_children() -> list[int]:
    """The pids of this process's children still alive (or not reaped), from /proc."""
    import os

    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():
            found.append(int(stat.parent.name))
    return found


def options(tmp_path: Path, systems: list[str], rounds: int) -> CompareOptions:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    return CompareOptions([1, 4], 0.3, rounds, systems, tmp_path / "out", data, extras=False)


def test_rotated_starts_each_round_one_system_later() -> None:
    assert [rotated("abc", r) for r in range(4)] == [list("abc"), list("bca"), list("cab"),
                                                      list("abc")]
    assert rotated([], 3) == []


def test_rounds_run_every_system_once_in_rotated_order_and_the_json_records_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[tuple[str, int]] = []
    rates = {"raftly-http": [10, 30, 20], "raftly-lib": [5, 6, 7], "pysyncobj": [1, 2, 3]}

    def fake(system: str, o: CompareOptions, root: Path, measured: object) -> list[Sample]:
        assert root.parent == o.base_dir, "every system's data in the run's temporary dir"
        n = sum(1 for s, _ in ran if s == system)
        ran.append((system, len(ran)))
        return [Sample(c, int(rates[system][n] * c), 1.0, [0.001] * 3) for c in o.clients]

    monkeypatch.setattr(cmp, "run_system", fake)
    monkeypatch.setattr(cmp, "missing", lambda system: None)
    o = options(tmp_path, ["raftly-http", "raftly-lib", "pysyncobj"], rounds=3)
    outcome = cmp.compare(o, say=lambda line: None)
    expected = [["raftly-http", "raftly-lib", "pysyncobj"],
                ["raftly-lib", "pysyncobj", "raftly-http"],
                ["pysyncobj", "raftly-http", "raftly-lib"]]
    assert [s for s, _ in ran] == [s for order in expected for s in order]
    assert outcome.rows()["raftly-http"][1].rate == 20, "the median over the rounds"
    assert outcome.rows()["raftly-http"][4].runs == 3
    cmp.write_outputs(outcome, say=lambda line: None)
    data = json.loads((o.out / "compare.json").read_text())
    assert data["order"] == expected
    assert [s["round"] for s in data["samples"]["pysyncobj"]] == [1, 1, 2, 2, 3, 3]
    assert {r["pair"] for r in data["ratios"]} == {"raftly-lib / pysyncobj"}
    assert not list(o.base_dir.iterdir()), "the run's temporary directory is removed"


def test_a_missing_system_is_skipped_with_one_line_and_a_failing_one_does_not_stop_the_others(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    def fake(system: str, o: CompareOptions, root: Path, measured: object) -> list[Sample]:
        if system == "raftly-lib-3proc":
            raise ChildFailed("raftly library, 3 processes: not done within 1 s")
        return [Sample(c, 100, 1.0, [0.002] * 100) for c in o.clients]

    monkeypatch.setattr(cmp, "run_system", fake)
    monkeypatch.setattr(cmp.etcd, "etcd_binary", lambda: None)
    o = options(tmp_path, ["raftly-http", "etcd-http", "raftly-lib-3proc", "raftly-lib"], 2)
    assert cmp.main_compare(o) == 1, "a failed system makes the exit status 1"
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "etcd not installed: apt-get install etcd-server; skipped"
    assert "raftly-lib-3proc, round 1: failed: ChildFailed: raftly library, 3 processes" in out
    data = json.loads((o.out / "compare.json").read_text())
    assert data["skipped"] == {"etcd-http": cmp.etcd.MISSING}
    assert data["order"][0] == ["raftly-http", "raftly-lib-3proc", "raftly-lib"]
    assert [f["round"] for f in data["failures"]] == [1, 2]
    assert set(data["medians"]) == {"raftly-http", "raftly-lib"}
    assert "| 1 client: raftly-http p50 <= etcd-http p50 | - | not measured |" in (
        (o.out / "compare.md").read_text())


def test_options_that_do_not_go_with_compare_are_refused(
        capsys: pytest.CaptureFixture[str]) -> None:
    from raftly.bench import main

    assert main(["--compare", "--tls"]) == 2
    assert "--tls does not go with --compare" in capsys.readouterr().err
    assert main(["--compare", "--rounds", "0"]) == 2
    with pytest.raises(SystemExit):
        main(["--compare", "--systems", "raftly-http,zookeeper"])


def test_compare_on_a_tiny_run_writes_tables_json_markdown_and_plots(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from raftly.bench import main
    from raftly.bench.plots import available

    systems = ["raftly-http", "raftly-lib"] + (["etcd-http"] if shutil.which("etcd") else [])
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    code = main(["--compare", "--clients", "1,2", "--seconds", "0.3", "--rounds", "1",
                 "--systems", ",".join(systems), "--out", str(out), "--dir", str(data),
                 "--no-extras", "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    for heading in ("absolute figures, medians over 1 round(s)", "ratios", "targets of issue 16"):
        assert heading in printed
    result = json.loads((out / "compare.json").read_text())
    assert result["order"] == [systems]
    assert result["fsync"]["median_ms"] > 0
    for system in systems:
        levels = [m["clients"] for m in result["medians"][system]]
        assert levels == [1, 2], system
        assert all(m["rate"] > 0 for m in result["medians"][system]), result["medians"]
    assert result["options"]["value_sizes"]["raftly-http"] == 256
    assert result["options"]["value_sizes"]["raftly-lib"] == 16
    markdown = (out / "compare.md").read_text()
    assert "| raftly-lib | 1 |" in markdown and "Raw fsync" in markdown
    if "etcd-http" in systems:
        assert any(r["pair"] == "raftly-http / etcd-http" for r in result["ratios"])
    if available():
        for name in ("throughput.svg", "latency.svg"):
            svg = (out / name).read_text()
            assert "<svg" in svg and "raftly-lib" in svg, name
    else:
        assert "matplotlib not installed" in printed
    assert not list(data.iterdir()), "every temporary directory is removed"
    assert live_children() == [], "every node process is stopped and reaped"


def test_outcome_json_has_no_nan(tmp_path: Path) -> None:
    o = options(tmp_path, ["raftly-lib"], 1)
    outcome = Outcome(o, {"cpu": "x"}, "2026-12-01T00:00:00+00:00")
    outcome.samples["raftly-lib"] = [(1, Sample(1, 0, 1.0, []))]  # no latencies: nan p50
    text = json.dumps(outcome.to_json(), allow_nan=False)
    assert '"p50_ms": null' in text


def test_extras_measure_reads_ceiling_overload_at_4x_peak_and_the_simulator_into_targets(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.machinery
    import sys
    import types
    from dataclasses import dataclass

    import raftly.bench
    import raftly.bench.sim

    rates = {"linearizable": 9000.0, "stale": 20000.0, "ceiling": 21000.0}
    calls: list[tuple[str, int]] = []

    def fake_module(name: str, **functions: object) -> None:
        module = types.ModuleType(f"raftly.bench.{name}")
        module.__spec__ = importlib.machinery.ModuleSpec(module.__name__, None)
        module.__dict__.update(functions)
        monkeypatch.setitem(sys.modules, module.__name__, module)
        monkeypatch.setattr(raftly.bench, name, module, raising=False)

    def bench_reads(clients: list[int], seconds: float, *, consistency: str,
                    **_: object) -> list[Sample]:
        calls.append((consistency, clients[0]))
        return [Sample(clients[0], int(rates[consistency] * seconds), seconds, [0.001])]

    def bench_ceiling(clients: list[int], seconds: float, **_: object) -> list[Sample]:
        return bench_reads(clients, seconds, consistency="ceiling")

    @dataclass(slots=True)
    class OverloadResult:  # the fields compare reads of raftly.bench.overload's
        ratio: float
        p99_ms: float
        peak_p99_ms: float
        errors: int
        rejected_503: int
        retry_after_503: int
        leader_changes: int

        def as_json(self) -> dict[str, object]:
            return {"ratio": self.ratio, "leader_changes": self.leader_changes}

    def bench_overload(peak_clients: int, seconds: float, *, factor: int,
                       **_: object) -> OverloadResult:
        calls.append(("overload", peak_clients * factor))
        return OverloadResult(0.95, 40.0, 30.0, 0, 12, 12, 0)

    fake_module("reads", bench_reads=bench_reads, bench_ceiling=bench_ceiling)
    fake_module("overload", bench_overload=bench_overload)
    monkeypatch.setattr(raftly.bench.sim, "sim_speed", lambda: 120.0)
    http_rates = {1: 500, 16: 3000, 64: 2900}
    monkeypatch.setattr(cmp, "run_system", lambda system, o, root, measured: [
        Sample(c, http_rates[c], 1.0, [0.002]) for c in o.clients])
    o = options(tmp_path, ["raftly-http"], 1)
    o.clients, o.extras = [1, 16, 64], True
    outcome = cmp.compare(o, say=lambda line: None)
    assert calls == [("linearizable", 64), ("stale", 64), ("ceiling", 64), ("overload", 64)], (
        "reads at 64 clients; overload at 4x the peak (16 clients)")
    verdict = {t.target: t.met for t in outcome.targets()}
    assert verdict["64 clients: linearizable reads/s >= 3x raftly-http puts/s"] is True
    assert verdict["64 clients: stale reads/s >= 80% of the HTTP ceiling "
                   "(GET /v1/status/s)"] is True
    assert verdict["overload (4x peak clients): goodput >= 90% of peak"] is True
    assert verdict["overload: no leader change"] is True
    assert verdict["overload: p99 <= 2x the peak's, every refusal a 503 with Retry-After"] is True
    assert verdict["simulator: 5 nodes, 500 cmd/virtual s >= 100x real time"] is True
    assert outcome.to_json()["extras"]["details"]["overload"]["ratio"] == 0.95


def test_an_extra_that_fails_is_said_and_the_others_still_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import raftly.bench.overload
    import raftly.bench.reads
    import raftly.bench.sim

    def broken(what: str) -> Callable[..., Any]:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(f"{what} broke")
        return fail

    monkeypatch.setattr(raftly.bench.reads, "bench_reads", broken("the reads"))
    monkeypatch.setattr(raftly.bench.overload, "bench_overload", broken("the overload"))
    monkeypatch.setattr(raftly.bench.sim, "sim_speed", broken("the simulator"))
    monkeypatch.setattr(cmp, "run_system", lambda system, o, root, measured: [
        Sample(c, 10, 1.0, [0.002]) for c in o.clients])
    said: list[str] = []
    o = options(tmp_path, ["raftly-lib"], 1)
    o.extras = True
    outcome = cmp.compare(o, say=said.append)
    assert "reads: failed: RuntimeError: the reads broke" in said
    assert "overload: failed: RuntimeError: the overload broke" in said
    assert "simulator: failed: RuntimeError: the simulator broke" in said
    assert outcome.rows()["raftly-lib"][4].rate == 10
    assert outcome.extras.sim_x_real_time is None


def processes_mentioning(text: str, also: str = "") -> list[int]:
    """Live processes (not zombies, not this one) whose command line contains ``text`` (and
    ``also``, not as a launcher's argument)."""
    import os

    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if also and (also not in cmdline or "raftly.bench.children" in cmdline):
            continue
        if text in cmdline and state != "Z" and int(proc.name) != os.getpid():
            found.append(int(proc.name))
    return found


def test_sigterm_mid_run_stops_every_node_process_and_removes_the_data(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    from polling import wait_until

    data = tmp_path / "data"
    data.mkdir()
    systems = "raftly-lib-3proc,raftly-http" + (",etcd-http" if shutil.which("etcd") else "")
    bench = subprocess.Popen([sys.executable, "-m", "raftly.bench", "--compare", "--clients",
                              "1", "--seconds", "30", "--systems", systems, "--no-extras",
                              "--dir", str(data), "--out", str(tmp_path / "out")],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        def nodes() -> list[int]:  # exec'd past the launcher, running the node itself
            return [pid for pid in processes_mentioning(str(data), "raftly.bench.library3")
                    if pid != bench.pid]

        wait_until("the first system's three node processes, their storage open",
                   lambda: len(nodes()) >= 3 and len(list(data.glob("*/*lib3*/n[123]"))) == 3,
                   timeout=60)
        bench.send_signal(signal.SIGTERM)
        output, _ = bench.communicate(timeout=60)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
    assert bench.returncode == 128 + signal.SIGTERM, output.decode()
    assert processes_mentioning(str(data)) == [], "no node process outlives the benchmark"
    assert not list(data.iterdir()), "the temporary data is removed"

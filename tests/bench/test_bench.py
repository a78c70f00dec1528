"""Smoke test of ``raftly bench``: the library-API benchmark runs end to end (timing untested);
its progress line and summary line."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

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


def test_tls_ratios_divide_tls_by_plain_per_level() -> None:
    from raftly.bench import Row, format_ratios

    plain = [Row(1, 500.0, 2.0, 3.0, 0, 1, 1), Row(64, 4000.0, 10.0, 20.0, 0, 1, 1)]
    tls = [Row(1, 400.0, 2.5, 4.0, 0, 1, 1), Row(64, 3000.0, 15.0, 30.0, 0, 1, 1)]
    lines = format_ratios(plain, tls).splitlines()
    assert lines[1].split() == ["1", "500", "400", "0.80", "2.00", "2.50", "1.25"]
    assert lines[2].split() == ["64", "4000", "3000", "0.75", "10.00", "15.00", "1.50"]


def test_tls_bench_defaults_to_1_and_64_clients_unless_told() -> None:
    from raftly.bench.cli import build_parser, chosen_levels

    def levels(*argv: str) -> list[int]:
        args = build_parser().parse_args(list(argv))
        return chosen_levels(args.clients, tls=args.tls)

    assert levels("--tls") == [1, 64]
    assert levels() == [1, 16, 64, 256]
    assert levels("--tls", "--clients", "8") == [8]


def test_http_bench_runs_over_tls(tmp_path: Path) -> None:
    from raftly.bench import bench_http

    (sample,) = bench_http([2], 0.5, fsync="never", base_dir=tmp_path, warmup=0.2, tls=True)
    assert sample.ops > 0 and sample.errors == 0, sample
    assert not list(tmp_path.iterdir()), "the temporary directory (certificates too) is removed"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_counts_measurements_of_every_kind_run_and_level() -> None:
    import io

    from raftly.bench.progress import BenchProgress
    from raftly.progress import ProgressLine

    clock = FakeClock()
    out = io.StringIO()
    shown = BenchProgress(ProgressLine(out, enabled=True, width=lambda: 300), ["HTTP", "library"],
                          runs=2, levels=[1, 64], clock=clock)
    assert shown.total == 8
    shown.begin("HTTP", 1)
    assert out.getvalue().endswith(
        "\rbench [................] 0/8 measured | 0:00 elapsed | HTTP run 1/2, 1 clients"
        "\x1b[K")
    clock.now = 10.0
    shown.measured(Sample(1, 10, 1.0, [0.1] * 10))
    assert shown.render() == ("bench [##..............] 1/8 measured | 0:10 elapsed, ETA 1:10 "
                              "| HTTP run 1/2, 64 clients")
    shown.measured(Sample(64, 10, 1.0, [0.1] * 10))
    assert shown.render().endswith("| HTTP run 1/2 measured, stopping its cluster")
    clock.now = 75.0
    assert shown.summary() == ("raftly bench: 2 measurements (HTTP, library: 2 run(s) x 2 "
                               "levels) in 1:15")


def test_bench_draws_progress_only_when_asked_off_a_terminal_and_ends_with_a_summary(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    from raftly.bench import main

    args = ["--mode", "library", "--clients", "2,3", "--seconds", "0.2", "--fsync", "never",
            "--dir", str(tmp_path)]
    summary = re.compile(r"raftly bench: 2 measurements \(library: 1 run\(s\) x 2 levels\) "
                         r"in \d+:\d\d")
    assert main(args) == 0
    quiet = capsys.readouterr()
    assert "\r" not in quiet.err and "\x1b[" not in quiet.err, "stderr is not a terminal"
    assert summary.fullmatch(quiet.out.splitlines()[-1])
    monkeypatch.setenv("COLUMNS", "200")  # the forced line's width: no terminal to ask
    assert main([*args, "--progress"]) == 0
    drawn = capsys.readouterr()
    frames = [f.removesuffix("\x1b[K") for f in drawn.err.split("\r")]
    assert any(f.endswith("0/2 measured | 0:00 elapsed | library run 1/1, 2 clients")
               for f in frames)
    assert any("1/2 measured" in f and f.endswith("library run 1/1, 3 clients")
               for f in frames)
    assert drawn.err.endswith("\r\x1b[K"), "erased before the table and the summary"
    assert summary.fullmatch(drawn.out.splitlines()[-1])

"""``raftly check``'s progress line (raftly/check/progress.py) and its summary line: on a
terminal the run shows its phase, time, ops and faults, then erases the line and ends with one
summary line; off a terminal it draws nothing and ends with the same line."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from terminal import CONTROL, run_on_terminal

from raftly.check.history import HistoryWriter, NemesisLog
from raftly.check.progress import UNDER_FAULTS, RunProgress
from raftly.check.runner import main
from raftly.progress import ProgressLine

SUMMARY = re.compile(r"(PASS|FAIL) in \d+:\d\d: (\d+) ops \((\d+) ok\) under (\d+) faults, "
                     r"(linearizable|not linearizable|unknown), (\d+) lost writes, "
                     r"(\d+) problems; report (.+)")
RUN = ["--nodes", "3", "--time", "4", "--clients", "3", "--keys", "2", "--nemesis", "kill"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def assert_summary(line: str, out: Path) -> None:
    """The last line says what result.json says."""
    match = SUMMARY.fullmatch(line)
    assert match, line
    result = json.loads((out / "result.json").read_text())
    verdict, ops, ok, faults, lost, problems = (match[1], *map(int, match.group(2, 3, 4)),
                                                int(match[6]), int(match[7]))
    assert verdict == ("PASS" if result["ok"] else "FAIL")
    assert ops == sum(result["counts"].values()) and ok == result["counts"]["ok"]
    assert (faults, lost, problems) == (result["faults"], len(result["lost"]),
                                        len(result["problems"]))
    assert match[8] == str(out / "report.html")


def test_the_line_names_the_phase_and_counts_ops_by_outcome_and_faults() -> None:
    clock = FakeClock()
    out = io.StringIO()
    history, nlog = HistoryWriter(), NemesisLog()
    shown = RunProgress(ProgressLine(out, enabled=True, interval=0, width=lambda: 300),
                        history, nlog, duration=60.0, clock=clock)
    clock.now += 5
    shown.enter("waiting for a leader")
    assert out.getvalue().endswith(
        "\rcheck: waiting for a leader | 0 ops, 0 faults | 0:05 elapsed | 0 ok, 0 fail, 0 info"
        "\x1b[K")
    shown.enter(UNDER_FAULTS)
    for process, outcome in enumerate(("ok", "ok", "fail", "info")):
        history.record(process, "invoke", "write", "k", f"v{process}")
        history.record(process, outcome, "write", "k", f"v{process}")
    history.record(9, "invoke", "read", "k", None)  # still open: not done
    nlog.start("kill", {"node": "n1"})
    clock.now += 15
    assert shown.render() == ("check [####............] 15/60 s under faults | 4 ops, 1 faults | "
                              "0:20 elapsed | 2 ok, 1 fail, 1 info")
    history.record(9, "ok", "read", "k", "v0")
    clock.now += 100  # the bar stops at --time
    assert shown.render().startswith(
        "check [################] 60/60 s under faults | 5 ops, 1 faults |")


def test_a_run_on_a_terminal_shows_its_progress_then_erases_it_for_the_summary(
        tmp_path: Path) -> None:
    out = tmp_path / "run"
    term = run_on_terminal(["-m", "raftly.check.runner", *RUN, "--seed", "3",
                            "--out", str(out)])
    assert term.code == 0, term.stdout + term.screen[-2000:]
    frames = [f.removesuffix("\x1b[K") for f in term.screen.split("\r") if f.startswith("check")]
    phases = [f.split(" | ")[0] for f in frames]
    for phase in ("check: starting the nodes", "check: waiting for a leader",
                  "check: healed, recovering",
                  "check: checking the history (up to 60 s)"):
        assert phase in phases
    under = [f for f in frames if "/4 s under faults | " in f]
    assert under and re.search(r" [1-9]\d* ops, ", under[-1]), "ops counted as they complete"
    # The last frame, drawn as the checker starts, counts every op and every fault of the run.
    result = json.loads((out / "result.json").read_text())
    assert f"| {sum(result['counts'].values())} ops, {result['faults']} faults |" in frames[-1]
    assert term.screen.endswith("\r\x1b[K"), "erased before the results"
    assert not any(c in term.stdout for c in CONTROL)
    assert_summary(term.stdout.splitlines()[-1], out)


def test_off_a_terminal_a_run_draws_nothing_and_ends_with_the_summary_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main([*RUN, "--seed", "4", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert not any(c in captured.err for c in CONTROL)
    assert_summary(captured.out.splitlines()[-1], out)

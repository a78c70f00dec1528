"""Helpers of the real-run tests of ``raftly check``: run one, and prove it left nothing behind
(no node process, no mount)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from raftly.check.runner import main


def run_check(out: Path, *args: str) -> tuple[int, dict[str, object]]:
    code = main([*args, "--out", str(out)])
    result = json.loads((out / "result.json").read_text())
    assert (out / "report.html").stat().st_size > 1000
    assert (out / "history.jsonl").exists() and (out / "nemesis.jsonl").exists()
    return code, result


def assert_no_node_left(out: Path) -> None:
    """Every node process was stopped: none of them still runs with this run's data dir."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        # The launcher before its exec, or the node (raftly serve) after it.
        if ("raftly.localcluster" in cmd or "raftly.cli" in cmd) and str(out) in cmd:
            os.kill(int(pid), signal.SIGKILL)
            pytest.fail(f"node process {pid} outlived the run: {cmd!r}")


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` (from this process's mount table)."""
    root = str(path.resolve())
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p == root or p.startswith(root + "/")]

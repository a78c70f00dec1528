"""Real runs: node processes, proxies, faults, clients, checker, report, end to end.

The two short runs must come out linearizable; the run against the deliberately broken build
(stale local reads, RAFTLY_UNSAFE_STALE_READS) must be caught. Longer runs need --slow.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from check_helpers import assert_no_node_left, run_check


def assert_passed(code: int, result: dict[str, object], out: Path) -> None:
    assert code == 0, f"run failed, see {out / 'report.html'}: {result}"
    assert result["verdict"] == "ok" and result["lost"] == [] and result["problems"] == []
    counts = result["counts"]
    assert isinstance(counts, dict) and counts["ok"] > 100
    assert isinstance(result["faults"], int) and result["faults"] >= 2


def test_partition_and_kill_three_nodes(tmp_path: Path) -> None:
    out = tmp_path / "pk"
    code, result = run_check(out, "--nodes", "3", "--time", "15", "--clients", "6",
                             "--keys", "4", "--nemesis", "partition,kill", "--seed", "11",
                             "--log-format", "json")
    assert_no_node_left(out)
    assert_passed(code, result, out)
    # --log-format reached the nodes: their logs are JSON lines (less the start markers).
    for name in ("n1", "n2", "n3"):
        lines = (out / "logs" / f"{name}.log").read_text().splitlines()
        events = [json.loads(line)["event"] for line in lines if not line.startswith("--- ")]
        assert "membership_changed" in events


def test_pause_and_kill_five_nodes(tmp_path: Path) -> None:
    out = tmp_path / "pause"
    code, result = run_check(out, "--nodes", "5", "--time", "15", "--clients", "6",
                             "--keys", "4", "--nemesis", "pause,kill", "--seed", "12")
    assert_no_node_left(out)
    assert_passed(code, result, out)


def test_the_txn_workload_with_short_leases_is_linearizable_under_partitions_and_kills(
        tmp_path: Path) -> None:
    out = tmp_path / "txn"
    code, result = run_check(out, "--nodes", "3", "--time", "15", "--clients", "6",
                             "--keys", "4", "--nemesis", "partition,kill", "--seed", "13",
                             "--workload", "txn")
    assert_no_node_left(out)
    assert_passed(code, result, out)
    ops = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    # Compares that found another value are recorded as failed cas, as the kv workload's 412s.
    assert any(op["type"] == "fail" and op.get("reason") == "412 cas miss" for op in ops)
    # Short leases expired during the run, their keys with them; all of it was checked: the
    # deletes completed, reads saw leased values and then saw them gone, and writes on
    # ended leases were refused.
    expiries = [op for op in ops if op.get("reason") == "lease expiry"]
    assert expiries and {op["type"] for op in expiries} == {"invoke", "ok"}
    assert len([op for op in expiries if op["type"] == "ok"]) * 2 == len(expiries)
    leased_reads = [op for op in ops if op["key"].startswith("lease") and op["f"] == "read"
                    and op["type"] == "ok"]
    assert any(op["value"] is not None for op in leased_reads)
    assert any(op["value"] is None for op in leased_reads)
    assert any(op.get("reason") == "404 lease ended" for op in ops)


def test_the_harness_catches_stale_reads(tmp_path: Path) -> None:
    """A build whose GETs skip ReadIndex, partitioned: a node cut off from the majority keeps
    answering reads from its old state while the majority moves on."""
    out = tmp_path / "broken"
    code, result = run_check(out, "--nodes", "3", "--time", "10", "--clients", "6",
                             "--keys", "2", "--nemesis", "partition", "--seed", "2",
                             "--unsafe-stale-reads")
    assert_no_node_left(out)
    assert code == 1
    assert result["verdict"] == "not linearizable"
    report = (out / "report.html").read_text()
    assert "Shortest anomaly" in report


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sixty_seconds_all_nemeses(tmp_path: Path, seed: int) -> None:
    out = tmp_path / f"long{seed}"
    code, result = run_check(out, "--nodes", "5", "--time", "60", "--clients", "10",
                             "--keys", "8", "--nemesis", "partition,kill,pause",
                             "--seed", str(seed))
    assert_no_node_left(out)
    assert_passed(code, result, out)


def test_membership_changes_under_partitions(tmp_path: Path) -> None:
    """Nodes added, removed and the leader replaced while partitions come and go: still
    linearizable, nothing lost, the removed nodes exited on their own, and the run ends with
    the members the changes left (checked by the run against the cluster's own list)."""
    out = tmp_path / "members"
    code, result = run_check(out, "--nodes", "4", "--time", "20", "--clients", "6",
                             "--keys", "4", "--nemesis", "partition,membership", "--seed", "5")
    assert_no_node_left(out)
    assert_passed(code, result, out)
    events = [json.loads(line) for line in (out / "nemesis.jsonl").read_text().splitlines()]
    started = {e["value"]["op"] for e in events if e["f"] == "membership"
               and e["phase"] == "start"}
    assert started == {"add", "remove", "replace-leader"}  # seed 5 plans one of each
    ended = [e["value"] for e in events if e["f"] == "membership" and e["phase"] == "end"]
    assert len(ended) == 3 and all("problem" not in c for c in ended)

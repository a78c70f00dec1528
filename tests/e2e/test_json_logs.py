"""``raftly serve --log-format json`` on real processes: every line a node writes is one JSON
object, and a leader kill leaves the election in the survivors' logs as events with fields."""

from __future__ import annotations

import contextlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import ELECTION_TIMEOUT, HEARTBEAT, cli, started
from polling import wait_until

from raftly.localcluster import ProcessCluster, plan_loopback

BASE_KEYS = {"time", "level", "node", "logger", "event", "message"}


def _lines(cluster: ProcessCluster, name: str) -> list[dict[str, Any]]:
    """Node ``name``'s log lines, each parsed (the cluster's own start markers left out)."""
    path = cluster.nodes[name].log_path
    assert path is not None
    lines = []
    for text in path.read_text().splitlines():
        if text.startswith("--- start "):  # written by ProcessCluster, not by the node
            continue
        line = json.loads(text)
        assert isinstance(line, dict) and set(line) >= BASE_KEYS, text
        assert line["node"] == name
        datetime.fromisoformat(line["time"])
        lines.append(line)
    return lines


def _events(cluster: ProcessCluster, name: str, event: str) -> list[dict[str, Any]]:
    return [line for line in _lines(cluster, name) if line["event"] == event]


def test_json_logs_parse_line_by_line_and_hold_the_election_after_a_leader_kill(
        tmp_path: Path) -> None:
    cluster = ProcessCluster(tmp_path, plan_loopback(3), election_timeout=ELECTION_TIMEOUT,
                             heartbeat=HEARTBEAT, log_format="json")
    with contextlib.contextmanager(started)(cluster):
        assert "--log-format" in cluster.serve_args("n1")
        old, _ = cluster.wait_for_leader(timeout=30.0)
        cluster.kill(old)
        survivors = [n for n in cluster.names if n != old]
        new, status = cluster.wait_for_leader(timeout=30.0, among=survivors)
        raft_id = status["raft_id"]
        won = wait_until("the new leader's election_won line", lambda: [
            e for e in _events(cluster, new, "election_won") if e["term"] == status["term"]])
        assert won[0]["role"] == "leader" and won[0]["leader"] == raft_id
        assert won[0]["message"] == (f"node {raft_id} is leader in term {status['term']} "
                                     f"(leader: {raft_id}): won the election")  # the text's
        assert won[0]["previous_role"] == "candidate" and won[0]["reason"] == "won the election"
        started_ = _events(cluster, new, "election_started")
        assert any(e["term"] == status["term"] and e["role"] == "candidate"
                   and e["reason"] in ("won the pre-vote",
                                       "election timeout: no message from a leader")
                   for e in started_)
        other = next(n for n in survivors if n != new)
        followed = wait_until("the other survivor following the new leader", lambda: [
            e for e in _lines(cluster, other) if e["event"] in ("role_changed", "election_lost")
            and e.get("leader") == raft_id and e["term"] == status["term"]])
        assert followed[0]["role"] == "follower" and followed[0]["reason"]
        for name in survivors:
            changes = _events(cluster, name, "membership_changed")
            assert changes and changes[0]["voters"] == [1, 2, 3] and changes[0]["learners"] == []
        # Every line of the killed node up to its end parses too (it was killed between lines).
        assert _events(cluster, old, "election_won")


@pytest.mark.parametrize("extra", [(), ("--tls-cert", "node.crt")])
def test_a_node_that_will_not_start_says_why_in_a_json_line(tmp_path: Path,
                                                             extra: tuple[str, ...]) -> None:
    """The fatal error (a missing cluster file; a usage mistake found before any start) is a
    ``node_failed`` event with its reason, and no line of stderr is anything but JSON."""
    run = cli("serve", "--log-format", "json", "--cluster", str(tmp_path / "missing.toml"),
              "--id", "n1", "--data-dir", str(tmp_path / "n1"), *extra)
    assert run.code == (2 if extra else 1)
    lines = [json.loads(text) for text in run.err.splitlines()]
    failed = [line for line in lines if line["event"] == "node_failed"]
    assert len(failed) == 1 and failed[0]["level"] == "ERROR" and failed[0]["node"] == "n1"
    assert ("go together" if extra else "missing.toml") in failed[0]["reason"]
    assert failed[0]["message"] == failed[0]["reason"]

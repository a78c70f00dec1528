"""The ``raftly status`` table: a learner's row says so."""

from __future__ import annotations

from raftly.cli.status_table import format_table


def _status(name: str, raft_id: int, role: str, learners: list[int]) -> dict[str, object]:
    return {"id": name, "raft_id": raft_id, "role": role, "term": 3, "commit_index": 9,
            "applied_index": 9, "first_index": 1, "last_index": 9, "snapshot_index": 0,
            "log_bytes": 100, "leader": "n1",
            "learners": [{"id": f"n{i}", "raft_id": i, "api": None} for i in learners]}


def test_a_learner_is_shown_as_learner_and_a_voter_by_its_role() -> None:
    lines = list(format_table({"n1": _status("n1", 1, "leader", [4]),
                               "n4": _status("n4", 4, "follower", [4])}))
    assert lines[1].split()[:2] == ["n1", "leader"]
    assert lines[2].split()[:2] == ["n4", "learner"]

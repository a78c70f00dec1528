"""Structured log events: the JSON line format and the names of role changes."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

import pytest

from raftly.logevents import JsonFormatter, event, role_event, role_transition


def _record(msg: str, *args: object, extra: dict[str, object] | None = None,
            exc_info: object = None) -> logging.LogRecord:
    record = logging.getLogger("raftly.test").makeRecord(
        "raftly.test", logging.INFO, __file__, 1, msg, args, exc_info)  # type: ignore[arg-type]
    for key, value in (extra or {}).items():
        setattr(record, key, value)
    return record


def test_an_event_line_holds_the_base_keys_then_the_fields() -> None:
    record = _record("node %s is %s", 1, "leader",
                     extra=event("role_changed", role="leader", term=5, leader=1))
    line = json.loads(JsonFormatter("n1").format(record))
    assert line == {"time": line["time"], "level": "INFO", "node": "n1", "logger": "raftly.test",
                    "event": "role_changed", "message": "node 1 is leader", "role": "leader",
                    "term": 5, "leader": 1}
    assert line["time"].endswith("Z")
    when = datetime.fromisoformat(line["time"])
    assert when.tzinfo is not None and when.utcoffset() == UTC.utcoffset(None)
    assert abs(when.timestamp() - record.created) < 0.001


def test_a_plain_line_is_the_log_event_without_fields() -> None:
    line = json.loads(JsonFormatter(None).format(_record("hello %d", 3)))
    assert line["event"] == "log" and line["message"] == "hello 3" and line["node"] is None
    assert set(line) == {"time", "level", "node", "logger", "event", "message"}


def test_an_exception_goes_into_one_line_as_its_traceback() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        text = JsonFormatter("n1").format(_record("failed", exc_info=sys.exc_info()))
    assert "\n" not in text
    line = json.loads(text)
    assert "RuntimeError: boom" in line["traceback"]


def test_fields_that_json_cannot_hold_become_text_rather_than_breaking_the_line() -> None:
    line = json.loads(JsonFormatter("n1").format(
        _record("x", extra=event("membership_changed", voters={1}, path=object()))))
    assert line["voters"] == "{1}" and isinstance(line["path"], str)


def test_a_field_may_not_overwrite_a_key_of_the_line() -> None:
    with pytest.raises(ValueError, match="reserved"):
        event("role_changed", message="x")
    with pytest.raises(ValueError, match="reserved"):
        event("role_changed", node="n2")


@pytest.mark.parametrize(("old", "new", "old_term", "new_term", "name"), [
    ("follower", "pre-candidate", 4, 4, "pre_vote_started"),
    ("pre-candidate", "candidate", 4, 5, "election_started"),
    ("follower", "candidate", 4, 5, "election_started"),
    ("candidate", "leader", 5, 5, "election_won"),
    ("follower", "leader", 4, 5, "election_won"),  # a single voter wins within one step
    ("candidate", "follower", 5, 5, "election_lost"),
    ("pre-candidate", "follower", 4, 6, "election_lost"),
    ("leader", "follower", 5, 6, "role_changed"),  # a step down
    ("follower", "follower", 5, 5, "role_changed"),  # a leader learned
    ("candidate", "candidate", 5, 6, "election_started"),  # a split vote: the next round
])
def test_role_transitions_are_named_by_what_happened(old: str, new: str, old_term: int,
                                                     new_term: int, name: str) -> None:
    assert role_transition(old, new, old_term, new_term) == name


def test_a_role_event_carries_the_state_before_and_after() -> None:
    extra = role_event("candidate", 5, "leader", 5, 2, "won the election")
    assert extra == event("election_won", role="leader", term=5, leader=2,
                          previous_role="candidate", previous_term=5, reason="won the election")
    assert role_event(None, 0, "follower", 0, None) == event(
        "role_changed", role="follower", term=0, leader=None, previous_role=None,
        previous_term=0, reason=None)


def test_a_role_event_takes_the_core_roles_as_they_are() -> None:
    from raftly.core.node import Role

    assert role_event(Role.CANDIDATE, 5, Role.LEADER, 5, 2) == role_event(
        "candidate", 5, "leader", 5, 2)

"""``raftly status --watch`` without a cluster: who leads, when the leader changed, what a frame
shows on a terminal and off one, and leaving on Ctrl-C with the cursor shown again."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import pytest

from raftly.cli import main
from raftly.cli.status import StatusPoll
from raftly.cli.status_watch import (
    BOLD,
    HIDE_CURSOR,
    HOME,
    RESET,
    REVERSE,
    SHOW_CURSOR,
    LeaderWatch,
    frame,
    leader_of,
    watch,
)


def _node(name: str, role: str, term: int, leader: str | None) -> dict[str, Any]:
    return {"id": name, "raft_id": int(name[1:]), "role": role, "term": term,
            "commit_index": 9, "applied_index": 9, "leader": leader}


def _poll(leader: str | None, term: int, down: str | None = None) -> StatusPoll:
    rows: dict[str, dict[str, Any] | None] = {
        name: None if name == down else
        _node(name, "leader" if name == leader else "follower", term, leader)
        for name in ("n1", "n2", "n3")}
    problems = [f"{down}: unreachable at 127.0.0.1:1 (refused)"] if down else []
    return StatusPoll({}, rows, problems)


def test_the_leader_is_the_one_that_says_so_in_the_highest_term() -> None:
    rows = _poll("n1", 3).rows
    rows["n2"] = _node("n2", "leader", 4, "n2")  # n1 is a deposed leader that has not heard yet
    assert leader_of(rows) == ("n2", 4)
    assert leader_of(_poll(None, 3).rows) is None


def test_a_change_of_leader_is_noticed_but_an_election_gap_is_not_a_change() -> None:
    leaders = LeaderWatch()
    assert leaders.update(_poll("n1", 3).rows, 10.0, "12:00:00") is None  # the first one seen
    assert leaders.update(_poll(None, 4, down="n1").rows, 11.0, "12:00:01") is None
    assert leaders.update(_poll("n2", 4, down="n1").rows, 12.0, "12:00:02") == \
        "leader changed: n1 -> n2 (term 4)"
    assert leaders.update(_poll("n2", 4, down="n1").rows, 13.0, "12:00:03") is None
    assert list(leaders.changes) == ["12:00:02 leader changed: n1 -> n2 (term 4)"]
    assert leaders.fresh(13.0) and not leaders.fresh(30.0)


def test_a_terminal_frame_shows_the_leader_row_bold_and_a_new_leader_reversed() -> None:
    leaders = LeaderWatch()
    leaders.update(_poll("n1", 3).rows, 0.0, "12:00:00")
    lines = frame(_poll("n1", 3), leaders, interval=1.0, clock="12:00:00", now=0.0, width=200)
    assert lines[0].startswith("raftly status every 1s, 12:00:00, leader n1 (term 3)")
    assert lines[2].startswith(BOLD + "n1") and lines[2].endswith(RESET)
    assert REVERSE not in "".join(lines)
    assert not lines[3].startswith("\x1b")

    after = _poll("n2", 4, down="n1")
    leaders.update(after.rows, 5.0, "12:00:05")
    lines = frame(after, leaders, interval=1.0, clock="12:00:05", now=5.0, width=200)
    assert lines[2].split()[:2] == ["n1", "unreachable"]
    assert lines[3].startswith(BOLD + REVERSE + "n2")
    assert "! n1: unreachable at 127.0.0.1:1 (refused)" in lines
    assert lines[-1] == "12:00:05 leader changed: n1 -> n2 (term 4)"


def test_a_plain_frame_has_no_escape_sequences_and_a_terminal_frame_fits_its_width() -> None:
    leaders = LeaderWatch()
    poll = _poll("n1", 3, down="n3")
    leaders.update(poll.rows, 0.0, "12:00:00")
    plain = frame(poll, leaders, interval=0.5, clock="12:00:00", now=0.0)
    assert "\x1b" not in "".join(plain)
    narrow = frame(poll, leaders, interval=0.5, clock="12:00:00", now=0.0, width=30)
    for line in narrow:
        assert len(line.replace(BOLD, "").replace(RESET, "")) <= 29


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _polls(*results: StatusPoll) -> Any:
    """A poll that answers ``results`` in turn, then is interrupted as by Ctrl-C."""
    queue = list(results)

    def poll() -> StatusPoll:
        if not queue:
            raise KeyboardInterrupt
        return queue.pop(0)
    return poll


def test_on_a_terminal_it_redraws_in_place_and_leaves_on_ctrl_c_with_the_cursor_shown() -> None:
    out = _Terminal()
    assert watch(_polls(_poll("n1", 3), _poll("n2", 4, down="n1")), 0.001, out) == 0
    text = out.getvalue()
    assert text.startswith(HIDE_CURSOR)
    assert text.count(HOME) == 3  # once to clear, then once per frame
    assert "leader changed: n1 -> n2 (term 4)" in text
    assert text.endswith(RESET + SHOW_CURSOR)


def test_off_a_terminal_the_frames_follow_one_another_without_escapes() -> None:
    out = io.StringIO()
    assert watch(_polls(_poll("n1", 3), _poll("n2", 4, down="n1")), 0.001, out) == 0
    text = out.getvalue()
    assert "\x1b" not in text
    assert text.count("raftly status every") == 2
    assert text.count("leader changed: n1 -> n2 (term 4)") == 1


@pytest.mark.parametrize(("argv", "message"), [
    (["status", "--interval", "2"], "--interval goes with --watch"),
    (["status", "--watch", "--json"], "--watch draws the table: leave out --json"),
])
def test_watch_options_that_make_no_sense_are_usage_errors(argv: list[str],
                                                           message: str) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main([*argv, "--endpoints", "127.0.0.1:1"]) == 2
    assert message in err.getvalue()

"""The progress line (raftly/progress.py): drawn on a terminal, silent on a pipe, rate-limited,
cut to the width, out of the way of other output and log lines, erased at the end."""

from __future__ import annotations

import io
import logging

import pytest
from terminal import CONTROL, run_on_pipe, run_on_terminal

from raftly.progress import (
    DEFAULT_WIDTH,
    ProgressLine,
    bar,
    clock_time,
    counting_line,
    draws_on,
    time_left,
)

# A child that draws three updates the way a command does, with the default detection (or what
# argv[1] forces), prints a result on stdout, and closes the line.
CHILD = """
import sys
from raftly.progress import ProgressLine
forced = {"on": True, "off": False}.get(sys.argv[1] if len(sys.argv) > 1 else "")
with ProgressLine(enabled=forced, interval=0) as p:
    for i in range(3):
        p.update(f"working {i}/3")
    p.echo("result line")
    p.update("working 3/3")
print("summary: done")
"""


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def line(stream: io.StringIO | None = None, width: int = 100,
         clock: FakeClock | None = None, interval: float = 1.0) -> tuple[ProgressLine,
                                                                          io.StringIO]:
    out = stream if stream is not None else io.StringIO()
    return ProgressLine(out, enabled=True, interval=interval, clock=clock or FakeClock(),
                        width=lambda: width), out


def test_a_terminal_shows_each_update_in_place_and_the_line_is_erased_at_the_end() -> None:
    term = run_on_terminal(["-c", CHILD])
    assert term.code == 0
    for i in range(4):
        assert f"\rworking {i}/3\x1b[K" in term.screen
    assert term.screen.endswith("\r\x1b[K"), "the line is erased before the summary"
    # The result printed in between: the line was erased first, then drawn again after it.
    assert term.stdout == "result line\nsummary: done\n"
    assert term.screen.index("working 2/3") < term.screen.index("\r\x1b[K") < term.screen.index(
        "working 3/3")


def test_a_pipe_gets_nothing_unless_forced_and_a_terminal_nothing_when_refused() -> None:
    piped = run_on_pipe(["-c", CHILD])
    assert piped.code == 0 and piped.screen == ""
    assert piped.stdout == "result line\nsummary: done\n"
    forced = run_on_pipe(["-c", CHILD, "on"])
    assert "\rworking 0/3\x1b[K" in forced.screen
    refused = run_on_terminal(["-c", CHILD, "off"])
    assert refused.code == 0 and refused.screen == ""
    assert refused.stdout == "result line\nsummary: done\n"


def test_a_dumb_terminal_gets_no_cursor_control() -> None:
    term = run_on_terminal(["-c", CHILD], env={"TERM": "dumb"})
    assert term.code == 0 and not any(c in term.screen for c in CONTROL)


def test_draws_on_is_false_for_files_and_closed_streams() -> None:
    closed = io.StringIO()
    closed.close()
    assert not draws_on(io.StringIO()) and not draws_on(closed)


def test_redraws_are_rate_limited_by_the_clock() -> None:
    clock = FakeClock()
    p, out = line(clock=clock, interval=1.0)
    p.update("a")  # first draw: at once
    clock.now = 0.5
    p.update("b")  # too soon: dropped
    clock.now = 0.99
    p.update("c")  # still too soon
    clock.now = 1.0
    p.update("d")  # a second after "a"
    clock.now = 1.5
    p.update("e")
    p.update("f", force=True)  # a new phase is never dropped
    assert out.getvalue() == "\ra\x1b[K\rd\x1b[K\rf\x1b[K"


def test_after_other_output_the_line_comes_back_at_once(capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    clock = FakeClock()
    p, out = line(clock=clock, interval=10.0)
    p.update("one")
    p.echo("other output")
    p.update("two")  # the line is blank since the echo: no waiting for the rate limit
    assert out.getvalue() == "\rone\x1b[K\r\x1b[K\rtwo\x1b[K"
    assert capsys.readouterr().out == "other output\n"


def test_clear_and_close_erase_only_a_drawn_line_and_close_stops_drawing() -> None:
    p, out = line()
    p.clear()
    assert out.getvalue() == "", "nothing drawn: nothing to erase"
    p.update("x")
    p.close()
    p.update("y")
    p.close()
    assert out.getvalue() == "\rx\x1b[K\r\x1b[K"


def test_a_disabled_line_writes_nothing() -> None:
    out = io.StringIO()
    with ProgressLine(out, enabled=False) as p:
        p.update("x", force=True)
        p.clear()
    assert out.getvalue() == ""


def test_the_line_is_cut_to_the_width_and_kept_on_one_line() -> None:
    p, out = line(width=10)
    p.update("0123456789abcdef\nmore")
    assert out.getvalue() == "\r012345678\x1b[K", "one column spare, never wraps"


def test_the_width_comes_from_columns_then_the_terminal_then_a_default(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    out = io.StringIO()
    ProgressLine(out, enabled=True).update("x" * 200)
    assert out.getvalue() == "\r" + "x" * (DEFAULT_WIDTH - 1) + "\x1b[K"
    monkeypatch.setenv("COLUMNS", "30")
    out = io.StringIO()
    ProgressLine(out, enabled=True).update("x" * 200)
    assert out.getvalue() == "\r" + "x" * 29 + "\x1b[K"
    narrow = run_on_terminal(["-c", CHILD.replace('f"working {i}/3"', '"y" * 100')], columns=50)
    assert "\r" + "y" * 49 + "\x1b[K" in narrow.screen


def test_a_log_record_erases_the_line_before_it_is_written_until_close() -> None:
    out = io.StringIO()
    p, _ = line(stream=out)
    handler = logging.StreamHandler(out)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        p.clear_before_logging()
        p.clear_before_logging()  # twice: still one guard per handler
        assert len(handler.filters) == 1
        p.update("busy")
        logging.getLogger("raftly.test").warning("something happened")
        p.update("busy again")
        p.close()
        assert not handler.filters, "the guard is removed by close"
        assert logging.lastResort is None or not logging.lastResort.filters
    finally:
        root.removeHandler(handler)
    assert out.getvalue() == ("\rbusy\x1b[K\r\x1b[Ksomething happened\n\rbusy again\x1b[K"
                              "\r\x1b[K")


def test_a_stream_that_fails_turns_the_line_off_instead_of_crashing() -> None:
    out = io.StringIO()
    p, _ = line(stream=out)
    out.close()
    p.update("x")
    assert not p.enabled


def test_bar_clock_time_and_time_left() -> None:
    assert bar(0, 10) == "[" + "." * 16 + "]"
    assert bar(0, 10, width=10) == "[..........]"
    assert bar(5, 10, width=10) == "[#####.....]"
    assert bar(12, 10, width=10) == "[##########]"
    assert bar(3, 0, width=4) == "[....]"
    assert [clock_time(s) for s in (0, 7.9, 65, 3725)] == ["0:00", "0:07", "1:05", "1:02:05"]
    assert time_left(10.0, 0, 20) is None, "no pace yet"
    assert time_left(10.0, 5, 20) == 30.0
    assert time_left(10.0, 20, 20) == 0.0


def test_counting_line_shows_count_fields_elapsed_and_eta() -> None:
    assert counting_line("fuzz", 5, 20, "seeds", elapsed=10.0, fields=["1 failed"]) == (
        "fuzz [####............] 5/20 seeds | 1 failed | 0:10 elapsed, ETA 0:30")
    assert counting_line("fuzz", 0, 20, "seeds", elapsed=1.0).endswith("| 0:01 elapsed")
    assert counting_line("fuzz", 20, 20, "seeds", elapsed=9.0).endswith("| 0:09 elapsed")

"""The history model: loading, dumping and pairing events, and the errors for malformed ones."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from typing import Any

import pytest

from raftly.testing.history import (
    Event,
    HistoryError,
    dump_history,
    load_history,
    pair_events,
    pair_operations,
)


def test_dump_and_load_keep_extra_fields_and_cas_lists() -> None:
    lines = [
        '{"process": 0, "type": "invoke", "f": "cas", "key": "k", "value": ["a", "b"], "time": 1}',
        '{"process": 0, "type": "fail", "f": "cas", "key": "k", "value": ["a", "b"], "time": 2,'
        ' "error": "precondition failed"}',
        "",
        '{"process": "nemesis", "type": "info", "f": "partition", "value": "halves", "time": 3}',
    ]
    events = load_history(lines)
    assert len(events) == 2
    assert events[0].value == ("a", "b")
    assert events[1].extra == {"error": "precondition failed"}
    buf = io.StringIO()
    dump_history(events, buf)
    again = load_history(buf.getvalue().splitlines())
    assert again == events and again[1].extra == events[1].extra
    assert json.loads(buf.getvalue().splitlines()[0])["value"] == ["a", "b"]


def test_events_can_be_loaded_from_dicts() -> None:
    dicts: list[dict[str, Any]] = [
        {"process": 1, "type": "invoke", "f": "read", "key": 7, "time": 0},
        {"process": 1, "type": "ok", "f": "read", "key": 7, "value": None, "time": 1},
    ]
    events = load_history(dicts)
    [op] = pair_operations(events)
    assert (op.key, op.output, op.call, op.ret, op.status) == (7, None, 0, 1, "ok")
    assert op.describe() == "#0 p1 read 7 -> None ok [0, 1]"


def inv(p: Any, f: str = "write", key: str = "k", value: Any = "a", t: int = 0,
        type_: str = "invoke") -> str:
    return json.dumps({"process": p, "type": type_, "f": f, "key": key, "value": value, "time": t})


@pytest.mark.parametrize(
    ("lines", "match"),
    [
        ([inv(1, type_="ok")], r"line 1: ok write of process 1 without an invocation"),
        ([inv(1), inv(1, t=1)], r"line 2: process 1 invokes write while its write"),
        ([inv(1), inv(1, type_="info", t=1), inv(1, t=2)], r"line 3: .*after an info completion"),
        ([inv(1, f="append")], r"line 1: unknown f 'append'"),
        ([inv(1, type_="done")], r"line 1: unknown type 'done'"),
        ([inv(1, f="cas", value="a")], r"line 1: a cas value must be \[old, new\]"),
        ([inv(1, f="cas", value=["a"])], r"line 1: a cas value must be \[old, new\]"),
        ([inv(1), inv(1, key="other", type_="ok")], r"line 2: completion .* does not match"),
        ([inv(1), inv(1, f="read", type_="ok")], r"line 2: completion .* does not match"),
        ([inv(1, t=5), inv(1, type_="ok", t=4)], r"line 2: .*precedes its invocation"),
        ([inv(1), inv(1, value="b", type_="ok")], r"line 2: ok write .* invoked with 'a'"),
        (["{not json"], r"line 1: invalid JSON"),
        (['{"process": 1, "type": "invoke"}'], r"line 1: missing field\(s\) f, key, time"),
        (["[1, 2]"], r"line 1: expected a JSON object"),
        ([inv(None)], r"line 1: process must be"),
        ([inv(1, t="soon")], r"line 1: time must be a finite number"),  # type: ignore[arg-type]
        ([inv(1, key=[1])], r"line 1: key must be"),  # type: ignore[arg-type]
    ],
)
def test_malformed_histories_raise_clear_errors(lines: list[str], match: str) -> None:
    with pytest.raises(HistoryError, match=match):
        pair_operations(load_history(lines))


def test_errors_name_the_file_line_or_the_event_position() -> None:
    lines = ["", '{"process": "nemesis", "type": "info", "f": "kill", "time": 0}', inv(1),
             inv(1, t=1)]
    with pytest.raises(HistoryError, match=r"^line 4: process 1 invokes write while its write "
                                           r"invoked at line 3 is still open") as info:
        pair_operations(load_history(lines))
    assert info.value.line == 4
    events = [Event(1, "invoke", "write", "k", "a", 0), Event(2, "ok", "write", "k", "a", 1)]
    with pytest.raises(HistoryError, match=r"^event 2: ok write of process 2 without"):
        pair_operations(events)


def test_pairs_keep_each_completion_with_its_time_and_extra_fields() -> None:
    def ev(p: int, type_: str, f: str, t: int, **extra: Any) -> dict[str, Any]:
        value = {"write": "a", "cas": ["a", "b"], "read": None}[f]
        return {"process": p, "type": type_, "f": f, "key": "k", "value": value, "time": t,
                **extra}

    history = load_history([ev(1, "invoke", "write", 0), ev(2, "invoke", "cas", 1),
                            ev(1, "ok", "write", 5, node="n2"),
                            ev(2, "info", "cas", 9, error="timeout"), ev(3, "invoke", "read", 10)])
    pairs = pair_events(history)
    assert [(i.process, None if d is None else (d.type, d.time, d.extra)) for i, d in pairs] == [
        (1, ("ok", 5, {"node": "n2"})), (2, ("info", 9, {"error": "timeout"})), (3, None)]
    # The checker's view of the same pairs: info ops never returned, open ones become info.
    ops = pair_operations(history)
    assert [(o.index, o.status, o.ret) for o in ops] == [(0, "ok", 5), (1, "info", None),
                                                          (2, "info", None)]


def test_the_model_keeps_its_old_import_path() -> None:
    import raftly.testing.linearizability as lin

    assert lin.load_history is load_history and lin.pair_operations is pair_operations
    assert lin.Event is Event and lin.HistoryError is HistoryError
    assert lin.dump_history is dump_history


def test_history_model_imports_only_the_standard_library() -> None:
    # raftly.check builds on the model; the model must not need anything of raftly.check.
    code = (
        "import sys; import raftly.testing.history; "
        "bad = {m for m in sys.modules if m.startswith(('raftly.check', 'raftly.kv', "
        "'raftly.server', 'raftly.transport', 'asyncio', 'aiohttp'))}; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

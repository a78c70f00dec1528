"""The HTML report of a small handcrafted history: verdicts, the anomaly, counts, plots."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from raftly.check.report import render, write_report
from raftly.check.runner import main
from raftly.testing.linearizability import check, load_history

MS = 1_000_000


def op(p: int, t: str, f: str, key: str, v: object, ms: int) -> dict[str, Any]:
    return {"process": p, "type": t, "f": f, "key": key, "value": v, "time": ms * MS}


# k1 has a stale read: v2 is acknowledged, then a later read returns v1. k2 is fine.
STALE = [
    op(1, "invoke", "write", "k1", "v1", 0), op(1, "ok", "write", "k1", "v1", 10),
    op(2, "invoke", "write", "k1", "v2", 20), op(2, "ok", "write", "k1", "v2", 30),
    op(3, "invoke", "read", "k1", None, 40), op(3, "ok", "read", "k1", "v1", 50),
    op(4, "invoke", "write", "k2", "a", 5), op(4, "ok", "write", "k2", "a", 15),
    op(5, "invoke", "cas", "k2", ["a", "b"], 60), op(5, "fail", "cas", "k2", ["a", "b"], 70),
    op(6, "invoke", "write", "k2", "c", 80), op(6, "info", "write", "k2", "c", 1500),
]
NEMESIS = [
    {"time": 30 * MS, "id": 1, "phase": "start", "f": "partition",
     "value": {"mode": "isolate-leader"}},
    {"time": 900 * MS, "id": 1, "phase": "end", "f": "partition", "value": None},
    {"time": 1000 * MS, "id": 2, "phase": "start", "f": "kill", "value": {"nodes": ["n1"]}},
]


def test_report_of_a_stale_read(tmp_path: Path) -> None:
    result = check(load_history(STALE))
    assert not result.ok
    text = render(result.to_dict(), STALE, NEMESIS, title="t <1>", meta={"seed": 5},
                  lost={"final": {"k1": "v2", "k2": "a"}, "lost": [], "problems": []})
    assert "t &lt;1&gt;" in text  # escaped
    assert "<script" not in text and "http://" not in text.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")  # self-contained: nothing fetched
    # Verdict per key.
    rows = dict(re.findall(r"<td><code>(k\d)</code></td><td class=\"\w+\">([a-z ]+)</td>", text))
    assert rows == {"k1": "not linearizable", "k2": "ok"}
    # The shortest anomaly names the conflicting ops: the stale read and both writes.
    anomaly = text.split("Shortest anomaly", 1)[1].split("</table>", 1)[0]
    assert "read → &quot;v1&quot;" in anomaly
    assert "write &quot;v2&quot;" in anomaly and "write &quot;v1&quot;" in anomaly
    # Counts: ok 4, fail 1, info 1 (in total).
    assert "<tr><th>all</th><th>4</th><th>1</th><th>1</th></tr>" in text
    # Two plots, with the two fault windows shaded in each.
    svgs = re.findall(r"<svg.*?</svg>", text, re.S)
    assert len(svgs) == 2
    for svg in svgs:
        assert svg.count("fill-opacity=\"0.13\"") == 2
    assert svgs[1].count("<circle") == 6  # one latency dot per completed op
    assert "No acknowledged write is missing" in text
    # The raw records of the writes involved are listed too.
    assert "As recorded" in text


def test_report_explains_a_value_nobody_wrote() -> None:
    ops = [op(1, "invoke", "write", "k", "v1", 0),
           op(1, "fail", "write", "k", "v1", 5) | {"error": "connect: refused", "node": "n3"},
           op(2, "invoke", "read", "k", None, 10), op(2, "ok", "read", "k", "v1", 20)]
    result = check(load_history(ops))
    assert not result.ok
    text = render(result.to_dict(), ops)
    related = text.split("As recorded", 1)[1].split("</table>", 1)[0]
    assert "connect: refused" in related and "n3" in related and ">fail<" in related


def test_report_of_a_good_history_and_lost_writes(tmp_path: Path) -> None:
    good = STALE[:4] + STALE[6:]
    result = check(load_history(good))
    assert result.ok
    path = write_report(tmp_path / "r.html", result.to_dict(), good, [],
                        lost={"final": {"k1": "v1"}, "lost": [{"key": "k1", "value": "v2"}],
                              "problems": []})
    text = path.read_text()
    assert "Shortest anomaly" not in text
    assert "lost writes" in text and "Acknowledged writes missing" in text


def test_check_a_history_file(tmp_path: Path, capsys: Any) -> None:
    import json

    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(o) + "\n" for o in STALE))
    assert main(["--history", str(bad), "--out", str(tmp_path / "out")]) == 1
    assert "not linearizable" in capsys.readouterr().out
    assert (tmp_path / "out" / "report.html").exists()
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps(o) + "\n" for o in STALE[:4] + STALE[6:]))
    assert main(["--history", str(good)]) == 0
    (tmp_path / "junk.jsonl").write_text("{not json\n")
    assert main(["--history", str(tmp_path / "junk.jsonl")]) == 2


def test_fault_descriptions() -> None:
    from raftly.check.report import describe_fault

    assert describe_fault("partition", {"mode": "halves", "groups": [["n1", "n2"], ["n3"]],
                                         "sees": {}}) == "partition halves: n1 n2 | n3"
    assert describe_fault("partition", {"mode": "ring", "groups": [["a"]], "cut": "reset"}
                          ) == "partition ring (reset): a"
    assert describe_fault("kill", {"nodes": ["n2"], "mode": "leader"}) == "kill n2 (leader)"
    assert describe_fault("pause", {"nodes": ["n1", "n3"], "mode": "random"}) == "pause n1 n3"

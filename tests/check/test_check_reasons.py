"""``raftly check`` says why ops failed: each client outcome records a reason, and the summary
and the report count them; the report's legend names only the faults that ran."""

from __future__ import annotations

import asyncio
import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
from test_check_report import NEMESIS, STALE, op

from raftly.check import clients
from raftly.check.clients import ClientPool, Workload, open_session
from raftly.check.history import HistoryWriter
from raftly.check.report import render
from raftly.check.runner import main
from raftly.localproc import free_ports
from raftly.testing.linearizability import check, load_history


@pytest.mark.parametrize(("f", "status", "body", "outcome", "reason"), [
    ("cas", 412, b'{"error": "current value does not match"}', "fail", clients.CAS_MISS),
    ("write", 503, b'{"error": "no leader known; retry shortly"}', "fail", clients.NO_LEADER),
    ("write", 503, b'{"error": "busy; not applied, safe to retry"}', "fail",
     clients.NOT_APPLIED),
    ("write", 504, b'{"error": "outcome unknown"}', "info", clients.OUTCOME_UNKNOWN),
    ("write", 500, b'{"error": "internal"}', "info", "HTTP 500"),
    ("read", 503, b'{"error": "no leader known; retry shortly"}', "fail", clients.NO_LEADER),
    ("read", 503, b'{"error": "read not confirmed"}', "fail", clients.UNAVAILABLE),
])
def test_each_answer_has_a_reason(f: str, status: int, body: bytes, outcome: str,
                                  reason: str) -> None:
    got = ClientPool._classify(f, status, body, "n1")  # type: ignore[arg-type]
    assert (got.type, got.reason) == (outcome, reason)
    assert ClientPool._classify(f, 200, b"", "n1").reason is None  # type: ignore[arg-type]


def test_a_refused_connection_is_recorded_with_its_reason() -> None:
    [port] = free_ports(1)  # nothing listens there
    history = HistoryWriter()
    pool = ClientPool({"n1": f"http://127.0.0.1:{port}"}, history, Workload(), random.Random(1))

    async def main() -> None:
        async with open_session() as session:
            outcome = await pool.invoke(session, 0, "write", "k", "v", "n1")
            assert (outcome.type, outcome.reason) == ("fail", clients.REFUSED)

    asyncio.run(main())
    assert history.ops[-1]["reason"] == clients.REFUSED


WHY = [
    op(1, "invoke", "write", "k", "a", 0), op(1, "ok", "write", "k", "a", 1),
    op(2, "invoke", "write", "k", "b", 2),
    op(2, "fail", "write", "k", "b", 3) | {"reason": "connection refused"},
    op(3, "invoke", "write", "k", "c", 4),
    op(3, "fail", "write", "k", "c", 5) | {"reason": "connection refused"},
    op(4, "invoke", "cas", "k", ["x", "y"], 6),
    op(4, "fail", "cas", "k", ["x", "y"], 7) | {"reason": "412 cas miss"},
    op(5, "invoke", "write", "k", "d", 8),
    op(5, "info", "write", "k", "d", 9) | {"reason": "timeout"},
    op(6, "invoke", "write", "k", "e", 10), op(6, "fail", "write", "k", "e", 11),
]


def _reasons(text: str) -> dict[str, tuple[int, int]]:
    table = text.split("Why ops failed", 1)[1].split("</table>", 1)[0]
    return {r: (int(f), int(i)) for r, f, i in re.findall(
        r"<tr><td>([^<]+)</td><td>(\d+)</td><td>(\d+)</td></tr>", table)}


def test_report_counts_fails_by_reason_and_lists_only_faults_that_ran() -> None:
    text = render(check(load_history(WHY)).to_dict(), WHY, NEMESIS)
    assert _reasons(text) == {"connection refused": (2, 0), "412 cas miss": (1, 0),
                              "timeout": (0, 1), "no reason recorded": (1, 0)}
    legend = text.split('class="legend">', 1)[1].split("</div>", 1)[0]
    assert "partition" in legend and "kill" in legend
    assert "pause" not in legend, "pause never ran"
    quiet = render(check(load_history(STALE)).to_dict(), STALE, [])
    legend = quiet.split('class="legend">', 1)[1].split("</div>", 1)[0]
    assert not any(f in legend for f in ("partition", "kill", "pause"))


def test_the_summary_says_why_ops_failed(tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "why.jsonl"
    path.write_text("".join(json.dumps(o) + "\n" for o in WHY))
    assert main(["--history", str(path)]) == 0
    out = capsys.readouterr().out
    assert ("why: fail: connection refused 2, 412 cas miss 1, no reason recorded 1; "
            "info (may have taken effect): timeout 1") in out

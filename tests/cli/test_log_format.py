"""``configure_logging``: the text format is the one it always was, json one object a line."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raftly.cli.common import configure_logging
from raftly.logevents import event


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _log_role_change() -> None:
    logging.getLogger("raftly.server").info(
        "node %s is %s in term %d (leader: %s)", 2, "leader", 7, 2,
        extra=event("election_won", role="leader", term=7, leader=2))


def test_the_text_format_prints_the_message_as_before_and_no_fields(
        capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "n2")
    _log_role_change()
    err = capsys.readouterr().err
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} n2 INFO    raftly\.server: "
                        r"node 2 is leader in term 7 \(leader: 2\)\n", err), err


def test_the_json_format_writes_one_object_per_line_tagged_with_the_node(
        capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "n2", "json")
    _log_role_change()
    logging.getLogger("raftly.kv").warning("plain\nline")
    logging.getLogger("raftly.kv").debug("below the level")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    first, second = map(json.loads, lines)
    assert first["event"] == "election_won" and first["node"] == "n2"
    assert first["message"] == "node 2 is leader in term 7 (leader: 2)"
    assert (first["role"], first["term"], first["leader"]) == ("leader", 7, 2)
    assert second == {**second, "event": "log", "level": "WARNING", "message": "plain\nline"}


def test_cluster_up_passes_the_log_format_to_its_nodes(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    import raftly.localcluster
    from raftly.cli import main

    seen: dict[str, Any] = {}

    class Made(Exception):
        pass

    def fake_cluster(*args: Any, **kwargs: Any) -> None:
        seen.update(kwargs)
        raise Made

    monkeypatch.setattr(raftly.localcluster, "ProcessCluster", fake_cluster)
    with pytest.raises(Made):
        main(["cluster", "up", "--dir", str(tmp_path), "--log-format", "json"])
    assert seen["log_format"] == "json"

"""The programs in examples/ run to completion and do what they say."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from raftly.core.state_machine import supports_snapshots

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_lock_table_example_survives_losing_its_leader() -> None:
    result = subprocess.run([sys.executable, str(EXAMPLES / "lock_table.py")],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "bob acquires 'printer': {'ok': False, 'holder': 'alice'}" in out
    assert "took over in term" in out
    assert "lock table now: {'scanner': 'bob', 'printer': 'bob'}" in out


def test_lock_table_snapshot_holds_the_table_as_of_the_capture() -> None:
    locks = load_example("lock_table")
    table = locks.LockTable()
    assert supports_snapshots(table)
    table.apply(1, locks.command("acquire", "printer", "alice"))
    table.apply(2, locks.command("acquire", "scanner", "bob"))
    capture = table.capture()
    table.apply(3, locks.command("release", "printer", "alice"))  # after the capture
    table.apply(4, locks.command("acquire", "door", "carol"))
    sink = io.BytesIO()
    capture.persist(sink)
    copy = locks.LockTable()
    copy.restore(io.BytesIO(sink.getvalue()))
    assert copy.owners == {"printer": "alice", "scanner": "bob"}
    assert copy.apply(5, locks.command("acquire", "printer", "bob")) == {
        "ok": False, "holder": "alice"}


@pytest.mark.parametrize("raw", [
    b"", b"{", b"\xff", b"[" * 100_000, b"[]", b'{"owners": {}}', b'{"version": 2, "owners": {}}',
    b'{"version": 1}', b'{"version": 1, "owners": []}', b'{"version": 1, "owners": {"a": 1}}',
])
def test_lock_table_refuses_a_malformed_snapshot_and_keeps_its_table(raw: bytes) -> None:
    locks = load_example("lock_table")
    table = locks.LockTable()
    table.apply(1, locks.command("acquire", "printer", "alice"))
    with pytest.raises(ValueError, match="lock table snapshot"):
        table.restore(io.BytesIO(raw))
    assert table.owners == {"printer": "alice"}

"""The programs in examples/ run to completion and do what they say."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_lock_table_example_survives_losing_its_leader() -> None:
    result = subprocess.run([sys.executable, str(EXAMPLES / "lock_table.py")],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "bob acquires 'printer': {'ok': False, 'holder': 'alice'}" in out
    assert "took over in term" in out
    assert "lock table now: {'scanner': 'bob', 'printer': 'bob'}" in out

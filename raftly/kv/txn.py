"""How a transaction's compares are judged against the keys (``compare_holds``).

A missing key has version, create and mod revision 0, so ``version = 0`` tests absence as
etcd's does; its value compares false whatever the op (as a CAS on a missing key never matches).
"""

from __future__ import annotations

from raftly.kv.commands import Compare
from raftly.kv.records import KeyValue


def compare_holds(compare: Compare, kv: KeyValue | None) -> bool:
    """Whether ``compare`` holds for ``kv``, the current state of its key (None: missing)."""
    target, expected = compare.target, compare.value
    actual: bytes | int | bool
    if target == "exists":
        actual = kv is not None
    elif target == "value":
        if kv is None:
            return False
        actual = kv.value
    elif kv is None:
        actual = 0
    elif target == "version":
        actual = kv.version
    elif target == "mod_revision":
        actual = kv.mod_revision
    else:
        actual = kv.create_revision
    op = compare.op
    if op == "=":
        return actual == expected
    if op == "!=":
        return actual != expected
    # decode admits < and > only between two bytes or two ints.
    if op == "<":
        return actual < expected  # type: ignore[operator]
    return actual > expected  # type: ignore[operator]


__all__ = ["compare_holds"]

"""The status table of ``raftly status`` and ``raftly demo``: one row per node."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


def format_table(statuses: Mapping[str, dict[str, Any] | None]) -> Iterator[str]:
    """Lines of a table of id, role, term, commit, applied and leader; None is unreachable."""
    rows = [("ID", "ROLE", "TERM", "COMMIT", "APPLIED", "LEADER")]
    for name, s in statuses.items():
        if s is None:
            rows.append((name, "unreachable", "-", "-", "-", "-"))
        else:
            rows.append((str(s.get("id", name)), str(s["role"]), str(s["term"]),
                         str(s["commit_index"]), str(s["applied_index"]),
                         str(s["leader"] or "-")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        yield "  ".join(cell.rjust(w) if i in (2, 3, 4) else cell.ljust(w)
                        for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()


__all__ = ["format_table"]

"""The status table of ``raftly status`` and ``raftly demo``: one row per node."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


def format_table(statuses: Mapping[str, dict[str, Any] | None]) -> Iterator[str]:
    """Lines of a table of id, role, term, commit, applied, snapshot index, the log entries
    held, the log's size on disk and the leader; None is unreachable."""
    rows = [("ID", "ROLE", "TERM", "COMMIT", "APPLIED", "SNAPSHOT", "LOG", "DISK", "LEADER")]
    for name, s in statuses.items():
        if s is None:
            rows.append((name, "unreachable", *["-"] * 7))
        else:
            # Nodes of an older version do not report the log fields.
            log = (f"{s['first_index']}..{s['last_index']}" if "first_index" in s else "-")
            # A learner follows like any follower; the table says what it is.
            learner = any(m.get("raft_id") == s.get("raft_id") for m in s.get("learners", []))
            rows.append((str(s.get("id", name)), "learner" if learner else str(s["role"]),
                         str(s["term"]),
                         str(s["commit_index"]), str(s["applied_index"]),
                         str(s.get("snapshot_index", "-")), log,
                         _size(s["log_bytes"]) if "log_bytes" in s else "-",
                         str(s["leader"] or "-")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        yield "  ".join(cell.rjust(w) if i in (2, 3, 4, 5, 6, 7) else cell.ljust(w)
                        for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()


def _size(n: int) -> str:
    """A byte count for people, in one word: 512B, 3.2MiB."""
    if n < 1024:
        return f"{n}B"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024 or unit == "GiB":
            break
    return f"{size:.1f}{unit}"


__all__ = ["format_table"]

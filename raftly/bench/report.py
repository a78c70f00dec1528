"""How the comparison is shown: plain-text tables for the terminal, the same tables in Markdown
for the README, and the machine line that goes with every figure."""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path

from raftly.bench.stats import Row
from raftly.bench.verdicts import Ratio, Target

Table = tuple[list[str], list[list[str]]]
"""Column headers, then rows of cells."""


def text(table: Table, left: int = 1) -> str:
    """Aligned columns: the first ``left`` to the left, the others (figures) to the right."""
    head, body = table
    widths = [max(len(cell) for cell in column) for column in zip(head, *body, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(w) if i < left else cell.rjust(w)
                         for i, (cell, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return "\n".join([line(head), *(line(r) for r in body)])


def markdown(table: Table, left: int = 1) -> str:
    head, body = table
    align = ["---" if i < left else "---:" for i in range(len(head))]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in [head, align, *body])


def _num(value: float, digits: int) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def figures_table(rows: Mapping[str, Mapping[int, Row]]) -> Table:
    head = ["system", "clients", "writes/s", "p50 ms", "p99 ms", "errors", "entries/fsync",
            "rounds"]
    body = [[system, str(r.clients), _num(r.rate, 0), _num(r.p50, 2), _num(r.p99, 2),
             _num(r.errors, 0), _num(r.leader_batch, 1), str(r.runs)]
            for system, levels in rows.items() for r in levels.values()]
    return head, body


def ratios_table(ratios: Sequence[Ratio]) -> Table:
    head = ["ratio", "clients", "throughput", "p50"]
    return head, [[r.pair, str(r.clients), _num(r.throughput, 2) + "x", _num(r.p50, 2) + "x"]
                  for r in ratios]


def targets_table(targets: Sequence[Target]) -> Table:
    return ["target", "measured", "verdict"], [[t.target, t.measured, t.verdict]
                                               for t in targets]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def machine(loop: str, serve_loop: str) -> dict[str, str | int]:
    """``loop``: the clients' and the library's event loop; ``serve_loop``: the nodes'."""
    return {"cpu": cpu_model(), "cores": os.cpu_count() or 0, "kernel": platform.release(),
            "python": platform.python_version(), "loop": loop, "serve_loop": serve_loop}


def machine_line(m: Mapping[str, str | int]) -> str:
    return (f"{m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, Python {m['python']}, "
            f"event loop {m['loop']} (clients and library; `raftly serve` nodes: "
            f"{m.get('serve_loop', 'unknown')})")


__all__ = ["Table", "cpu_model", "figures_table", "machine", "machine_line", "markdown",
           "ratios_table", "targets_table", "text"]

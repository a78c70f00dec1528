"""The comparison's plots: throughput and latency against clients, one line per system (SVG).

matplotlib is optional (``pip install 'raftly[bench]'``); ``available()`` says whether it can
be imported, and the Agg backend is used so no display is ever needed.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from raftly.bench.stats import Row

MISSING = "matplotlib not installed: pip install 'raftly[bench]'; plots skipped"


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def write_plots(rows: Mapping[str, Mapping[int, Row]], out: Path, title: str) -> list[Path]:
    """``out/throughput.svg`` (ops/s vs clients, log x) and ``out/latency.svg`` (p50 solid,
    p99 dashed, ms vs clients, log-log); returns the files written."""
    import matplotlib

    matplotlib.use("Agg")

    def throughput(ax: Any) -> None:
        for system, levels in rows.items():
            xs = sorted(levels)
            ax.plot(xs, [levels[c].rate for c in xs], marker="o", label=system)

    def latency(ax: Any) -> None:
        ax.set_yscale("log")
        for i, (system, levels) in enumerate(rows.items()):
            xs = sorted(levels)
            ax.plot(xs, [levels[c].p50 for c in xs], marker="o", color=f"C{i}",
                    label=f"{system} p50")
            ax.plot(xs, [levels[c].p99 for c in xs], marker="x", linestyle="--",
                    color=f"C{i}", label=f"{system} p99")

    levels = sorted({c for per_level in rows.values() for c in per_level})
    return [_figure(out / "throughput.svg", throughput, "writes per second",
                    f"throughput: {title}", levels),
            _figure(out / "latency.svg", latency, "latency, ms", f"latency: {title}", levels)]


def _figure(path: Path, draw: Callable[[Any], None], ylabel: str, title: str,
            levels: list[int]) -> Path:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, ax = plt.subplots(figsize=(7, 4.5))
    try:
        ax.set_xscale("log")
        draw(ax)
        ax.set_xticks(levels, [str(c) for c in levels])  # the measured levels, not powers of 10
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize="medium")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
        fig.savefig(path, format="svg", bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


__all__ = ["MISSING", "available", "write_plots"]

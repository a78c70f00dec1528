"""The report of a run: one self-contained HTML file with hand-made inline SVG plots.

It shows the verdict (overall and per key), the shortest anomaly as the ops that conflict, the
lost-write check, counts of ok/fail/info ops and of why ops failed (``reason_counts``, which
the run's printed summary uses too), and two plots over time with every fault window shaded:
throughput (completions per second by outcome) and latency (one dot per op, log scale); the
legend names only the faults that ran.
No JavaScript and nothing fetched: the file can be attached to a CI run or an issue as is.

Inputs are plain data (the checker's ``CheckResult.to_dict()``, the history and the nemesis log
as lists of dicts) so a report can be rendered for a history recorded anywhere. The history is
read and paired through ``raftly.testing.history``, the same model the checker uses.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from raftly.check.history import fault_windows
from raftly.testing.history import Pair, load_history, pair_events

_COLORS = {"ok": "#2e7d32", "fail": "#c62828", "info": "#ef6c00"}
_FAULT_COLORS = {"partition": "#1565c0", "kill": "#6a1b9a", "pause": "#00838f",
                 "membership": "#ef6c00", "powerloss": "#b71c1c"}
_W, _H = 960, 220
_ML, _MR, _MT, _MB = 56, 12, 10, 28
_MAX_DOTS = 6000

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;max-width:1000px;color:#222}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
.ok{color:#2e7d32;font-weight:600}.bad{color:#c62828;font-weight:600}
.unknown{color:#ef6c00;font-weight:600}
code,pre{font:12px ui-monospace,monospace}pre{background:#f6f6f6;padding:8px;overflow:auto}
.legend span{display:inline-block;margin-right:14px}
.sw{display:inline-block;width:11px;height:11px;margin-right:4px;vertical-align:-1px}
"""


def _esc(x: object) -> str:
    return html.escape(str(x), quote=True)


def _verdict_class(verdict: str) -> str:
    return {"ok": "ok", "not linearizable": "bad"}.get(verdict, "unknown")


def _fmt_op(op: Mapping[str, Any], t0: int) -> str:
    """One row of an anomaly table, with times in ms since the start of the history."""
    def ms(t: object) -> str:
        return "∞" if t is None else f"{(float(t) - t0) / 1e6:.1f}"  # type: ignore[arg-type]
    value = op.get("value")
    if op.get("f") == "read":
        what = f"read → {json.dumps(op.get('output'))}" if op.get("status") == "ok" else "read"
    elif op.get("f") == "cas":
        what = f"cas {json.dumps(value)}"
    else:
        what = f"write {json.dumps(value)}"
    return (f"<tr><td>#{_esc(op.get('index'))}</td><td>p{_esc(op.get('process'))}</td>"
            f"<td><code>{_esc(what)}</code></td><td>{_esc(op.get('status'))}</td>"
            f"<td>{ms(op.get('call'))}</td><td>{ms(op.get('ret'))}</td></tr>")


def describe_fault(f: str, value: object) -> str:
    """A short human description of a fault (the nemesis log has the full detail)."""
    if not isinstance(value, Mapping):
        return f if value is None else f"{f} {json.dumps(value)}"
    if f == "partition" and "groups" in value:
        groups = " | ".join(" ".join(g) for g in value["groups"])
        how = f" ({value['cut']})" if "cut" in value else ""
        return f"partition {value.get('mode', '')}{how}: {groups}"
    if f == "membership" and "op" in value:
        parts = [f"+{value['added']}"] if "added" in value else []
        parts += [f"-{value['removed']}"] if "removed" in value else []
        parts += [f"({k} {value[k]})" for k in ("transfer", "skipped", "problem") if k in value]
        return " ".join([f"membership {value['op']}", *parts])
    if "nodes" in value:
        aim = {"leader": " (leader)", "all": " (all)"}.get(str(value.get("mode")), "")
        return f"{f} {' '.join(value['nodes'])}{aim}"
    return f"{f} {json.dumps(value)}"


def _values_of(op: Mapping[str, Any]) -> set[str]:
    out = set()
    for v in (op.get("output"), op.get("value")):
        for x in (v if isinstance(v, list | tuple) else [v]):
            if isinstance(x, str):
                out.add(x)
    return out


def _related(anomaly: Mapping[str, Any], pairs: Sequence[Pair], t0: int,
             limit: int = 20) -> list[str]:
    """Every recorded write or cas of a value the anomaly mentions, with its raw outcome.

    The checker drops failed ops, so an anomaly such as "read a value no op ever wrote" is
    explained here: the write was recorded, with the error that made it look failed.
    """
    values = set()
    for op in anomaly.get("ops", []):
        values |= _values_of(op)
    rows = []
    for inv, done in pairs:
        if inv.key != anomaly.get("key") or inv.f not in ("write", "cas"):
            continue
        v = inv.value
        written = v[1] if inv.f == "cas" and isinstance(v, tuple) else v
        if written not in values:
            continue
        ret = "∞" if done is None else f"{(done.time - t0) / 1e6:.1f}"
        extra = {} if done is None else done.extra
        rows.append(f"<tr><td>p{_esc(inv.process)}</td><td><code>{_esc(inv.f)} "
                    f"{_esc(json.dumps(v))}</code></td>"
                    f"<td>{_esc(done.type if done else 'never completed')}</td>"
                    f"<td>{(inv.time - t0) / 1e6:.1f}</td><td>{ret}</td>"
                    f"<td>{_esc(extra.get('node', ''))}</td>"
                    f"<td>{_esc(extra.get('error', ''))}</td></tr>")
    if not rows:
        return []
    return ["<p>As recorded (including ops the checker set aside as failed):</p>"
            "<table><tr><th>process</th><th>op</th><th>outcome</th><th>invoked (ms)</th>"
            "<th>returned (ms)</th><th>node</th><th>error</th></tr>", *rows[:limit], "</table>"]


def _axis_x(t_end: float) -> list[str]:
    out = []
    step = _nice_step(t_end / 8 if t_end > 0 else 1)
    t = 0.0
    while t <= t_end + 1e-9:
        x = _ML + (_W - _ML - _MR) * (t / t_end if t_end else 0)
        out.append(f'<line x1="{x:.1f}" y1="{_H - _MB}" x2="{x:.1f}" y2="{_H - _MB + 4}" '
                   f'stroke="#555"/><text x="{x:.1f}" y="{_H - _MB + 16}" font-size="10" '
                   f'text-anchor="middle">{t:g}s</text>')
        t += step
    return out


def _nice_step(raw: float) -> float:
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def _shade(windows: Sequence[tuple[float, float, str, object]], t_end: float) -> list[str]:
    """Fault windows as translucent bands, one row per fault kind so overlaps stay visible."""
    out = []
    kinds = sorted({w[2] for w in windows})
    plot_h = _H - _MT - _MB
    band = plot_h / max(1, len(kinds))
    for start, end, f, value in windows:
        x0 = _ML + (_W - _ML - _MR) * (start / t_end if t_end else 0)
        x1 = _ML + (_W - _ML - _MR) * (end / t_end if t_end else 0)
        row = kinds.index(f)
        color = _FAULT_COLORS.get(f, "#777")
        title = _esc(f"{describe_fault(f, value)}, {start:.2f}-{end:.2f}s")
        out.append(f'<rect x="{x0:.1f}" y="{_MT + row * band:.1f}" width="{max(1.0, x1 - x0):.1f}"'
                   f' height="{band:.1f}" fill="{color}" fill-opacity="0.13">'
                   f"<title>{title}</title></rect>")
    return out


def _frame(body: list[str], y_labels: list[tuple[float, str]], title: str) -> str:
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
             f'viewBox="0 0 {_W} {_H}" role="img" aria-label="{_esc(title)}">',
             f'<rect x="{_ML}" y="{_MT}" width="{_W - _ML - _MR}" height="{_H - _MT - _MB}" '
             'fill="none" stroke="#999"/>']
    parts += body
    for y, label in y_labels:
        parts.append(f'<line x1="{_ML - 4}" y1="{y:.1f}" x2="{_ML}" y2="{y:.1f}" stroke="#555"/>'
                     f'<text x="{_ML - 6}" y="{y + 3:.1f}" font-size="10" text-anchor="end">'
                     f"{_esc(label)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def throughput_svg(pairs: Sequence[Pair], t0: int, t_end: float,
                   windows: Sequence[tuple[float, float, str, object]]) -> str:
    """Completions per second by outcome (one polyline per outcome), faults shaded."""
    bin_s = max(0.25, _nice_step(t_end / 120)) if t_end > 0 else 1.0
    nbins = max(1, math.ceil(t_end / bin_s))
    series: dict[str, list[int]] = {k: [0] * nbins for k in _COLORS}
    for _inv, done in pairs:
        if done is None or done.type not in series:
            continue
        b = min(nbins - 1, int((done.time - t0) / 1e9 / bin_s))
        series[done.type][b] += 1
    peak = max([max(v) for v in series.values()] + [1]) / bin_s
    plot_w, plot_h = _W - _ML - _MR, _H - _MT - _MB
    body = _shade(windows, t_end)
    for kind, counts in series.items():
        pts = []
        for i, c in enumerate(counts):
            x = _ML + plot_w * ((i + 0.5) * bin_s / t_end if t_end else 0)
            y = _MT + plot_h * (1 - (c / bin_s) / peak)
            pts.append(f"{x:.1f},{y:.1f}")
        body.append(f'<polyline fill="none" stroke="{_COLORS[kind]}" stroke-width="1.5" '
                    f'points="{" ".join(pts)}"/>')
    body += _axis_x(t_end)
    labels = [(_MT + plot_h * (1 - f), f"{peak * f:.0f}") for f in (0, 0.5, 1)]
    return _frame(body, labels, "throughput (ops/s)")


def latency_svg(pairs: Sequence[Pair], t0: int, t_end: float,
                windows: Sequence[tuple[float, float, str, object]]) -> str:
    """One dot per completed op at (completion time, latency), log-scaled, faults shaded."""
    dots = [(inv, done) for inv, done in pairs if done is not None]
    if len(dots) > _MAX_DOTS:  # keep the file small: an even sample still shows the shape
        step = len(dots) / _MAX_DOTS
        dots = [dots[int(i * step)] for i in range(_MAX_DOTS)]
    lat = [max(1e-4, (d.time - i.time) / 1e6) for i, d in dots]
    lo, hi = 0.1, max([10.0, *lat])
    llo, lhi = math.log10(lo), math.log10(hi)
    plot_w, plot_h = _W - _ML - _MR, _H - _MT - _MB
    body = _shade(windows, t_end)
    for (_inv, done), ms in zip(dots, lat, strict=True):
        x = _ML + plot_w * (((done.time - t0) / 1e9) / t_end if t_end else 0)
        y = _MT + plot_h * (1 - (math.log10(max(ms, lo)) - llo) / (lhi - llo))
        body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="1.6" '
                    f'fill="{_COLORS.get(done.type, "#555")}" fill-opacity="0.6"/>')
    body += _axis_x(t_end)
    labels = []
    for p in range(math.floor(llo), math.ceil(lhi) + 1):
        if llo <= p <= lhi:
            labels.append((_MT + plot_h * (1 - (p - llo) / (lhi - llo)), f"{10 ** p:g}ms"))
    return _frame(body, labels, "latency (ms, log scale)")


def render(result: Mapping[str, Any], ops: Sequence[Mapping[str, Any]],
           nemesis: Sequence[dict[str, Any]] = (), *, title: str = "raftly check",
           meta: Mapping[str, object] | None = None,
           lost: Mapping[str, Any] | None = None) -> str:
    """The HTML text of the report. ``result`` is ``CheckResult.to_dict()`` of ``ops``.

    ``ops`` is the history as event dicts; it must be well formed (``check`` has accepted it),
    or ``HistoryError`` is raised.
    """
    events = load_history(ops)
    times = [e.time for e in events] + [e["time"] for e in nemesis]
    t0 = min(times, default=0)
    t_end = max(1e-3, (max(times, default=0) - t0) / 1e9)
    windows = [((s - t0) / 1e9, (e - t0) / 1e9, f, v) for s, e, f, v in fault_windows(
        list(nemesis))]
    pairs = pair_events(events)
    parts = _heading(result, title, meta, lost)
    parts += _counts_table(pairs)
    parts += _reasons_table(pairs)
    parts += _verdicts_table(result)
    parts += _anomaly_section(result, pairs, t0)
    if lost is not None:
        parts += _lost_section(lost)
    parts += _plots(pairs, t0, t_end, windows)
    parts += _faults_table(windows)
    parts.append("</body></html>")
    return "\n".join(parts)


def _heading(result: Mapping[str, Any], title: str, meta: Mapping[str, object] | None,
             lost: Mapping[str, Any] | None) -> list[str]:
    """The page head, the overall verdict (checker and lost writes) and the run's settings."""
    verdict = str(result.get("verdict", "unknown"))
    lost_ok = lost is None or not lost.get("lost")
    overall_ok = verdict == "ok" and lost_ok
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_esc(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{_esc(title)}</h1>"]
    cls = "ok" if overall_ok else _verdict_class(verdict if verdict != "ok" else "bad")
    parts.append(f'<p>Verdict: <span class="{cls}">'
                 f"{'linearizable, no lost writes' if overall_ok else _esc(verdict)}"
                 f"{'' if lost_ok else ' + lost writes'}</span></p>")
    if meta:
        parts.append("<table>" + "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>"
                                          for k, v in meta.items()) + "</table>")
    return parts


def _counts_table(pairs: Sequence[Pair]) -> list[str]:
    """Ops by function and outcome; an op that never completed counts as info."""
    counts: dict[str, dict[str, int]] = {}
    for inv, done in pairs:
        t = done.type if done is not None else "info"
        counts.setdefault(inv.f, {"ok": 0, "fail": 0, "info": 0})[t] += 1
    total = {k: sum(c[k] for c in counts.values()) for k in ("ok", "fail", "info")}
    parts = ["<h2>Operations</h2><table><tr><th></th><th>ok</th><th>fail</th><th>info</th>"
             "</tr>"]
    for f in sorted(counts):
        c = counts[f]
        parts.append(f"<tr><td>{_esc(f)}</td><td>{c['ok']}</td><td>{c['fail']}</td>"
                     f"<td>{c['info']}</td></tr>")
    parts.append(f"<tr><th>all</th><th>{total['ok']}</th><th>{total['fail']}</th>"
                 f"<th>{total['info']}</th></tr></table>")
    return parts


NEVER_COMPLETED = "never completed"
NOT_RECORDED = "no reason recorded"


def reason_counts(pairs: Sequence[Pair]) -> dict[str, dict[str, int]]:
    """How many ops failed (``fail``) or have an unknown outcome (``info``), by reason.

    The reason is the ``reason`` a ``raftly check`` client recorded; a history from elsewhere
    has none (``NOT_RECORDED``). Most common first.
    """
    counts: dict[str, dict[str, int]] = {}
    for _inv, done in pairs:
        if done is not None and done.type == "ok":
            continue
        t = done.type if done is not None else "info"
        reason = (str(done.extra.get("reason") or NOT_RECORDED) if done is not None
                  else NEVER_COMPLETED)
        counts.setdefault(reason, {"fail": 0, "info": 0})[t] += 1
    return dict(sorted(counts.items(), key=lambda kv: (-sum(kv[1].values()), kv[0])))


def format_reasons(counts: Mapping[str, Mapping[str, int]], outcome: str) -> str:
    """``"connection refused 300, 503 no leader 150"``: the reasons of one outcome, or ``""``."""
    return ", ".join(f"{reason} {c[outcome]}" for reason, c in counts.items() if c[outcome])


def _reasons_table(pairs: Sequence[Pair]) -> list[str]:
    counts = reason_counts(pairs)
    if not counts:
        return []
    parts = ["<h2>Why ops failed</h2><p>fail: certainly did not take effect; info: may have "
             "taken effect.</p><table><tr><th>reason</th><th>fail</th><th>info</th></tr>"]
    parts += [f"<tr><td>{_esc(reason)}</td><td>{c['fail']}</td><td>{c['info']}</td></tr>"
              for reason, c in counts.items()]
    parts.append("</table>")
    return parts


def _verdicts_table(result: Mapping[str, Any]) -> list[str]:
    parts = ["<h2>Verdict per key</h2><table><tr><th>key</th><th>verdict</th>"
             "<th>ops searched</th><th>time (s)</th></tr>"]
    for k in result.get("keys", []):
        v = str(k.get("verdict"))
        parts.append(f"<tr><td><code>{_esc(k.get('key'))}</code></td>"
                     f'<td class="{_verdict_class(v)}">{_esc(v)}</td>'
                     f"<td>{_esc(k.get('operations'))}</td>"
                     f"<td>{float(k.get('elapsed', 0)):.2f}</td></tr>")
    parts.append("</table>")
    return parts


def _anomaly_section(result: Mapping[str, Any], pairs: Sequence[Pair], t0: int) -> list[str]:
    """The shortest anomaly (as ``CheckResult.anomaly`` picks it) and the raw records behind it."""
    anomalies = [k["anomaly"] for k in result.get("keys", []) if k.get("anomaly")]
    if not anomalies:
        return []
    shortest = min(anomalies, key=lambda a: (len(a.get("ops", [])), a["op"].get("call", 0)))
    parts = [f"<h2>Shortest anomaly (key <code>{_esc(shortest.get('key'))}</code>)</h2>"
             f"<pre>{_esc(shortest.get('explanation', ''))}</pre>"
             "<table><tr><th>op</th><th>process</th><th>what</th><th>outcome</th>"
             "<th>invoked (ms)</th><th>returned (ms)</th></tr>"]
    parts += [_fmt_op(op, t0) for op in shortest.get("ops", [])]
    parts.append("</table>")
    parts += _related(shortest, pairs, t0)
    return parts


def _lost_section(lost: Mapping[str, Any]) -> list[str]:
    """The final value of each key and the acknowledged writes missing from it."""
    parts = ["<h2>Final reads and lost writes</h2>"]
    parts.append("<table><tr><th>key</th><th>final value</th></tr>" + "".join(
        f"<tr><td><code>{_esc(k)}</code></td><td><code>{_esc(json.dumps(v))}</code></td></tr>"
        for k, v in sorted(lost.get("final", {}).items())) + "</table>")
    if lost.get("lost"):
        parts.append('<p class="bad">Acknowledged writes missing from the final state:</p>'
                     "<pre>" + _esc(json.dumps(lost["lost"], indent=1)) + "</pre>")
    elif lost.get("problems"):
        parts.append('<p class="unknown">' + _esc("; ".join(lost["problems"])) + "</p>")
    else:
        parts.append('<p class="ok">No acknowledged write is missing.</p>')
    return parts


def _plots(pairs: Sequence[Pair], t0: int, t_end: float,
           windows: Sequence[tuple[float, float, str, object]]) -> list[str]:
    legend = "".join(f'<span><i class="sw" style="background:{c}"></i>{k}</span>'
                     for k, c in _COLORS.items())
    ran = {kind for _start, _end, kind, _detail in windows}  # a fault that never ran: no key
    legend += "".join(f'<span><i class="sw" style="background:{c};opacity:.35"></i>{k}</span>'
                      for k, c in _FAULT_COLORS.items() if k in ran)
    return [f'<h2>Throughput (completions/s)</h2><div class="legend">{legend}</div>',
            throughput_svg(pairs, t0, t_end, windows),
            "<h2>Latency (ms, log scale)</h2>",
            latency_svg(pairs, t0, t_end, windows)]


def _faults_table(windows: Sequence[tuple[float, float, str, object]]) -> list[str]:
    if not windows:
        return []
    parts = ["<h2>Faults</h2><table><tr><th>from (s)</th><th>to (s)</th><th>fault</th>"
             "</tr>"]
    for w_start, w_end, kind, detail in windows:
        parts.append(f"<tr><td>{w_start:.2f}</td><td>{w_end:.2f}</td>"
                     f"<td>{_esc(describe_fault(kind, detail))}</td></tr>")
    parts.append("</table>")
    return parts


def write_report(path: str | Path, result: Mapping[str, Any], ops: Sequence[Mapping[str, Any]],
                 nemesis: Sequence[dict[str, Any]] = (), **kwargs: Any) -> Path:
    path = Path(path)
    path.write_text(render(result, ops, nemesis, **kwargs), encoding="utf-8")
    return path


__all__ = ["describe_fault", "format_reasons", "latency_svg", "reason_counts", "render",
           "throughput_svg", "write_report"]

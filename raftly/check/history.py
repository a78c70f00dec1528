"""Recording a run: the client history and the nemesis log, one JSON object per line.

The history is in the Jepsen model that ``raftly.testing.history`` defines (and the checker
reads); each line is an ``Event`` of that module::

    {"process":3,"type":"invoke","f":"write","key":"k1","value":"v3-17","time":1234567}
    {"process":3,"type":"ok","f":"write","key":"k1","value":"v3-17","time":1239001,"node":"n2"}

What this module adds is the run's side of it: ``time`` is ``time.monotonic_ns()`` of the runner
process, the clock the nemesis log uses too, so fault windows line up with operations; and
completions may carry extra fields that checkers ignore: ``node`` (the node that answered) and
``error`` (why an op failed or is unknown).

Every line is written (and flushed) as it happens, so a run that dies half-way still leaves a
history up to that point.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from raftly.testing.history import Event, EventType, Function


def now() -> int:
    """The one clock of a run (monotonic nanoseconds)."""
    return time.monotonic_ns()


@dataclass(slots=True)
class HistoryWriter:
    """Appends ops to ``path`` (JSON lines) and keeps them in memory for the report."""

    path: Path | None = None
    ops: list[dict[str, Any]] = field(default_factory=list)
    _file: IO[str] | None = None

    def __post_init__(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("w", encoding="utf-8")

    def record(self, process: int, type: EventType, f: Function, key: str, value: object,
               *, at: int | None = None, **extra: object) -> dict[str, Any]:
        """Append one event, timed now, or ``at`` (``now``'s clock) for an event whose time
        is known otherwise (a lease expiry's earliest moment, which lies ahead)."""
        event = Event(process, type, f, key, value, now() if at is None else at,
                      {k: v for k, v in extra.items() if v is not None})
        op = event.to_dict()
        self.ops.append(op)
        if self._file is not None:
            self._file.write(json.dumps(op, separators=(",", ":")) + "\n")
            self._file.flush()
        return op

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclass(slots=True)
class NemesisLog:
    """The fault log: a ``start`` and an ``end`` line per fault, sharing an ``id``.

    ``{"time": ns, "id": 4, "phase": "start", "f": "partition", "value": {...}}``. A fault that
    is still open when the run ends is closed by the final heal.
    """

    path: Path | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    _file: IO[str] | None = None
    _next_id: int = 1

    def __post_init__(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("w", encoding="utf-8")

    def _write(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        if self._file is not None:
            self._file.write(json.dumps(event, separators=(",", ":")) + "\n")
            self._file.flush()

    def start(self, f: str, value: object) -> int:
        fault_id = self._next_id
        self._next_id += 1
        self._write({"time": now(), "id": fault_id, "phase": "start", "f": f, "value": value})
        return fault_id

    def end(self, fault_id: int, f: str, value: object = None) -> None:
        self._write({"time": now(), "id": fault_id, "phase": "end", "f": f, "value": value})

    def note(self, f: str, value: object) -> None:
        """A point event (for example: final heal, cluster recovered)."""
        self._write({"time": now(), "phase": "note", "f": f, "value": value})

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Every JSON object of a JSON-lines file (blank lines skipped)."""
    out = []
    with Path(path).open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not JSON: {exc}") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{n}: expected a JSON object")
            out.append(obj)
    return out


def fault_windows(events: list[dict[str, Any]]) -> list[tuple[int, int, str, object]]:
    """(start, end, f, value) per fault; one never ended lasts until the last event. An end
    event's value (what the fault came to: a membership change's outcome) adds to the start's."""
    starts: dict[int, dict[str, Any]] = {}
    windows = []
    last = max((e["time"] for e in events), default=0)
    for e in events:
        if e.get("phase") == "start":
            starts[e["id"]] = e
        elif e.get("phase") == "end" and e.get("id") in starts:
            s = starts.pop(e["id"])
            value, outcome = s.get("value"), e.get("value")
            if isinstance(value, dict) and isinstance(outcome, dict):
                value = {**value, **outcome}
            windows.append((s["time"], e["time"], s["f"], value))
    for s in starts.values():
        windows.append((s["time"], last, s["f"], s.get("value")))
    return sorted(windows, key=lambda w: w[0])


__all__ = ["HistoryWriter", "NemesisLog", "fault_windows", "now", "read_jsonl"]

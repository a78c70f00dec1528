"""The history model (Jepsen style): events, operations, pairing, loading and dumping.

Everything that reads, writes or pairs a client history goes through this module: the
linearizability checker (``raftly.testing.linearizability``), and ``raftly check``, which records
histories and renders reports from them. It uses the standard library only.

History model
=============
A history is a sequence of events, one JSON object per line::

    {"process": 3, "type": "invoke", "f": "write", "key": "k1", "value": "v17", "time": 100}
    {"process": 3, "type": "ok",     "f": "write", "key": "k1", "value": "v17", "time": 120}
    {"process": 4, "type": "invoke", "f": "cas",   "key": "k2", "value": ["v3", "v9"], "time": 124}
    {"process": 4, "type": "fail",   "f": "cas",   "key": "k2", "value": ["v3", "v9"], "time": 125}
    {"process": 5, "type": "invoke", "f": "read",  "key": "k1", "value": null, "time": 126}
    {"process": 5, "type": "ok",     "f": "read",  "key": "k1", "value": "v17", "time": 130}

- ``type`` is ``invoke``, ``ok``, ``fail`` (the op definitely did not take effect) or ``info``
  (unknown outcome: timeout, 504, lost connection). A process that got ``info`` never issues
  again; the client continues under a new process number.
- ``f`` is ``read``, ``write`` or ``cas``; a cas value is ``[old, new]``; a read's ``ok`` carries
  the value read, ``null`` for a missing key. Every register starts as ``null``.
- ``time`` is a monotonic clock reading (nanoseconds in ``raftly check``), one clock for all
  processes. Events whose ``process`` is ``"nemesis"`` are skipped, as in Jepsen histories.
- An invocation that never completes by the end of the history counts as ``info``.

API
===
``load_history`` / ``dump_history`` read and write JSON lines; ``pair_events`` pairs each
invocation with its completion event (what a report shows: times, nodes, errors);
``pair_operations`` turns those pairs into ``Operation`` records (what the checker searches).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, Final, Literal, TypeAlias, cast

__all__ = [
    "Event",
    "EventType",
    "Function",
    "HistoryError",
    "Key",
    "Operation",
    "Pair",
    "Process",
    "Status",
    "Time",
    "dump_history",
    "load_history",
    "pair_events",
    "pair_operations",
]

EventType: TypeAlias = Literal["invoke", "ok", "fail", "info"]
Function: TypeAlias = Literal["read", "write", "cas"]
Status: TypeAlias = Literal["ok", "fail", "info"]
Key: TypeAlias = str | int
Process: TypeAlias = int | str
Time: TypeAlias = int | float

_EVENT_TYPES: Final = frozenset({"invoke", "ok", "fail", "info"})
_FUNCTIONS: Final = frozenset({"read", "write", "cas"})
_NEMESIS: Final = "nemesis"


class HistoryError(ValueError):
    """A malformed history. ``line`` is the 1-based line of the file or list it was loaded
    from, or for events built in code, the 1-based position in the sequence (``event N``)."""

    def __init__(self, message: str, line: int | None = None, *, label: str = "line") -> None:
        self.line = line
        super().__init__(f"{label} {line}: {message}" if line is not None else message)


@dataclass(slots=True, frozen=True)
class Event:
    """One line of a history: an invocation or a completion of an op by a process."""

    process: Process
    type: EventType
    f: Function
    key: Key
    value: Any
    time: Time
    #: Any other fields of the line (for example an error message), kept for dumping.
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    #: The line it was loaded from (1-based), for error messages; None when built in code.
    line: int | None = field(default=None, compare=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], line: int | None = None) -> Event:
        """Validate one JSON object and build an event; raise ``HistoryError`` if malformed."""
        if not isinstance(d, Mapping):
            raise HistoryError(f"expected a JSON object, got {type(d).__name__}", line)
        missing = [k for k in ("process", "type", "f", "key", "time") if k not in d]
        if missing:
            raise HistoryError(f"missing field(s) {', '.join(missing)} in {dict(d)!r}", line)
        process, type_, f, key, time = d["process"], d["type"], d["f"], d["key"], d["time"]
        value = d.get("value")
        if isinstance(process, bool) or not isinstance(process, int | str):
            raise HistoryError(f"process must be an integer or a string, got {process!r}", line)
        if type_ not in _EVENT_TYPES:
            raise HistoryError(
                f"unknown type {type_!r} (expected invoke, ok, fail or info)", line
            )
        if f not in _FUNCTIONS:
            raise HistoryError(f"unknown f {f!r} (expected read, write or cas)", line)
        if isinstance(key, bool) or not isinstance(key, str | int):
            raise HistoryError(f"key must be a string or an integer, got {key!r}", line)
        if isinstance(time, bool) or not isinstance(time, int | float) or not math.isfinite(time):
            raise HistoryError(f"time must be a finite number, got {time!r}", line)
        if f == "cas" and type_ in ("invoke", "ok"):
            if not isinstance(value, list | tuple) or len(value) != 2:
                raise HistoryError(f"a cas value must be [old, new], got {value!r}", line)
            value = (value[0], value[1])
        extra = {k: v for k, v in d.items() if k not in _FIELDS}
        return cls(process, type_, f, key, value, time, extra, line)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object for this event (a cas value becomes a list)."""
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        d: dict[str, Any] = {
            "process": self.process,
            "type": self.type,
            "f": self.f,
            "key": self.key,
            "value": value,
            "time": self.time,
        }
        d.update(self.extra)
        return d


_FIELDS: Final = frozenset({"process", "type", "f", "key", "value", "time"})


@dataclass(slots=True, frozen=True)
class Operation:
    """An invocation paired with its completion.

    ``value`` is the argument (the written value, ``(old, new)`` for a cas, ``None`` for a read);
    ``output`` is what an ``ok`` read returned (``None`` otherwise). ``ret`` is ``None`` for an
    ``info`` op: it never returned and may take effect at any time after ``call``, or never.
    ``index`` is the op's position in ``pair_operations``' output (invocation order), a stable
    id for reports.
    """

    index: int
    process: Process
    f: Function
    key: Key
    value: Any
    output: Any
    status: Status
    call: Time
    ret: Time | None

    def describe(self) -> str:
        """A one-line human description, e.g. ``p3 write 'k1' 'v17' ok [100, 250]``."""
        if self.f == "read":
            what = f"read {self.key!r} -> {self.output!r}" if self.status == "ok" else (
                f"read {self.key!r}"
            )
        elif self.f == "write":
            what = f"write {self.key!r} {self.value!r}"
        else:
            what = f"cas {self.key!r} {self.value[0]!r} -> {self.value[1]!r}"
        end = "∞" if self.ret is None else str(self.ret)
        return f"#{self.index} p{self.process} {what} {self.status} [{self.call}, {end}]"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (cas arguments become lists), for reports."""
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return {
            "index": self.index,
            "process": self.process,
            "f": self.f,
            "key": self.key,
            "value": value,
            "output": self.output,
            "status": self.status,
            "call": self.call,
            "ret": self.ret,
        }


def load_history(
    source: str | os.PathLike[str] | Iterable[str] | Iterable[Mapping[str, Any]],
) -> list[Event]:
    """Load events from a JSON-lines file path, an iterable of lines, or of dicts.

    Blank lines are skipped. Events of the ``"nemesis"`` process are skipped. Raises
    ``HistoryError`` naming the line for anything malformed.
    """
    if isinstance(source, str | os.PathLike):
        with open(source, encoding="utf-8") as fh:
            return _parse(fh)
    return _parse(source)


def _parse(items: Iterable[str] | Iterable[Mapping[str, Any]]) -> list[Event]:
    events = []
    for number, item in enumerate(items, start=1):
        if isinstance(item, str):
            if not item.strip():
                continue
            try:
                item = json.loads(item)
            except json.JSONDecodeError as e:
                raise HistoryError(f"invalid JSON: {e.msg}", number) from None
        if isinstance(item, Mapping) and item.get("process") == _NEMESIS:
            continue
        events.append(Event.from_dict(cast(Mapping[str, Any], item), number))
    return events


def dump_history(events: Iterable[Event], dest: str | os.PathLike[str] | IO[str]) -> None:
    """Write events as JSON lines to a path or an open text file."""
    if isinstance(dest, str | os.PathLike):
        with open(dest, "w", encoding="utf-8") as fh:
            _dump(events, fh)
    else:
        _dump(events, dest)


def _dump(events: Iterable[Event], fh: IO[str]) -> None:
    for event in events:
        fh.write(json.dumps(event.to_dict(), separators=(", ", ": ")))
        fh.write("\n")


Pair: TypeAlias = tuple[Event, Event | None]
"""An invocation and its completion; ``None`` when the history ended before one came."""


def pair_events(events: Iterable[Event]) -> list[Pair]:
    """Pair each invocation with its process's next completion, in invocation order.

    Raises ``HistoryError`` for a completion without an open invocation, a process that invokes
    while it has an op open (or after an ``info``, which leaves its op open forever), a completion
    whose f or key differs from its invocation, an ``ok`` write or cas whose value differs from the
    invocation's, and a completion earlier than its invocation.
    """
    open_: dict[Process, tuple[int, Event, str]] = {}
    crashed: dict[Process, str] = {}
    pairs: list[Pair] = []
    for number, ev in enumerate(events, start=1):
        # Name events by the line they came from, when loaded from a file or list of lines.
        line, label = (ev.line, "line") if ev.line is not None else (number, "event")
        where = f"{label} {line}"

        def error(message: str, line: int = line, label: str = label) -> HistoryError:
            return HistoryError(message, line, label=label)

        p = ev.process
        if ev.type == "invoke":
            if p in open_:
                raise error(
                    f"process {p!r} invokes {ev.f} while its {open_[p][1].f} invoked at "
                    f"{open_[p][2]} is still open"
                )
            if p in crashed:
                raise error(
                    f"process {p!r} invokes {ev.f} after an info completion at "
                    f"{crashed[p]}; a process with an unknown outcome must not issue again "
                    "(use a new process number)"
                )
            open_[p] = (len(pairs), ev, where)
            pairs.append((ev, None))
            continue
        if p not in open_:
            raise error(f"{ev.type} {ev.f} of process {p!r} without an invocation")
        slot, inv, _ = open_.pop(p)
        if ev.f != inv.f or ev.key != inv.key:
            raise error(
                f"completion {ev.f} {ev.key!r} of process {p!r} does not match its invocation "
                f"{inv.f} {inv.key!r}"
            )
        if ev.time < inv.time:
            raise error(
                f"completion of process {p!r} at time {ev.time} precedes its invocation at "
                f"{inv.time}"
            )
        if ev.type == "ok" and inv.f != "read" and ev.value != inv.value:
            raise error(
                f"ok {inv.f} of process {p!r} completes with value {ev.value!r} but was "
                f"invoked with {inv.value!r}"
            )
        if ev.type == "info":
            crashed[p] = where
        pairs[slot] = (inv, ev)
    return pairs


def pair_operations(events: Iterable[Event]) -> list[Operation]:
    """The ops of a history, in invocation order, as ``pair_events`` pairs them (and raising
    ``HistoryError`` as it does). Ops still open at the end of the history become ``info``."""
    return [_operation(index, inv, done) for index, (inv, done) in enumerate(pair_events(events))]


def _operation(index: int, inv: Event, done: Event | None) -> Operation:
    if done is None:  # the history ended first: the outcome is unknown
        status: Status = "info"
    else:
        assert done.type != "invoke"  # pair_events pairs an invocation with a completion only
        status = done.type
    return Operation(
        index=index,
        process=inv.process,
        f=inv.f,
        key=inv.key,
        value=None if inv.f == "read" else inv.value,
        output=done.value if done is not None and inv.f == "read" and status == "ok" else None,
        status=status,
        call=inv.time,
        ret=None if done is None or status == "info" else done.time,
    )

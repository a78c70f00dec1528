"""Linearizability checker for key-value histories: read, write and compare-and-set registers.

This module owns the checker that decides whether a recorded history is linearizable; the
history model it reads (events, operations, loading, pairing, dumping) lives in
``raftly.testing.history`` and is re-exported here. It is pure Python and uses the standard
library only: no asyncio, no sockets, no clock except to enforce the time budget. The
``raftly check`` runner records histories and renders reports on top of this API.

History model
=============
See ``raftly.testing.history``: one JSON object per line, ``type`` ``invoke``/``ok``/``fail``/
``info``, ``f`` ``read``/``write``/``cas``. An invocation that never completes by the end of the
history counts as ``info``.

Semantics used by the checker
=============================
- ``fail`` ops did not happen and are dropped; a ``fail`` cas is how a cas that found another
  value reports itself.
- ``info`` writes and cas may have taken effect at any time after their invocation, or never:
  they are optional and their return time is +infinity. An ``info`` read tells nothing and is
  dropped.
- Keys are independent registers (P-compositionality), so each key is checked on its own.

The search is Wing & Gong's algorithm with Lowe's just-in-time linearization and a cache of
(linearized set, register value), as in Porcupine: a depth-first search over the time-ordered
list of call and return entries that tries to linearize each pending call before the first
return it meets, and backtracks when a return arrives whose call could not be placed. Two
reductions keep ``info`` ops from blowing the search up, both exact (they never change the
verdict):

- an ``info`` write or cas whose value nobody observes (no ``ok`` read returns it, no ``ok`` cas
  expects it) can always be assumed never to have happened, so it is dropped;
- an ``info`` write or cas that is the only writer of a value which some ``ok`` op observed must
  have happened before the first such observer returned, so it gets that return time and is no
  longer optional.

Histories with unique written values (as ``raftly check`` records them) therefore rarely keep any
optional op. The search still honours a time budget: a key it cannot decide is ``unknown``, and
``unknown`` never counts as passing.

Lost writes
===========
A lost write (an acknowledged write that later disappears) is a linearizability violation as soon
as some read after the write's acknowledgement returns an older value, so the checker catches it
whenever such a read exists. ``final_reads``: to make sure it exists, end every run by healing the
cluster and having a client read every key once more after all other ops completed; those final
reads then pin the last acknowledged value of each key and a lost write shows as an anomaly.

API
===
``check`` returns a ``CheckResult`` with a verdict per key and, for a key that is not
linearizable, an ``Anomaly`` listing the ops that conflict. ``generate_history`` makes random
linearizable histories for tests and benchmarks. ``load_history``, ``dump_history`` and
``pair_operations`` (JSON lines in and out, events into ``Operation`` records) come from
``raftly.testing.history``.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import math
import os
import random
import time as _time
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

# The history model used to live here: its names stay importable from this module.
from raftly.testing.history import (
    Event,
    Function,
    HistoryError,
    Key,
    Operation,
    Time,
    dump_history,
    load_history,
    pair_operations,
)

__all__ = [
    "Anomaly",
    "CheckResult",
    "Event",
    "HistoryError",
    "KeyResult",
    "Operation",
    "Verdict",
    "check",
    "dump_history",
    "generate_history",
    "load_history",
    "pair_operations",
]


# --------------------------------------------------------------------------------------------
# Results


class Verdict(enum.StrEnum):
    """The outcome for a key or a whole history. Only ``OK`` is a pass."""

    OK = "ok"
    NOT_LINEARIZABLE = "not linearizable"
    UNKNOWN = "unknown"


@dataclass(slots=True, frozen=True)
class Anomaly:
    """Why one key is not linearizable, from the longest linearization the search found.

    ``op`` is the op that could not take effect before it returned; ``state`` is the register's
    value at that point, after ``linearized`` (the longest linearizable prefix found, in
    linearization order). ``pending`` are the other ops that could still have taken effect there.
    ``ops`` is the short explanation to show: ``op``, the op that set ``state``, the op that wrote
    what ``op`` read or expected (if any), and the pending ops, ordered by call time.
    """

    key: Key
    op: Operation
    state: Any
    linearized: tuple[Operation, ...]
    pending: tuple[Operation, ...]
    ops: tuple[Operation, ...]
    explanation: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict for reports (``linearized`` is cut to its last 20 ops)."""
        return {
            "key": self.key,
            "op": self.op.to_dict(),
            "state": self.state,
            "linearized_count": len(self.linearized),
            "linearized_tail": [o.to_dict() for o in self.linearized[-20:]],
            "pending": [o.to_dict() for o in self.pending],
            "ops": [o.to_dict() for o in self.ops],
            "explanation": self.explanation,
        }


@dataclass(slots=True, frozen=True)
class KeyResult:
    """The verdict for one key.

    ``operations`` counts the ops the search considered (after dropping failed ops, info reads
    and unobserved info writes); ``explored`` counts search steps.
    """

    key: Key
    verdict: Verdict
    operations: int
    anomaly: Anomaly | None
    elapsed: float
    explored: int


@dataclass(slots=True, frozen=True)
class CheckResult:
    """The verdict for a history: ``NOT_LINEARIZABLE`` if any key is, else ``UNKNOWN`` if any key
    could not be decided within the budget, else ``OK``.

    ``counts`` holds how many ops completed ``ok``, ``fail`` and ``info``.
    """

    verdict: Verdict
    keys: dict[Key, KeyResult]
    counts: dict[str, int]
    elapsed: float

    @property
    def ok(self) -> bool:
        """True only when every key was proven linearizable."""
        return self.verdict is Verdict.OK

    @property
    def anomalies(self) -> list[Anomaly]:
        """Every anomaly found, shortest explanation first."""
        found = [r.anomaly for r in self.keys.values() if r.anomaly is not None]
        return sorted(found, key=lambda a: (len(a.ops), a.op.call))

    @property
    def anomaly(self) -> Anomaly | None:
        """The shortest anomaly found, or None."""
        found = self.anomalies
        return found[0] if found else None

    @property
    def unknown_keys(self) -> list[Key]:
        """Keys the budget ran out on."""
        return [k for k, r in self.keys.items() if r.verdict is Verdict.UNKNOWN]

    def summary(self) -> str:
        """A few human lines: the verdict, each key's verdict, the shortest anomaly."""
        lines = [
            f"{self.verdict}: {len(self.keys)} keys, {self.counts.get('ok', 0)} ok, "
            f"{self.counts.get('fail', 0)} fail, {self.counts.get('info', 0)} info ops, "
            f"checked in {self.elapsed:.2f} s"
        ]
        for k, r in self.keys.items():
            lines.append(f"  key {k!r}: {r.verdict} ({r.operations} ops, {r.elapsed:.2f} s)")
        if self.anomaly is not None:
            lines.append(self.anomaly.explanation)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict for reports."""
        return {
            "verdict": str(self.verdict),
            "counts": dict(self.counts),
            "elapsed": self.elapsed,
            "keys": [
                {
                    "key": r.key,
                    "verdict": str(r.verdict),
                    "operations": r.operations,
                    "elapsed": r.elapsed,
                    "explored": r.explored,
                    "anomaly": None if r.anomaly is None else r.anomaly.to_dict(),
                }
                for r in self.keys.values()
            ],
        }


# --------------------------------------------------------------------------------------------
# The checker


def check(
    history: str | os.PathLike[str] | Iterable[Event] | Iterable[Operation],
    *,
    time_budget: float | None = 10.0,
) -> CheckResult:
    """Check a history (a path, events, or paired operations) for linearizability.

    ``time_budget`` is in seconds of wall time for the whole history; ``None`` means no limit.
    Keys are searched round-robin in small slices, so one hard key does not starve the others;
    keys still undecided when the budget runs out are ``unknown``.
    """
    start = _time.monotonic()
    ops = _as_operations(history)
    counts = {"ok": 0, "fail": 0, "info": 0}
    by_key: dict[Key, list[Operation]] = {}
    for op in ops:
        counts[op.status] += 1
        by_key.setdefault(op.key, []).append(op)

    searches: dict[Key, _KeySearch] = {}
    for key in sorted(by_key, key=lambda k: (isinstance(k, str), k)):
        searches[key] = _KeySearch(key, by_key[key])
    deadline = None if time_budget is None else start + time_budget
    active = list(searches.values())
    out_of_time = False
    while active and not out_of_time:
        still = []
        for i, s in enumerate(active):
            if not s.run_slice():
                still.append(s)
            if deadline is not None and _time.monotonic() >= deadline:
                # Keys not reached in this round stay undecided too.
                still.extend(active[i + 1:])
                out_of_time = True
                break
        active = still

    results = {key: s.result() for key, s in searches.items()}
    verdicts = {r.verdict for r in results.values()}
    if Verdict.NOT_LINEARIZABLE in verdicts:
        verdict = Verdict.NOT_LINEARIZABLE
    elif Verdict.UNKNOWN in verdicts:
        verdict = Verdict.UNKNOWN
    else:
        verdict = Verdict.OK
    return CheckResult(verdict, results, counts, _time.monotonic() - start)


def _as_operations(
    history: str | os.PathLike[str] | Iterable[Event] | Iterable[Operation],
) -> list[Operation]:
    if isinstance(history, str | os.PathLike):
        return pair_operations(load_history(history))
    items = list(history)
    if all(isinstance(x, Operation) for x in items):
        return cast(list[Operation], items)
    if all(isinstance(x, Event) for x in items):
        return pair_operations(cast(list[Event], items))
    raise TypeError("check() takes a path, a sequence of Event or a sequence of Operation")


_READ: Final = 0
_WRITE: Final = 1
_CAS: Final = 2
_KINDS: Final = {"read": _READ, "write": _WRITE, "cas": _CAS}
#: Search steps between two looks at the clock (and turns of the round-robin).
_SLICE: Final = 2048
#: The cache is emptied when it holds this many configurations, or when their bitsets add up to
#: _CACHE_BITS (a key with n ops stores n-bit sets, so long single-key histories hit this first).
#: The cache only prunes, so forgetting it is safe; it keeps memory bounded on long searches.
_CACHE_LIMIT: Final = 2_000_000
_CACHE_BITS: Final = 1 << 31


def _freeze(v: Any) -> Any:
    """A hashable stand-in for a JSON value, telling 1, 1.0 and True apart."""
    if isinstance(v, list | tuple):
        return ("list", tuple(_freeze(x) for x in v))
    if isinstance(v, dict):
        return ("dict", tuple(sorted((str(k), _freeze(x)) for k, x in v.items())))
    return (type(v).__name__, v)


class _KeySearch:
    """The search for one key, run in slices by ``check``."""

    def __init__(self, key: Key, ops: list[Operation]) -> None:
        self.key = key
        self.elapsed = 0.0
        self.outcome: _Outcome | None = None
        self.explored = 0
        self.kept = _reduce(ops)
        self.all_ops = ops
        self.gen = self._search()

    def run_slice(self) -> bool:
        """Run one slice; True once the search is decided."""
        if self.outcome is not None:
            return True
        t0 = _time.monotonic()
        try:
            next(self.gen)
        except StopIteration as stop:
            self.outcome = stop.value
        self.elapsed += _time.monotonic() - t0
        return self.outcome is not None

    def result(self) -> KeyResult:
        if self.outcome is None:
            return KeyResult(
                self.key, Verdict.UNKNOWN, len(self.kept.ops), None, self.elapsed, self.explored
            )
        anomaly = None if self.outcome.ok else self._anomaly(self.outcome)
        verdict = Verdict.OK if self.outcome.ok else Verdict.NOT_LINEARIZABLE
        return KeyResult(
            self.key, verdict, len(self.kept.ops), anomaly, self.elapsed, self.explored
        )

    def _search(self) -> Generator[None, None, _Outcome]:
        """Wing & Gong / Lowe just-in-time linearization with Porcupine's cache.

        Lifting an op unlinks its call and return entries from the lists ``_link_entries``
        builds, and unlifting relinks them in reverse order, which the LIFO order of the
        depth-first search guarantees. At each node the search first tries the definite calls
        before the first return entry, then the optional calls invoked before that return:
        trying optional ops last means they are placed only when some op needs them, which keeps
        their combinations out of the search on histories that pass.
        """
        k = self.kept
        n = len(k.ops)
        kind, arg_a, arg_b, definite = k.kind, k.arg_a, k.arg_b, k.definite
        links = _link_entries(k)
        # Locals, not attribute look-ups: this loop is the checker's hot path.
        nxt, prv, pos = links.nxt, links.prv, links.pos
        head, ihead, itail = links.head, links.ihead, links.itail

        remaining = sum(definite)
        state = 0  # interned None: every register starts empty
        linearized = 0  # bit i set when op i is linearized
        stack: list[tuple[int, int, int]] = []  # (op, state before it, bound when it was tried)
        cache: set[tuple[int, int]] = set()
        cache_limit = max(10_000, min(_CACHE_LIMIT, _CACHE_BITS // max(1, n)))
        best_depth = -1
        best: tuple[list[int], int, int, list[int]] | None = None
        entry = nxt[head]
        bound = -1  # -1: scanning definite calls; else the return entry that bounds optional calls
        steps = 0
        while remaining:
            steps += 1
            if steps % _SLICE == 0:
                self.explored = steps
                yield
            if bound < 0:
                if entry >= n:  # a return entry: no definite call before it fits here
                    bound = entry
                    entry = nxt[ihead]
                    continue
            elif entry == itail or pos[entry] > pos[bound]:
                # Dead end: the op of `bound` returned before it could take effect.
                if len(stack) > best_depth:
                    best_depth = len(stack)
                    pending = self._pending(nxt, pos, n, head, ihead, bound)
                    best = ([s[0] for s in stack], bound - n, state, pending)
                if not stack:
                    self.explored = steps
                    assert best is not None
                    return _Outcome(False, *best)
                op, state, bound = stack.pop()
                linearized ^= 1 << op
                # Unlift: relink the return entry, then the call, undoing `lift` exactly.
                if definite[op]:
                    r = n + op
                    nxt[prv[r]] = r
                    prv[nxt[r]] = r
                    remaining += 1
                nxt[prv[op]] = op
                prv[nxt[op]] = op
                entry = nxt[op]
                continue
            # `entry` is a call: try to let its op take effect now.
            kd = kind[entry]
            if kd == _READ:
                fits, new = state == arg_a[entry], state
            elif kd == _WRITE:
                fits, new = True, arg_a[entry]
            else:
                fits, new = state == arg_a[entry], arg_b[entry]
            if fits:
                lin = linearized | (1 << entry)
                if (lin, new) not in cache:
                    if len(cache) >= cache_limit:
                        cache.clear()
                    cache.add((lin, new))
                    stack.append((entry, state, bound))
                    state, linearized = new, lin
                    nxt[prv[entry]] = nxt[entry]
                    prv[nxt[entry]] = prv[entry]
                    if definite[entry]:
                        r = n + entry
                        nxt[prv[r]] = nxt[r]
                        prv[nxt[r]] = prv[r]
                        remaining -= 1
                    entry = nxt[head]
                    bound = -1
                    continue
            entry = nxt[entry]
        self.explored = steps
        return _Outcome(True, [], -1, 0, [])

    @staticmethod
    def _pending(nxt: list[int], pos: list[int], n: int, head: int, ihead: int,
                 bound: int) -> list[int]:
        """The ops that could still have taken effect at a dead end: calls before ``bound``."""
        out = []
        e = nxt[head]
        while e != bound:
            if e < n:
                out.append(e)
            e = nxt[e]
        e = nxt[ihead]
        while e < n and pos[e] < pos[bound]:
            out.append(e)
            e = nxt[e]
        return [o for o in out if o != bound - n]

    def _anomaly(self, outcome: _Outcome) -> Anomaly:
        k = self.kept
        ops = k.ops
        op = ops[outcome.failed]
        linearized = tuple(ops[i] for i in outcome.linearized)
        pending = tuple(ops[i] for i in outcome.pending)
        state = k.values[outcome.state]
        setter = next((o for o in reversed(linearized) if o.f != "read"), None)
        shown: dict[int, Operation] = {op.index: op}
        parts = [f"{op.describe()} cannot take effect before it returns."]
        if setter is None:
            parts.append(f"At that point the register still holds its initial value {state!r}.")
        else:
            shown[setter.index] = setter
            parts.append(
                f"After the longest linearizable prefix found ({len(linearized)} ops) the "
                f"register holds {state!r}, set by {setter.describe()}."
            )
        wanted: tuple[bool, Any] = (False, None)
        if op.f == "read":
            wanted = (True, op.output)
        elif op.f == "cas":
            wanted = (True, op.value[0])
        if wanted[0] and _freeze(wanted[1]) != _freeze(state):
            value = wanted[1]
            verb = "read" if op.f == "read" else "expected"
            writers = [
                o for o in self.all_ops
                if o.status != "fail" and o.f != "read"
                and _freeze(o.value if o.f == "write" else o.value[1]) == _freeze(value)
            ]
            if writers:
                w = max(writers, key=lambda o: o.call if o.call <= op.call else -math.inf)
                shown[w.index] = w
                parts.append(f"It {verb} {value!r}, written by {w.describe()}.")
            elif value is None:
                parts.append(f"It {verb} {value!r}, the initial value, which was overwritten.")
            else:
                parts.append(f"It {verb} {value!r}, which no op ever wrote.")
        for o in pending:
            shown[o.index] = o
        if pending:
            parts.append(
                "Ops that could also have taken effect there: "
                + "; ".join(o.describe() for o in pending)
                + "."
            )
        conflict = tuple(sorted(shown.values(), key=lambda o: (o.call, o.index)))
        return Anomaly(
            key=self.key,
            op=op,
            state=state,
            linearized=linearized,
            pending=pending,
            ops=conflict,
            explanation=f"key {self.key!r} is not linearizable: " + " ".join(parts),
        )


@dataclass(slots=True)
class _Links:
    """A key's call and return entries as doubly linked lists in flat int arrays (dancing links).

    Node ``i < n`` is op i's call, ``n + i`` its return. Definite ops (those that returned, or
    whose return time a reduction bounded) sit in one list from ``head`` to ``tail`` with their
    call and return entries; optional ``info`` ops have no return entry and sit in a second list
    from ``ihead`` to ``itail`` by call time. ``pos`` is each entry's place in time order.
    """

    nxt: list[int]
    prv: list[int]
    pos: list[int]
    head: int
    tail: int
    ihead: int
    itail: int


def _link_entries(k: _Reduced) -> _Links:
    n = len(k.ops)
    definite = k.definite
    links = _Links([0] * (2 * n + 4), [0] * (2 * n + 4), [0] * (2 * n + 4),
                   2 * n, 2 * n + 1, 2 * n + 2, 2 * n + 3)
    nxt, prv, pos = links.nxt, links.prv, links.pos

    entries: list[tuple[float, int, int]] = []
    for i in range(n):
        entries.append((k.call[i], 0, i))
        if definite[i]:
            entries.append((k.ret[i], 1, n + i))
    # Calls sort before returns at equal times: ops that touch in time count as concurrent,
    # which can only accept more, never refute a history that a finer clock would accept.
    entries.sort()
    for p, (_, _, node) in enumerate(entries):
        pos[node] = p
    pos[links.tail] = pos[links.itail] = len(entries)

    def link(first: int, last: int, nodes: list[int]) -> None:
        prev = first
        for node in nodes:
            nxt[prev] = node
            prv[node] = prev
            prev = node
        nxt[prev] = last
        prv[last] = prev
        nxt[last] = last

    link(links.head, links.tail, [e[2] for e in entries if e[2] >= n or definite[e[2]]])
    link(links.ihead, links.itail, [e[2] for e in entries if e[2] < n and not definite[e[2]]])
    return links


@dataclass(slots=True)
class _Outcome:
    ok: bool
    linearized: list[int]
    failed: int
    state: int
    pending: list[int]


@dataclass(slots=True)
class _Reduced:
    """A key's ops as the search sees them: parallel arrays indexed by op number."""

    ops: list[Operation]
    values: list[Any]  # interned value id -> value
    kind: list[int]
    arg_a: list[int]  # read: output; write: value; cas: old
    arg_b: list[int]  # cas: new
    definite: list[bool]  # must take effect before ret; else optional with ret = +inf
    call: list[Time]
    ret: list[float]


def _reduce(ops: list[Operation]) -> _Reduced:
    """Drop what carries no information and bound what it can (see the module docstring)."""
    ids: dict[Any, int] = {_freeze(None): 0}
    values: list[Any] = [None]

    def intern(v: Any) -> int:
        fv = _freeze(v)
        i = ids.get(fv)
        if i is None:
            i = ids[fv] = len(values)
            values.append(v)
        return i

    def written(op: Operation) -> int:
        return intern(op.value if op.f == "write" else op.value[1])

    # Observed values: what ok reads return and ok cas expect. Any op that writes an observed
    # value is needed; an info cas that is needed also makes its expected value needed.
    observers: dict[int, list[Operation]] = {}
    for op in ops:
        if op.status == "ok" and op.f != "write":
            v = intern(op.output if op.f == "read" else op.value[0])
            observers.setdefault(v, []).append(op)
    needed = set(observers)
    optional = [op for op in ops if op.status == "info" and op.f != "read"]
    kept_optional: list[Operation] = []
    changed = True
    while changed:
        changed = False
        rest = []
        for op in optional:
            if written(op) in needed:
                kept_optional.append(op)
                if op.f == "cas":
                    old = intern(op.value[0])
                    if old not in needed:
                        needed.add(old)
                        changed = True
            else:
                rest.append(op)
        optional = rest

    writers: dict[int, int] = {}
    for op in ops:
        if op.status != "fail" and op.f != "read":
            w = written(op)
            writers[w] = writers.get(w, 0) + 1

    kept = [op for op in ops if op.status == "ok"] + kept_optional
    kept.sort(key=lambda o: o.index)
    r = _Reduced(kept, values, [], [], [], [], [], [])
    for op in kept:
        r.kind.append(_KINDS[op.f])
        if op.f == "read":
            r.arg_a.append(intern(op.output))
            r.arg_b.append(0)
        elif op.f == "write":
            r.arg_a.append(intern(op.value))
            r.arg_b.append(0)
        else:
            r.arg_a.append(intern(op.value[0]))
            r.arg_b.append(intern(op.value[1]))
        r.call.append(op.call)
        if op.ret is not None:
            r.definite.append(True)
            r.ret.append(op.ret)
            continue
        # The sole writer of an observed value took effect before its first observer returned.
        w = written(op)
        bound = min((o.ret for o in observers.get(w, ()) if o.ret is not None), default=None)
        if w != 0 and writers[w] == 1 and bound is not None and bound >= op.call:
            r.definite.append(True)
            r.ret.append(bound)
        else:
            r.definite.append(False)
            r.ret.append(math.inf)
    return r


# --------------------------------------------------------------------------------------------
# Random histories for tests and benchmarks


def generate_history(
    rng: random.Random,
    *,
    ops: int = 1000,
    processes: int = 10,
    keys: int = 8,
    info_rate: float = 0.05,
    fail_rate: float = 0.02,
    slow_rate: float = 0.05,
    values: int | None = None,
    read_rate: float = 0.5,
    cas_rate: float = 0.2,
) -> list[Event]:
    """A random linearizable history of about ``ops`` ops, in the shape of a faulty run.

    Each of ``processes`` clients loops: think, invoke a random read, write or cas on one of
    ``keys`` keys, complete. Latencies are short with a ``slow_rate`` of long ones (as under a
    partition), so ops overlap. Every op that takes effect does so at a random instant inside
    its call and return, applied to a sequential register, which makes the history linearizable
    by construction. An ``info_rate`` of ops time out: they took effect (possibly after the
    timeout) or not, and their process is replaced by a new one. ``fail_rate`` of writes fail
    without effect; a cas fails when its expected value is not current. Written values are
    unique (``"v<n>"``) unless ``values`` is given, then they come from ``values`` choices.
    """
    counter = itertools.count(1)

    def new_value() -> Any:
        return f"v{next(counter)}" if values is None else rng.randrange(values)

    ms = 1_000_000
    clock: list[tuple[int, int]] = [(rng.randrange(ms), p) for p in range(processes)]
    heapq.heapify(clock)
    next_process = processes
    planned: list[dict[str, Any]] = []
    for _ in range(ops):
        t, p = heapq.heappop(clock)
        key = f"k{rng.randrange(keys)}"
        x = rng.random()
        f: Function = "read" if x < read_rate else "cas" if x < read_rate + cas_rate else "write"
        if rng.random() < slow_rate:
            latency = rng.randrange(5 * ms, 60 * ms)
        else:
            latency = 1 + int(rng.expovariate(1 / (0.5 * ms)))
        ret = t + latency
        y = rng.random()
        outcome = "info" if y < info_rate else "fail" if y < info_rate + fail_rate else "ok"
        effect: float | None = t + rng.random() * latency
        if outcome == "info":
            # A timed-out op may still land later, or never.
            effect = t + rng.random() * latency * 3 if rng.random() < 0.5 else None
        elif outcome == "fail":
            effect = None
        planned.append({"p": p, "f": f, "key": key, "call": t, "ret": ret,
                        "outcome": outcome, "effect": effect})
        if outcome == "info":
            p = next_process
            next_process += 1
        heapq.heappush(clock, (ret + rng.randrange(1, ms // 5), p))

    # Apply effects in effect-time order on one register per key.
    register: dict[str, Any] = {}
    timed = [op for op in planned if op["effect"] is not None]
    timed.sort(key=lambda op: op["effect"])
    for op in timed:
        cur = register.get(op["key"])
        if op["f"] == "read":
            op["value"] = cur
        elif op["f"] == "write":
            op["value"] = new_value()
            register[op["key"]] = op["value"]
        else:
            old = cur if rng.random() < 0.6 else new_value()
            new = new_value()
            op["value"] = [old, new]
            if _freeze(old) == _freeze(cur):
                register[op["key"]] = new
            elif op["outcome"] == "ok":
                op["outcome"] = "fail"
    for op in planned:
        if "value" not in op:  # never took effect
            op["value"] = None if op["f"] == "read" else (
                new_value() if op["f"] == "write" else [new_value(), new_value()]
            )
            if op["f"] == "cas" and op["outcome"] == "ok":
                op["outcome"] = "fail"

    seq = itertools.count()
    raw: list[tuple[int, int, Event]] = []
    for op in planned:
        inv_value = None if op["f"] == "read" else op["value"]
        raw.append((op["call"], next(seq), Event.from_dict({
            "process": op["p"], "type": "invoke", "f": op["f"], "key": op["key"],
            "value": inv_value, "time": op["call"]})))
        done_value = op["value"] if op["f"] != "read" or op["outcome"] == "ok" else None
        raw.append((op["ret"], next(seq), Event.from_dict({
            "process": op["p"], "type": op["outcome"], "f": op["f"], "key": op["key"],
            "value": done_value, "time": op["ret"]})))
    raw.sort(key=lambda x: (x[0], x[1]))
    return [e for _, _, e in raw]


def _main(argv: Sequence[str] | None = None) -> int:
    """``python -m raftly.testing.linearizability HISTORY.jsonl [--budget S]``."""
    import argparse

    parser = argparse.ArgumentParser(description="Check a JSON-lines history.")
    parser.add_argument("history", type=Path)
    parser.add_argument("--budget", type=float, default=10.0)
    args = parser.parse_args(argv)
    result = check(args.history, time_budget=args.budget)
    print(result.summary())
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(_main())

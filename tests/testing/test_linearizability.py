"""The linearizability checker: verdicts on handcrafted and random histories, anomaly
explanations, the time budget. (Loading and pairing histories: test_history.py.)"""

from __future__ import annotations

import dataclasses
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftly.testing.linearizability import (
    CheckResult,
    Event,
    Operation,
    Verdict,
    check,
    dump_history,
    generate_history,
    load_history,
    pair_operations,
)


class H:
    """Builds a history: ``h.op(p, "write", "k", "a", 0, 10)`` adds an invocation at 0 and an
    ok completion at 10; ``status`` picks the completion type, ``end=None`` leaves it open."""

    def __init__(self) -> None:
        self.events: list[tuple[float, int, dict[str, Any]]] = []
        self.seq = 0

    def op(
        self,
        p: int,
        f: str,
        key: str,
        value: Any,
        start: int,
        end: int | None,
        status: str = "ok",
    ) -> H:
        arg = None if f == "read" else value
        self._add(start, {"process": p, "type": "invoke", "f": f, "key": key, "value": arg,
                          "time": start})
        if end is not None:
            out = value if f != "read" or status == "ok" else None
            self._add(end, {"process": p, "type": status, "f": f, "key": key, "value": out,
                            "time": end})
        return self

    def _add(self, t: int, d: dict[str, Any]) -> None:
        self.events.append((t, self.seq, d))
        self.seq += 1

    def lines(self) -> list[str]:
        return [json.dumps(d) for _, _, d in sorted(self.events, key=lambda x: (x[0], x[1]))]

    def check(self, **kw: Any) -> CheckResult:
        return check(load_history(self.lines()), time_budget=kw.get("time_budget", 10.0))


def verdict(h: H) -> Verdict:
    return h.check().verdict


# --- accepted ---------------------------------------------------------------------------------


def test_empty_history_is_linearizable() -> None:
    r = check([])
    assert r.verdict is Verdict.OK and r.keys == {}


def test_sequential_history() -> None:
    h = (H().op(1, "read", "k", None, 0, 1)
         .op(1, "write", "k", "a", 2, 3)
         .op(2, "read", "k", "a", 4, 5)
         .op(2, "cas", "k", ["a", "b"], 6, 7)
         .op(1, "cas", "k", ["a", "c"], 8, 9, "fail")
         .op(1, "read", "k", "b", 10, 11))
    r = h.check()
    assert r.ok and r.verdict == "ok"
    assert r.counts == {"ok": 5, "fail": 1, "info": 0}
    assert r.keys["k"].operations == 5  # the failed cas is dropped


@pytest.mark.parametrize("seen", [None, "a"])
def test_read_concurrent_with_a_write_may_see_either_value(seen: str | None) -> None:
    h = H().op(1, "write", "k", "a", 0, 10).op(2, "read", "k", seen, 2, 8)
    assert verdict(h) is Verdict.OK


def test_overlapping_writes_reads_see_them_in_either_order() -> None:
    h = (H().op(1, "write", "k", "a", 0, 10).op(2, "write", "k", "b", 1, 9)
         .op(3, "read", "k", "b", 11, 12).op(3, "read", "k", "b", 13, 14))
    assert verdict(h) is Verdict.OK
    h = (H().op(1, "write", "k", "a", 0, 10).op(2, "write", "k", "b", 1, 9)
         .op(3, "read", "k", "a", 11, 12))
    assert verdict(h) is Verdict.OK


def test_info_write_that_takes_effect_later() -> None:
    # The write timed out at 5, but a read long after sees it: it took effect late.
    h = (H().op(1, "write", "k", "a", 0, 1)
         .op(2, "write", "k", "b", 2, 5, "info")
         .op(3, "read", "k", "a", 6, 7)
         .op(3, "read", "k", "b", 20, 21))
    assert verdict(h) is Verdict.OK


def test_info_write_that_never_takes_effect() -> None:
    h = (H().op(1, "write", "k", "a", 0, 1)
         .op(2, "write", "k", "b", 2, 5, "info")
         .op(3, "read", "k", "a", 6, 7)
         .op(3, "read", "k", "a", 20, 21))
    assert verdict(h) is Verdict.OK


def test_info_write_left_open_at_the_end_of_the_history() -> None:
    h = H().op(1, "write", "k", "a", 0, 1).op(2, "write", "k", "b", 2, None)
    h.op(3, "read", "k", "b", 6, 7)
    ops = pair_operations(load_history(h.lines()))
    assert [o.status for o in ops] == ["ok", "info", "ok"]
    assert ops[1].ret is None
    assert check(ops).ok


def test_info_ops_with_repeated_values_stay_optional() -> None:
    # Two writers of "a" make the unique-writer bound inapplicable: the info write stays optional
    # and the search must still place it where the read needs it.
    h = (H().op(1, "write", "k", "a", 0, 1)
         .op(1, "write", "k", "b", 2, 3)
         .op(2, "write", "k", "a", 4, 5, "info")
         .op(3, "read", "k", "b", 6, 7)
         .op(3, "read", "k", "a", 8, 9))
    assert verdict(h) is Verdict.OK


def test_info_cas_chain_is_kept_when_its_result_is_observed() -> None:
    # An info write feeds an info cas whose result a read sees: both had to happen.
    h = (H().op(1, "write", "k", "a", 0, 2, "info")
         .op(2, "cas", "k", ["a", "b"], 3, 4, "info")
         .op(3, "read", "k", "b", 10, 11))
    r = h.check()
    assert r.ok and r.keys["k"].operations == 3


def test_info_and_failed_reads_carry_no_information() -> None:
    h = (H().op(1, "write", "k", "a", 0, 1)
         .op(2, "read", "k", None, 2, 3, "info")
         .op(3, "read", "k", None, 4, 5, "fail"))
    r = h.check()
    assert r.ok and r.keys["k"].operations == 1


# --- refuted ----------------------------------------------------------------------------------


def test_stale_read_is_refuted_and_explained() -> None:
    h = (H().op(1, "write", "k", "a", 0, 1)
         .op(2, "write", "k", "b", 2, 3)
         .op(3, "read", "k", "a", 4, 5))
    r = h.check()
    assert r.verdict is Verdict.NOT_LINEARIZABLE and not r.ok
    a = r.anomaly
    assert a is not None and a.key == "k"
    assert (a.op.f, a.op.output) == ("read", "a")
    assert a.state == "b"
    assert [(o.f, o.value or o.output) for o in a.ops] == [("write", "a"), ("write", "b"),
                                                           ("read", "a")]
    assert [o.value for o in a.linearized] == ["a", "b"]
    assert "holds 'b'" in a.explanation and "written by" in a.explanation
    json.dumps(r.to_dict())  # the report can serialize it


def test_lost_write_is_refuted() -> None:
    # An acknowledged write is never visible: a later read still sees the old value.
    h = (H().op(1, "write", "k", "a", 0, 1)
         .op(2, "write", "k", "b", 2, 3)
         .op(3, "read", "k", "a", 10, 11)
         .op(3, "read", "k", "a", 12, 13))
    assert verdict(h) is Verdict.NOT_LINEARIZABLE
    h = H().op(1, "write", "k", "a", 0, 1).op(3, "read", "k", None, 10, 11)
    r = h.check()
    assert r.verdict is Verdict.NOT_LINEARIZABLE
    assert r.anomaly is not None and "initial value" in r.anomaly.explanation


def test_cas_that_succeeded_on_a_stale_value_is_refuted() -> None:
    h = (H().op(1, "write", "k", "a", 0, 1)
         .op(2, "write", "k", "b", 2, 3)
         .op(3, "cas", "k", ["a", "c"], 4, 5))
    r = h.check()
    assert r.verdict is Verdict.NOT_LINEARIZABLE
    assert r.anomaly is not None and r.anomaly.op.f == "cas"
    assert "expected 'a'" in r.anomaly.explanation


def test_read_of_a_value_never_written_is_refuted() -> None:
    h = H().op(1, "write", "k", "a", 0, 10).op(2, "read", "k", "zzz", 2, 8)
    r = h.check()
    assert r.verdict is Verdict.NOT_LINEARIZABLE
    assert r.anomaly is not None and "no op ever wrote" in r.anomaly.explanation


def test_a_failed_write_did_not_happen() -> None:
    h = H().op(1, "write", "k", "a", 0, 1, "fail").op(2, "read", "k", "a", 2, 3)
    assert verdict(h) is Verdict.NOT_LINEARIZABLE


def test_info_write_seen_then_unseen_is_refuted() -> None:
    h = (H().op(1, "write", "k", "a", 0, 1)
         .op(2, "write", "k", "b", 2, 5, "info")
         .op(3, "read", "k", "b", 6, 7)
         .op(3, "read", "k", "a", 8, 9))
    assert verdict(h) is Verdict.NOT_LINEARIZABLE


def test_read_before_the_only_write_of_its_value_was_invoked_is_refuted() -> None:
    h = H().op(3, "read", "k", "b", 0, 1).op(2, "write", "k", "b", 2, 5, "info")
    assert verdict(h) is Verdict.NOT_LINEARIZABLE


def test_keys_are_checked_independently() -> None:
    # Each key alone is fine; the anomaly on k2 is reported on k2 only.
    h = (H().op(1, "write", "k1", "a", 0, 10).op(2, "write", "k2", "a", 1, 2)
         .op(3, "read", "k1", "a", 3, 4).op(2, "write", "k2", "b", 5, 6)
         .op(4, "read", "k1", "a", 7, 8).op(4, "read", "k2", "a", 9, 11))
    r = h.check()
    assert r.verdict is Verdict.NOT_LINEARIZABLE
    assert r.keys["k1"].verdict is Verdict.OK
    assert r.keys["k2"].verdict is Verdict.NOT_LINEARIZABLE
    assert [a.key for a in r.anomalies] == ["k2"]
    # Values may repeat across keys: "a" on k1 says nothing about k2.
    h = H().op(1, "write", "k1", "a", 0, 1).op(2, "read", "k2", "a", 2, 3)
    assert verdict(h) is Verdict.NOT_LINEARIZABLE


def test_shortest_anomaly_comes_first() -> None:
    h = (H().op(1, "write", "a", "x", 0, 1).op(1, "read", "a", "zzz", 2, 3)
         .op(2, "write", "b", "x", 0, 1).op(2, "write", "b", "y", 2, 3)
         .op(2, "write", "b", "z", 4, 5).op(3, "read", "b", "x", 1, 20))
    r = h.check()
    assert [len(a.ops) for a in r.anomalies] == sorted(len(a.ops) for a in r.anomalies)
    assert r.anomaly is r.anomalies[0]


# --- budget -----------------------------------------------------------------------------------


def hard_history(writers: int) -> H:
    """``writers`` fully concurrent writes, then two sequential reads that disagree: refuting it
    takes trying every order of the writes (2^n * n cached states)."""
    h = H()
    for p in range(writers):
        h.op(p, "write", "k", f"w{p}", p, 100 + p)
    h.op(100, "read", "k", "w1", 200, 201).op(100, "read", "k", "w2", 202, 203)
    return h


def test_budget_exhausted_is_unknown_never_ok() -> None:
    r = hard_history(22).check(time_budget=0.05)
    assert r.verdict is Verdict.UNKNOWN and not r.ok
    assert r.unknown_keys == ["k"] and r.anomaly is None
    assert r.elapsed < 2.0


def test_hard_history_is_refuted_without_budget() -> None:
    assert hard_history(9).check(time_budget=None).verdict is Verdict.NOT_LINEARIZABLE


def test_one_hard_key_does_not_starve_the_others() -> None:
    lines = hard_history(22).lines()
    lines += H().op(500, "write", "easy", "a", 0, 1).op(500, "read", "easy", "zz", 2, 3).lines()
    r = check(load_history(lines), time_budget=0.2)
    assert r.keys["k"].verdict is Verdict.UNKNOWN
    assert r.keys["easy"].verdict is Verdict.NOT_LINEARIZABLE
    assert r.verdict is Verdict.NOT_LINEARIZABLE  # a definite refutation beats unknown


# --- random histories -------------------------------------------------------------------------


def inject_never_written(ops: list[Operation], rng: random.Random) -> list[Operation] | None:
    reads = [i for i, o in enumerate(ops) if o.f == "read" and o.status == "ok"]
    if not reads:
        return None
    i = rng.choice(reads)
    out = list(ops)
    out[i] = dataclasses.replace(ops[i], output="never-written")
    return out


def inject_stale_read(ops: list[Operation], rng: random.Random) -> list[Operation] | None:
    """Make a read return the value of a write that a later completed write overwrote."""
    ok_writes = [o for o in ops if o.status == "ok" and o.f == "write"]
    reads = [i for i, o in enumerate(ops) if o.f == "read" and o.status == "ok"]
    rng.shuffle(reads)
    for i in reads:
        r = ops[i]
        assert r.ret is not None
        for w2 in ok_writes:
            if w2.key != r.key or w2.ret is None or w2.ret >= r.call:
                continue
            for w1 in ok_writes:
                if w1.key == r.key and w1.ret is not None and w1.ret < w2.call:
                    out = list(ops)
                    out[i] = dataclasses.replace(r, output=w1.value)
                    return out
    return None


SHAPES = st.fixed_dictionaries({
    "ops": st.integers(20, 300),
    "processes": st.integers(1, 12),
    "keys": st.integers(1, 4),
    "info_rate": st.sampled_from([0.0, 0.05, 0.2]),
    "slow_rate": st.sampled_from([0.0, 0.05, 0.3]),
    "values": st.sampled_from([None, None, 4]),
})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), shape=SHAPES)
def test_random_linearizable_histories_are_accepted(seed: int, shape: dict[str, Any]) -> None:
    events = generate_history(random.Random(seed), **shape)
    r = check(events, time_budget=None)
    assert r.verdict is Verdict.OK, r.summary()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), shape=SHAPES, stale=st.booleans())
def test_random_histories_with_an_injected_anomaly_are_refuted(
    seed: int, shape: dict[str, Any], stale: bool
) -> None:
    rng = random.Random(seed)
    shape = {**shape, "values": None}  # unique values make the injected read impossible
    ops = pair_operations(generate_history(rng, **shape))
    bad = inject_stale_read(ops, rng) if stale else inject_never_written(ops, rng)
    if bad is None:
        return
    r = check(bad, time_budget=None)
    assert r.verdict is Verdict.NOT_LINEARIZABLE
    assert r.anomaly is not None and r.anomaly.op in r.anomaly.ops


def test_generated_histories_round_trip_through_a_file(tmp_path: Path) -> None:
    events = generate_history(random.Random(5), ops=500)
    path = tmp_path / "history.jsonl"
    dump_history(events, path)
    assert load_history(path) == events
    assert load_history(str(path)) == events
    assert check(path).ok


# --- inputs and the command line -------------------------------------------------------------


def test_check_rejects_other_inputs() -> None:
    with pytest.raises(TypeError):
        check([1, 2])  # type: ignore[arg-type]


def test_checker_imports_no_asyncio_or_networking() -> None:
    code = (
        "import sys; import raftly.testing.linearizability; "
        "bad = {'asyncio', 'socket', 'aiohttp'} & set(sys.modules); assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from raftly.testing.linearizability import _main

    path = tmp_path / "h.jsonl"
    path.write_text("\n".join(H().op(1, "write", "k", "a", 0, 1)
                              .op(2, "read", "k", "b", 2, 3).lines()))
    assert _main([str(path)]) == 1
    assert "not linearizable" in capsys.readouterr().out
    events = [Event(1, "invoke", "write", "k", "a", 0), Event(1, "ok", "write", "k", "a", 1)]
    dump_history(events, path)
    assert _main([str(path)]) == 0


# --- differential test against a brute-force definition ---------------------------------------


def brute_force(ops: list[Operation]) -> bool:
    """Linearizability by definition, per key: some order of the ok ops and any subset of the
    info writes and cas, each placed after every op that returned before it was invoked, that a
    sequential register accepts. Exponential: small histories only."""
    by_key: dict[Any, list[Operation]] = {}
    for o in ops:
        if o.status == "ok" or (o.status == "info" and o.f != "read"):
            by_key.setdefault(o.key, []).append(o)

    def key_ok(kops: list[Operation]) -> bool:
        seen: set[tuple[frozenset[int], Any]] = set()

        def go(done: frozenset[int], state: Any) -> bool:
            left = [i for i in range(len(kops)) if i not in done]
            if all(kops[i].ret is None for i in left):
                return True
            if (done, state) in seen:
                return False
            seen.add((done, state))
            deadline = min(r for i in left if (r := kops[i].ret) is not None)
            for i in left:
                o = kops[i]
                if o.call > deadline:
                    continue
                if o.f == "read":
                    fits, new = o.output == state, state
                elif o.f == "write":
                    fits, new = True, o.value
                else:
                    fits, new = o.value[0] == state, o.value[1]
                if fits and go(done | {i}, new):
                    return True
            return False

        return go(frozenset(), None)

    return all(key_ok(k) for k in by_key.values())


VALUES = st.sampled_from([None, "a", "b", "c"])
RAW_OP = st.tuples(
    st.sampled_from(["read", "write", "cas"]),
    st.sampled_from(["ok", "ok", "ok", "fail", "info", "open"]),
    st.sampled_from(["x", "y"]),
    st.integers(0, 12),  # call
    st.integers(0, 6),  # duration
    VALUES,
    VALUES,
)


@settings(max_examples=400, deadline=None)
@given(raw=st.lists(RAW_OP, min_size=1, max_size=8))
def test_checker_agrees_with_brute_force(raw: list[tuple[Any, ...]]) -> None:
    h = H()
    for p, (f, status, key, call, dur, a, b) in enumerate(raw):
        value = [a, b] if f == "cas" else a
        h.op(p, f, key, value, call, None if status == "open" else call + dur,
             "info" if status == "open" else status)
    ops = pair_operations(load_history(h.lines()))
    expected = brute_force(ops)
    r = check(ops, time_budget=None)
    assert r.verdict is (Verdict.OK if expected else Verdict.NOT_LINEARIZABLE), r.summary()

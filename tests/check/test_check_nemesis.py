"""The fault schedule: reproducible by seed, within the run, partitions of the promised shapes."""

from __future__ import annotations

import itertools

import pytest

from raftly.check.nemesis import (
    PARTITIONS,
    Fault,
    parse_nemeses,
    partition_groups,
    process_targets,
    schedule,
)

NODES5 = ["n1", "n2", "n3", "n4", "n5"]
ALL = ("partition", "kill", "pause")


def test_same_seed_same_schedule() -> None:
    a = schedule(7, NODES5, 60, ALL)
    b = schedule(7, NODES5, 60, ALL)
    assert a == b and len(a) > 10
    assert schedule(8, NODES5, 60, ALL) != a


def test_schedule_shape() -> None:
    for seed in range(30):
        faults = schedule(seed, NODES5, 60, ALL)
        assert faults == sorted(faults, key=lambda f: (f.at, f.kind))
        kinds = {f.kind for f in faults}
        assert kinds <= set(ALL)
        for f in faults:
            assert 0 < f.at < 60 and f.at + f.duration <= 60 + 1e-6
            assert sorted(f.order) == NODES5
            if f.kind == "partition":
                assert f.mode in PARTITIONS and f.cut in ("drop", "reset")
            else:
                assert f.mode in ("leader", "random") and 1 <= f.count <= 2
        # One timeline per class of fault: faults of a timeline never overlap each other.
        for line in (["partition"], ["kill", "pause"]):
            mine = [f for f in faults if f.kind in line]
            for x, y in itertools.pairwise(mine):
                assert x.at + x.duration <= y.at


def test_only_the_chosen_nemeses() -> None:
    faults = schedule(3, NODES5, 60, ("pause",))
    assert faults and {f.kind for f in faults} == {"pause"}
    assert schedule(3, NODES5, 60, ()) == []
    assert all(f.count == 1 for f in schedule(3, ["a", "b", "c"], 60, ("kill",)))


def test_parse_nemeses() -> None:
    assert parse_nemeses("partition,kill,pause") == ALL
    assert parse_nemeses("kill, kill") == ("kill",)
    assert parse_nemeses("none") == ()
    with pytest.raises(ValueError, match="bogus"):
        parse_nemeses("kill,bogus")


def symmetric(sees: dict[str, set[str]]) -> bool:
    return all((a in sees[b]) == (b in sees[a]) for a in sees for b in sees)


def test_ring_every_node_sees_a_different_majority() -> None:
    sees = partition_groups("ring", NODES5, None)
    assert symmetric(sees)
    assert all(len(v) >= 3 and k in v for k, v in sees.items())
    assert len({frozenset(v) for v in sees.values()}) == 5


def test_ring_of_three_is_a_line() -> None:
    sees = partition_groups("ring", ["a", "b", "c"], None)
    assert symmetric(sees)
    assert sees == {"a": {"a", "b"}, "b": {"a", "b", "c"}, "c": {"b", "c"}}


def test_halves_and_isolated_leader() -> None:
    sees = partition_groups("halves", NODES5, None)
    assert symmetric(sees)
    assert sorted(len(v) for v in {frozenset(v) for v in sees.values()}) == [2, 3]
    sees = partition_groups("isolate-leader", NODES5, "n4")
    assert sees["n4"] == {"n4"} and all(sees[n] == set(NODES5) - {"n4"} for n in NODES5
                                        if n != "n4")
    # No leader known: the seed's first node is isolated instead.
    assert partition_groups("isolate-leader", NODES5, None)["n1"] == {"n1"}


def test_process_targets_prefer_the_leader() -> None:
    fault = Fault(1.0, 2.0, "kill", "leader", ("n3", "n1", "n2"), 2)
    assert process_targets(fault, "n2") == ["n2", "n3"]
    assert process_targets(fault, None) == ["n3", "n1"]
    random_fault = Fault(1.0, 2.0, "kill", "random", ("n3", "n1", "n2"), 1)
    assert process_targets(random_fault, "n2") == ["n3"]

"""The fault schedule: reproducible by seed, within the run, partitions of the promised shapes."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from raftly.check.history import NemesisLog
from raftly.check.nemesis import (
    MAX_GROWTH,
    MEMBERSHIP_OPS,
    MIN_VOTERS,
    PARTITIONS,
    Fault,
    MembershipProblem,
    Nemesis,
    Target,
    allowed_changes,
    parse_nemeses,
    partition_groups,
    process_targets,
    schedule,
)
from raftly.check.report import describe_fault

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


# -- the membership nemesis ---------------------------------------------------------------------

WITH_MEMBERSHIP = (*ALL, "membership")


def test_membership_schedule_is_seeded_and_leaves_the_other_faults_alone() -> None:
    a = schedule(5, NODES5, 60, WITH_MEMBERSHIP)
    assert a == schedule(5, NODES5, 60, WITH_MEMBERSHIP)
    assert a != schedule(6, NODES5, 60, WITH_MEMBERSHIP)
    assert [f for f in a if f.kind != "membership"] == schedule(5, NODES5, 60, ALL)
    assert sum(f.kind == "membership" for f in a) >= 3


def test_membership_schedule_keeps_the_size_within_bounds_and_uses_every_change() -> None:
    seen = set()
    for n in (3, 4, 5):
        nodes = NODES5[:n]
        for seed in range(40):
            changes = [f for f in schedule(seed, nodes, 60, ("membership",))]
            size = n
            for x, y in itertools.pairwise(changes):
                assert x.at + x.duration < y.at  # one change at a time
            for f in changes:
                assert f.kind == "membership" and f.mode in MEMBERSHIP_OPS
                assert 0 < f.at < 60 and f.at + f.duration <= 60 + 1e-6 and 0 <= f.pick < 1
                assert f.mode in allowed_changes(size, n)
                size += {"add": 1, "remove": -1}.get(f.mode, 0)
                # replace-leader is one more member for a moment: still within the bound.
                peak = size + (f.mode == "replace-leader")
                assert size >= MIN_VOTERS and peak <= n + MAX_GROWTH
                seen.add(f.mode)
    assert seen == set(MEMBERSHIP_OPS)


def test_allowed_changes() -> None:
    assert allowed_changes(3, 3) == ["add", "replace-leader"]
    assert allowed_changes(5, 3) == ["remove"]
    assert allowed_changes(4, 5) == ["add", "remove", "replace-leader"]
    assert allowed_changes(2, 1) == ["add"]  # too small to remove or replace


def test_process_targets_among_eligible_members_only() -> None:
    fault = Fault(1.0, 2.0, "kill", "leader", ("n3", "n1", "n2", "n4", "n5"), count=2)
    assert process_targets(fault, "n9", ["n1", "n2", "j1"]) == ["n1"]  # a minority of 3
    assert process_targets(fault, "j1", ["n1", "n2", "n4", "j1", "j2"]) == ["j1", "n1"]


class FakeMembers(Target):
    """Membership changes that succeed at once, recording what was asked."""

    def __init__(self, names: list[str], fail_add: bool = False) -> None:
        self.current = list(names)
        self.calls: list[str] = []
        self.fail_add = fail_add

    def members(self) -> list[str]:
        return list(self.current)

    async def add_member(self) -> str:
        if self.fail_add:
            raise MembershipProblem("node j1 failed to join: exited\nlast log line")
        name = f"j{len(self.calls)}"
        self.calls.append(f"+{name}")
        self.current.append(name)
        return name

    async def remove_member(self, name: str) -> None:
        self.calls.append(f"-{name}")
        self.current.remove(name)

    async def transfer_leader(self, to: str) -> str | None:
        self.calls.append(f">{to}")
        return None


def play(target: FakeMembers, faults: list[Fault], leader: str | None, tmp_path: Path,
         killed: set[str] = frozenset()) -> tuple[Nemesis, list[dict[str, object]]]:
    log = NemesisLog(tmp_path / "nemesis.jsonl")

    async def find_leader() -> str | None:
        return leader

    nemesis = Nemesis(faults, target, log, find_leader)
    nemesis.killed |= set(killed)
    asyncio.run(nemesis.run())
    log.close()
    return nemesis, log.events


def change(mode: str, pick: float = 0.0) -> Fault:
    return Fault(0.0, 0.0, "membership", mode, (), 0, pick=pick)


def test_replace_leader_adds_transfers_then_removes_the_old_leader(tmp_path: Path) -> None:
    target = FakeMembers(["n1", "n2", "n3"])
    nemesis, events = play(target, [change("replace-leader")], "n2", tmp_path)
    assert target.calls == ["+j0", ">j0", "-n2"]
    assert target.current == ["n1", "n3", "j0"] and not nemesis.problems
    end = next(e for e in events if e["phase"] == "end")["value"]
    assert end == {"added": "j0", "transfer": "done", "removed": "n2",
                   "members": ["n1", "n3", "j0"]}


def test_removal_spares_killed_nodes_and_respects_the_bounds(tmp_path: Path) -> None:
    target = FakeMembers(["n1", "n2", "n3", "n4"])
    play(target, [change("remove", pick=0.0)], "n1", tmp_path, killed={"n1"})
    assert target.calls == ["-n2"]  # n1 is down: never removed, restarted later
    _, events = play(target, [change("remove")], "n1", tmp_path)
    assert target.calls == ["-n2"]  # three members left: the removal is skipped, and logged
    assert events[-1]["phase"] == "note" and events[-1]["value"]["skipped"] == "3 members"


def test_a_node_that_fails_to_join_is_a_problem(tmp_path: Path) -> None:
    target = FakeMembers(["n1", "n2", "n3"], fail_add=True)
    nemesis, events = play(target, [change("add")], "n1", tmp_path)
    assert nemesis.problems == ["node j1 failed to join: exited\nlast log line"]
    end = next(e for e in events if e["phase"] == "end")["value"]
    assert end["problem"] == "node j1 failed to join: exited"
    assert describe_fault("membership", {**events[0]["value"], **end}) == (
        "membership add (problem node j1 failed to join: exited)")
    assert describe_fault("membership", {"op": "replace-leader", "added": "j2",
                                         "removed": "n1", "transfer": "done"}) == (
        "membership replace-leader +j2 -n1 (transfer done)")

"""``raftly check --nemesis powerloss``: the schedule, the refusals, and short real runs on lazy
file systems (skipped where FUSE is not usable: /dev/fuse, fuse3 and mfusepy are needed).

With fsync on, a run of power losses (one node, the leader, every node) must pass; with
``--fsync never`` the same kind of run must report lost writes, every node starting again; and
no mount outlives a run, whether it passed, failed or was interrupted.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from check_helpers import assert_no_node_left, mounts_under, run_check
from test_check_nemesis import FakeMembers, play

from raftly.check import disks, runner
from raftly.check.nemesis import POWER_MODES, Fault, process_targets, schedule
from raftly.check.runner import main
from raftly.testing.lazyfs import unavailable

NAMES = ["n1", "n2", "n3", "n4", "n5"]


def nemesis_events(out: Path, f: str) -> list[dict[str, object]]:
    lines = (out / "nemesis.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["f"] == f]


needs_fuse = pytest.mark.skipif(unavailable() is not None,
                                reason=f"lazy file system unusable: {unavailable()}")


def test_the_schedule_hits_one_node_the_leader_and_every_node_and_ends_with_all() -> None:
    seen: set[str] = set()
    for seed in range(10):
        faults = [f for f in schedule(seed, NAMES, 60.0, ("powerloss", "kill"))]
        power = [f for f in faults if f.kind == "powerloss"]
        assert power, seed
        seen.update(f.mode for f in power)
        last = faults[-1]
        # The run ends with every node down, held to the end.
        assert (last.kind, last.mode, last.count) == ("powerloss", "all", len(NAMES))
        assert last.at + last.duration == pytest.approx(60.0)
        assert schedule(seed, NAMES, 60.0, ("powerloss", "kill")) == faults  # seeded
    assert seen == set(POWER_MODES)


def test_a_power_loss_hits_one_node_the_leader_or_every_eligible_node() -> None:
    order = tuple(NAMES)
    assert process_targets(Fault(1, 1, "powerloss", "random", order, 1), "n3", NAMES) == ["n1"]
    assert process_targets(Fault(1, 1, "powerloss", "leader", order, 1), "n3", NAMES) == ["n3"]
    assert process_targets(Fault(1, 1, "powerloss", "all", order, 5), "n3", NAMES) == NAMES


def test_adding_powerloss_leaves_the_other_timelines_as_they_were() -> None:
    partitions = [f for f in schedule(7, NAMES, 60.0, ("partition", "powerloss"))
                  if f.kind == "partition"]
    assert partitions == schedule(7, NAMES, 60.0, ("partition",))


class FakePower(FakeMembers):
    """Records kills, power losses and restarts; ``broken`` nodes never answer again."""

    def __init__(self, names: list[str], broken: set[str]) -> None:
        super().__init__(names)
        self.broken = broken

    def kill(self, name: str) -> None:
        self.calls.append(f"kill {name}")

    def power_loss(self, names: Sequence[str]) -> None:
        self.calls.append(f"power loss {' '.join(names)}")

    def restart(self, name: str) -> None:
        self.calls.append(f"restart {name}")

    async def restarted(self, name: str) -> str | None:
        return f"node {name} did not start again\nlast log line" if name in self.broken else None


def test_a_power_loss_kills_then_drops_then_restarts_and_a_node_that_stays_down_fails_the_run(
        tmp_path: Path) -> None:
    target = FakePower(["n1", "n2", "n3"], broken={"n2"})
    fault = Fault(0.0, 0.01, "powerloss", "all", ("n3", "n1", "n2"), 3)
    nemesis, events = play(target, [fault], "n1", tmp_path)
    assert target.calls == ["kill n3", "kill n1", "kill n2", "power loss n3 n1 n2",
                            "restart n3", "restart n1", "restart n2"]
    assert nemesis.problems == ["node n2 did not start again\nlast log line"]
    assert nemesis.failed_restarts == {"n2"} and not nemesis.killed | nemesis.restarting
    start, end = events
    assert start["value"] == {"nodes": ["n3", "n1", "n2"], "mode": "all", "leader": "n1"}
    assert end["value"] == {"restarted": ["n3", "n1"], "failed": ["n2"]}


def test_powerloss_is_refused_with_the_reason_when_fuse_is_unusable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(disks, "unavailable", lambda: "/dev/fuse is missing")
    code = main(["--nodes", "3", "--time", "5", "--nemesis", "powerloss", "--seed", "1",
                 "--out", str(tmp_path / "out"), "--no-progress"])
    assert code == 2
    assert "powerloss needs a lazy file system (FUSE): /dev/fuse is missing" in (
        capsys.readouterr().err)


def test_powerloss_with_membership_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--nemesis", "powerloss,membership", "--no-progress"]) == 2
    assert "powerloss and membership cannot be combined" in capsys.readouterr().err


def restarted_nodes(out: Path) -> tuple[set[str], set[str]]:
    """The nodes the run's power losses hit, and those seen answering again afterwards."""
    events = nemesis_events(out, "powerloss")
    hit = {n for e in events if e["phase"] == "start" for n in e["value"]["nodes"]}  # type: ignore[index]
    back = {n for e in events if e["phase"] != "start" and e["value"]
            for n in e["value"]["restarted"]}  # type: ignore[index]
    return hit, back


@needs_fuse
def test_power_losses_with_fsync_always_lose_nothing(tmp_path: Path) -> None:
    out = tmp_path / "always"
    code, result = run_check(out, "--nodes", "3", "--time", "10", "--clients", "6", "--keys",
                             "4", "--nemesis", "powerloss", "--seed", "24", "--no-progress")
    assert_no_node_left(out)
    assert mounts_under(out) == []
    assert code == 0, f"run failed, see {out / 'report.html'}: {result}"
    assert result["verdict"] == "ok" and result["lost"] == [] and result["problems"] == []
    hit, back = restarted_nodes(out)
    assert hit and back == hit
    assert "powerloss n" in (out / "report.html").read_text()


@needs_fuse
def test_a_whole_cluster_power_loss_with_fsync_never_and_tls_loses_writes_but_every_node_restarts(
        tmp_path: Path) -> None:
    out = tmp_path / "never"
    code, result = run_check(out, "--nodes", "3", "--time", "7", "--clients", "6", "--keys",
                             "4", "--nemesis", "powerloss", "--seed", "12", "--fsync", "never",
                             "--tls", "--no-progress")
    assert_no_node_left(out)
    assert mounts_under(out) == []  # after a failed run too
    assert code == 1
    # Seed 12: one power loss of every node, 3 s in, held to the end; the writes acknowledged
    # since the last flush (the election's) are gone.
    assert result["lost"], result
    assert result["problems"] == []  # ... but every node started again and answered
    assert restarted_nodes(out) == ({"n1", "n2", "n3"}, {"n1", "n2", "n3"})


@needs_fuse
def test_an_interrupted_run_leaves_no_mount(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    async def interrupted(*args: object) -> str | None:
        raise KeyboardInterrupt  # Ctrl-C while the cluster waits for a leader

    monkeypatch.setattr(runner, "agreed_leader", interrupted)
    out = tmp_path / "ctrl-c"
    code = main(["--nodes", "3", "--time", "5", "--nemesis", "powerloss", "--seed", "1",
                 "--out", str(out), "--no-progress"])
    assert code == 130
    assert (out / "disks" / "n1").is_dir()  # the disks were mounted ...
    assert mounts_under(out) == []  # ... and are unmounted again
    assert_no_node_left(out)

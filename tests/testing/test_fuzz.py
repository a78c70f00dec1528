"""Randomized fault schedules on SimCluster: safety after every step, progress once healed."""

from __future__ import annotations

import pytest

from raftly.testing.fuzz import main, replay_command, run_seed
from raftly.testing.safety import SafetyViolation


def test_random_faults_keep_safety_and_cluster_recovers(fuzz_seed: int) -> None:
    result = run_seed(fuzz_seed, duration=30.0)
    assert result.committed > 0
    assert result.faults > 0


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1000, 1050))
def test_long_random_fault_schedules(seed: int) -> None:
    run_seed(seed, duration=300.0)


def test_same_seed_replays_the_same_run() -> None:
    assert run_seed(7, duration=10.0) == run_seed(7, duration=10.0)


def test_replay_command_names_the_seed() -> None:
    assert replay_command(42, 30.0) == "python -m raftly.testing.fuzz --seed 42 --duration 30"


def test_command_line_runs_a_seed_and_reports(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seed", "3", "--duration", "5"]) == 0
    assert "1 passed, 0 failed" in capsys.readouterr().out


def test_violation_message_carries_seed_and_replay_command() -> None:
    from raftly.core import Role
    from raftly.testing.sim import SimCluster

    c = SimCluster(n=3, seed=5, replay_hint="python -m raftly.testing.fuzz --seed 5")
    leader = c.check_one_leader()
    # Forge a second leader in the same term: the checker must notice at the next step.
    other = (leader + 1) % 3
    forged = c.node(other)
    forged.term = c.node(leader).term
    forged.role = Role.CANDIDATE  # a follower cannot become leader: the core would refuse
    forged._become_leader()
    with pytest.raises(SafetyViolation) as info:
        c.run(1.0)
    text = str(info.value)
    assert "election safety" in text
    assert "seed=5" in text
    assert "replay: python -m raftly.testing.fuzz --seed 5" in text

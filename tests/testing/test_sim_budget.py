"""The simulator's work budget: a core that runs away fails fast with a report, never hangs."""

from __future__ import annotations

import dataclasses
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import pytest

from raftly.core.messages import Message
from raftly.core.node import RaftNode
from raftly.core.types import HardState
from raftly.testing import BudgetExceeded, SafetyViolation, SimBudget, SimCluster
from raftly.testing.fuzz import run_seed

REAL_SECONDS_ALLOWED = 20.0
"""Far more than a runaway takes to exhaust the budget (well under a second), far less than a
hang: the test fails instead of blocking the suite."""


@contextmanager
def fails_instead_of_hanging(seconds: float = REAL_SECONDS_ALLOWED) -> Iterator[None]:
    def expire(_signum: int, _frame: FrameType | None) -> None:
        raise TimeoutError(f"the simulator still ran after {seconds} s: the budget did not stop it")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def never_persist_the_vote(monkeypatch: pytest.MonkeyPatch) -> None:
    """A node whose hard state leaves out its vote: it always has one more Ready to hand out."""
    monkeypatch.setattr(RaftNode, "hard_state",
                        property(lambda node: HardState(node.term, None, node.log.commit)))


def answer_every_message_twice_over(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every node echoes each message it receives back twice: the traffic grows geometrically."""
    step = RaftNode.step

    def flooding_step(node: RaftNode, msg: Message) -> None:
        step(node, msg)
        for _ in range(2):
            node._send(dataclasses.replace(msg, src=msg.dst, dst=msg.src))

    monkeypatch.setattr(RaftNode, "step", flooding_step)


def test_node_that_never_persists_its_vote_fails_the_seed_fast_with_its_replay(
        monkeypatch: pytest.MonkeyPatch) -> None:
    never_persist_the_vote(monkeypatch)
    with fails_instead_of_hanging(), pytest.raises(BudgetExceeded) as info:
        run_seed(0)
    text = str(info.value)
    assert "Readies in a row" in text
    assert "virtual time standing still" in text
    assert "seed=0 step=" in text
    assert "replay: python -m raftly.testing.fuzz --seed 0 --duration 30  (entries=" in text
    assert "last 12 events:" in text and text.count("\n    step ") == 12


def test_message_storm_fails_fast_with_seed_step_and_last_events(
        monkeypatch: pytest.MonkeyPatch) -> None:
    answer_every_message_twice_over(monkeypatch)
    c = SimCluster(n=3, seed=4, replay_hint="python -m raftly.testing.fuzz --seed 4")
    with fails_instead_of_hanging(), pytest.raises(BudgetExceeded) as info:
        c.run(30.0)
    text = str(info.value)
    assert "runaway:" in text and "messages" in text
    assert f"seed=4 step={c.steps}" in text
    assert "replay: python -m raftly.testing.fuzz --seed 4" in text
    assert text.count("\n    step ") == 12
    assert f"step {c.steps} at " in text  # the last event listed is the one that overspent


def test_budget_exceeded_is_a_safety_violation() -> None:
    # So the fuzzer, and anything else that catches violations, reports it like any other.
    assert issubclass(BudgetExceeded, SafetyViolation)


def test_a_healthy_cluster_stays_well_within_the_default_budget() -> None:
    # A twentieth of the default budget is still plenty: the default's headroom is real.
    default = SimBudget()
    tight = SimBudget(steps_per_second=default.steps_per_second // 20,
                      messages_per_second=default.messages_per_second // 20)
    c = SimCluster(n=5, seed=2, budget=tight)
    c.set_unreliable()
    leader = c.check_one_leader()
    for k in range(200):
        c.start(leader, f"cmd {k}".encode())
    c.run(5.0)
    assert c.steps > 0


def test_budget_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        SimBudget(readies_per_input=0)

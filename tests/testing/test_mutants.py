"""The mutation runner: each classic Raft bug in the catalogue still applies, and is caught.

CI runs a fast subset (mutants the fuzzer catches within a few seeds) and checks that every
mutant still applies to the code as it is; ``--slow`` runs the whole catalogue on 1000 seeds and
the scenario suite, and requires every mutant to be caught.
"""

from __future__ import annotations

import pytest

from raftly.testing.mutants import (
    CATALOGUE,
    Mutant,
    Patch,
    RunOptions,
    Verdict,
    check_applies,
    property_of,
    run_mutant,
)

FAST = {
    # id -> the property the fuzzer reports for it, within a few seeds
    "vote-twice": "election safety",
    "read-without-quorum": "linearizable reads",
    "apply-skipped-on-restart": "apply order (an index applied twice or skipped)",
    "conf-change-in-flight": "membership changes",
    "learner-votes": "election safety",
}


@pytest.mark.parametrize("mutant", CATALOGUE, ids=lambda m: m.id)
def test_every_mutant_still_applies_to_the_code(mutant: Mutant) -> None:
    assert check_applies(mutant) is None


def test_every_mutant_has_a_unique_id_a_description_and_a_source() -> None:
    ids = [m.id for m in CATALOGUE]
    assert len(ids) == len(set(ids))
    for m in CATALOGUE:
        assert m.description and m.source and m.patches, m.id


def test_a_mutant_whose_text_moved_is_reported_as_not_applying() -> None:
    moved = Mutant("moved", "a replacement for code that is gone", "this test",
                   (Patch("raftly/core/node.py", "text no version of node.py holds", "x"),))
    result = run_mutant(moved, RunOptions(seeds=1, scenarios=False))
    assert result.verdict is Verdict.DOES_NOT_APPLY
    assert not result.caught
    assert "not found" in result.detail
    assert "does not apply" in result.line()


def test_a_replacement_found_twice_or_outside_the_package_does_not_apply() -> None:
    twice = Mutant("twice", "ambiguous", "this test",
                   (Patch("raftly/core/node.py", "self", "this"),))
    outside = Mutant("outside", "not in the package", "this test",
                     (Patch("tests/conftest.py", "slow", "fast"),))
    assert "found" in (check_applies(twice) or "") and "times" in (check_applies(twice) or "")
    assert "outside" in (check_applies(outside) or "")


def test_a_run_away_seed_is_reported_as_a_hang_with_its_seed() -> None:
    spin = Mutant("spin", "a tick that never returns", "this test",
                  (Patch("raftly/core/node.py", "        self._election_elapsed += 1\n",
                         "        while True:\n            pass\n"),))
    result = run_mutant(spin, RunOptions(seeds=5, scenarios=False, seed_timeout=2.0))
    assert result.verdict is Verdict.CAUGHT_HANG
    assert result.fuzz is not None and result.fuzz.failed_seed == 0
    assert "caught (hang)" in result.line() and "hang" in result.line()


@pytest.mark.parametrize(("message", "prop"), [
    ("election safety: nodes 0 and 1 both lead term 3\n  seed=1 step=2", "election safety"),
    ("log matching: node 2 holds entry (4, 2) as ...", "log matching"),
    ("node 1 applied index 5 right after 3 (an index applied twice, or one skipped)",
     "apply order (an index applied twice or skipped)"),
    ("stale read: node 0 got read index 3 for b'r', but index 4 was already applied",
     "linearizable reads"),
    ("InvariantError: conflict at committed index 4 (commit 5)", "invariant (InvariantError)"),
    ("raftly.testing.safety.SafetyViolation: leader completeness: node 1 leads term 4",
     "leader completeness"),
    ("no progress after healing: no leader within 15.0s", "liveness after healing"),
])
def test_the_property_that_fired_is_read_from_the_violation_message(message: str,
                                                                     prop: str) -> None:
    assert property_of(message) == prop


@pytest.mark.parametrize("mutant_id", sorted(FAST))
def test_fast_subset_is_caught_by_the_fuzzer_within_a_few_seeds(mutant_id: str) -> None:
    mutant = next(m for m in CATALOGUE if m.id == mutant_id)
    result = run_mutant(mutant, RunOptions(seeds=50, scenarios=False))
    assert result.verdict is Verdict.CAUGHT, result.line()
    assert result.fuzz is not None and result.fuzz.prop == FAST[mutant_id], result.line()


def test_the_scenario_suite_runs_against_the_mutated_copy() -> None:
    # The runner fails with an error if pytest imported the tree's package instead of the copy.
    mutant = next(m for m in CATALOGUE if m.id == "vote-twice")
    result = run_mutant(mutant, RunOptions(seeds=1, scenarios=True))
    assert result.verdict is Verdict.CAUGHT, result.line()
    assert result.suite is not None and result.suite.failed_test is not None, result.line()


@pytest.mark.slow
@pytest.mark.parametrize("mutant", CATALOGUE, ids=lambda m: m.id)
def test_every_mutant_is_caught_within_1000_seeds_or_by_a_scenario(mutant: Mutant) -> None:
    result = run_mutant(mutant, RunOptions(seeds=1000))
    assert result.caught, result.line()

"""Quorum arithmetic: committed index and vote outcome over a majority of voters."""

from __future__ import annotations

import pytest

from raftly.core.quorum import MajorityConfig, VoteResult


@pytest.mark.parametrize(
    ("acked", "expected"),
    [
        ({1: 5}, 5),
        ({1: 5, 2: 3, 3: 9}, 5),
        ({1: 7, 2: 7, 3: 0}, 7),
        ({1: 1, 2: 2, 3: 3, 4: 4}, 2),  # four voters: three must hold it
        ({1: 9, 2: 8, 3: 1, 4: 1, 5: 1}, 1),
        ({1: 9, 2: 8, 3: 7, 4: 1, 5: 1}, 7),
    ],
)
def test_committed_index_is_the_highest_index_a_majority_holds(
    acked: dict[int, int], expected: int
) -> None:
    assert MajorityConfig(frozenset(acked)).committed_index(acked.__getitem__) == expected


def test_committed_index_counts_only_voters() -> None:
    acked = {1: 10, 2: 10, 3: 0, 4: 10}  # 4 is not a voter (a learner, say)
    assert MajorityConfig(frozenset({1, 2, 3})).committed_index(acked.__getitem__) == 10
    assert MajorityConfig(frozenset({1, 3, 5})).committed_index(lambda v: acked.get(v, 0)) == 0


def test_an_empty_configuration_commits_nothing() -> None:
    assert MajorityConfig(frozenset()).committed_index(lambda v: 1) == 0


@pytest.mark.parametrize(
    ("votes", "expected"),
    [
        ({}, VoteResult.PENDING),
        ({1: True}, VoteResult.PENDING),
        ({1: True, 2: True}, VoteResult.WON),
        ({1: True, 2: False}, VoteResult.PENDING),
        ({1: True, 2: False, 3: False}, VoteResult.LOST),
        ({1: True, 9: True, 8: True}, VoteResult.PENDING),  # non-voters do not count
    ],
)
def test_vote_result_needs_a_majority_either_way(
    votes: dict[int, bool], expected: VoteResult
) -> None:
    assert MajorityConfig(frozenset({1, 2, 3})).vote_result(votes) is expected


def test_a_single_voter_decides_alone() -> None:
    assert MajorityConfig(frozenset({1})).vote_result({1: True}) is VoteResult.WON
    assert MajorityConfig(frozenset({1})).vote_result({1: False}) is VoteResult.LOST

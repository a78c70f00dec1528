"""``apply_change``: what one single-server change does to a configuration, and its refusals."""

from __future__ import annotations

import pytest

from raftly.core import ConfChange, ConfChangeRefused, ConfChangeType, ConfState, Member
from raftly.core.config import Config, ConfigError
from raftly.core.membership import apply_change

ADD, PROMOTE, REMOVE = ConfChangeType.ADD_LEARNER, ConfChangeType.PROMOTE, ConfChangeType.REMOVE
BARE = ConfState(frozenset({1, 2, 3}))


def test_add_promote_remove_without_recorded_members_keeps_none() -> None:
    conf = apply_change(BARE, ConfChange(ADD, Member(4)))
    assert conf == ConfState(frozenset({1, 2, 3}), frozenset({4}))
    conf = apply_change(conf, ConfChange(PROMOTE, Member(4)))
    assert conf == ConfState(frozenset({1, 2, 3, 4}))
    assert apply_change(conf, ConfChange(REMOVE, Member(1))) == ConfState(frozenset({2, 3, 4}))


def test_adding_a_described_member_records_every_member() -> None:
    conf = apply_change(BARE, ConfChange(ADD, Member(4, "n4", "h:4", "h:44", promote=False)))
    assert conf.members == (Member(1), Member(2), Member(3),
                            Member(4, "n4", "h:4", "h:44", promote=False))
    conf.validate()
    removed = apply_change(conf, ConfChange(REMOVE, Member(4)))
    assert removed.learners == frozenset() and [m.id for m in removed.members] == [1, 2, 3]


@pytest.mark.parametrize(("change", "code"), [
    (ConfChange(ADD, Member(2)), "exists"),
    (ConfChange(PROMOTE, Member(9)), "unknown"),
    (ConfChange(REMOVE, Member(9)), "unknown"),
    (ConfChange(PROMOTE, Member(1)), "not_learner"),
])
def test_refusals(change: ConfChange, code: str) -> None:
    with pytest.raises(ConfChangeRefused) as info:
        apply_change(BARE, change)
    assert info.value.code == code


def test_removing_the_last_voter_is_refused_but_a_learner_beside_it_may_go() -> None:
    conf = ConfState(frozenset({1}), frozenset({2}))
    with pytest.raises(ConfChangeRefused, match="last voter"):
        apply_change(conf, ConfChange(REMOVE, Member(1)))
    assert apply_change(conf, ConfChange(REMOVE, Member(2))) == ConfState(frozenset({1}))


def test_promote_lag_must_not_be_negative() -> None:
    with pytest.raises(ConfigError):
        Config(promote_lag=-1)

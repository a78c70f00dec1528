"""ConfState's CONFIG payload codec, and the plain data helpers of raftly.core.types."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftly.core import ConfState, HardState, InitialState, SnapshotMeta


@given(st.frozensets(st.integers(min_value=0, max_value=10**12)))
def test_confstate_encode_decode_round_trips(voters: frozenset[int]) -> None:
    conf = ConfState(voters)
    assert ConfState.decode(conf.encode()) == conf


def test_confstate_encodes_sorted_comma_separated_ascii() -> None:
    assert ConfState(frozenset({3, 1, 2})).encode() == b"1,2,3"
    assert ConfState(frozenset()).encode() == b""
    assert ConfState.decode(b"") == ConfState(frozenset())


@pytest.mark.parametrize(
    "payload",
    [b"a", b"1,b", b"1,,2", b",", b"1,", b",1", b"-1", b"1,-2", b"1.5", b"\xff", b"\xd9\xa1"],
)
def test_confstate_decode_rejects_malformed_payload(payload: bytes) -> None:
    with pytest.raises(ValueError):
        ConfState.decode(payload)


@pytest.mark.parametrize("payload", [b" 1", b"1 ,2", b"+1", b"1_0", b"01", b"1,1", b"2,1"])
def test_confstate_decode_accepts_only_the_canonical_encoding(payload: bytes) -> None:
    # A CONFIG payload is written only by encode(); any other spelling is corrupt input and must
    # not silently decode to some membership.
    with pytest.raises(ValueError):
        ConfState.decode(payload)


def test_bootstrap_state_is_empty_log_with_voters_in_snapshot_conf() -> None:
    state = InitialState.bootstrap([3, 1, 2])
    assert state.hard_state == HardState(0, None, 0)
    assert state.snapshot == SnapshotMeta(0, 0, ConfState(frozenset({1, 2, 3})))
    assert state.entries == []

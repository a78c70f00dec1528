"""ConfState's CONFIG payload codec, and the plain data helpers of raftly.core.types."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftly.core import ConfState, HardState, InitialState, Member, SnapshotMeta


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


_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789:.-é", max_size=12)


@st.composite
def _confs(draw: st.DrawFn) -> ConfState:
    ids = sorted(draw(st.frozensets(st.integers(0, 10**12), min_size=1, max_size=8)))
    n_voters = draw(st.integers(1, len(ids)))
    voters, learners = frozenset(ids[:n_voters]), frozenset(ids[n_voters:])
    if not draw(st.booleans()):
        return ConfState(voters, learners)
    apis = draw(st.lists(_names, min_size=len(ids), max_size=len(ids), unique=True))
    members = tuple(Member(i, f"n{i}", f"h:{i}", api, draw(st.booleans()))
                    for i, api in zip(ids, apis, strict=True))
    return ConfState(voters, learners, members)


@given(_confs())
def test_confstate_with_learners_and_members_round_trips(conf: ConfState) -> None:
    data = conf.encode()
    assert ConfState.decode(data) == conf
    assert data == ConfState.decode(data).encode()  # deterministic


def test_confstate_positional_voters_only_keeps_the_old_encoding() -> None:
    conf = ConfState(frozenset({1, 2}))
    assert conf.learners == frozenset() and conf.members == ()
    assert conf.encode() == b"1,2"


def test_confstate_with_learners_encodes_versioned_json() -> None:
    conf = ConfState(frozenset({1}), frozenset({2}))
    assert conf.encode() == b'{"learners":[2],"members":[],"v":1,"voters":[1]}'


def test_confstate_member_lookup_by_id_and_name() -> None:
    m1, m2 = Member(1, "n1", "h:1", "h:11"), Member(2, "n2", "h:2", "h:12", promote=False)
    conf = ConfState(frozenset({1}), frozenset({2}), (m1, m2))
    assert conf.member(2) == m2 and conf.member(3) is None
    assert conf.by_name("n1") == m1 and conf.by_name("n9") is None and conf.by_name("") is None
    assert conf.ids == frozenset({1, 2})


def _json(**fields: object) -> bytes:
    import json

    doc: dict[str, object] = {"v": 1, "voters": [1], "learners": [], "members": []}
    doc.update(fields)
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _m(i: int, name: str = "", raft: str = "", **kw: object) -> dict[str, object]:
    return {"id": i, "name": name or f"n{i}", "raft": raft or f"h:{i}", "api": "", "promote": True,
            **kw}


@pytest.mark.parametrize(
    "payload",
    [
        b"{", b"{}", b"{\xff}", b"[1]", b'{"v":1}',
        _json(v=2), _json(v=True), _json(v="1"),
        _json(voters=[]),  # no voter
        _json(voters=[1], learners=[1]),  # both voter and learner
        _json(voters=[2, 1]), _json(voters=[1, 1]), _json(voters=[-1]), _json(voters=[True]),
        _json(voters=["1"]), _json(voters=1), _json(learners=None), _json(members={}),
        _json(extra=1),
        _json(members=[_m(2)]),  # members do not match voters
        _json(voters=[1, 2], members=[_m(2), _m(1)]),  # not sorted
        _json(voters=[1, 2], members=[_m(1, name="a"), _m(2, name="a")]),  # duplicate name
        _json(voters=[1, 2], members=[_m(1, raft="x:1"), _m(2, raft="x:1")]),  # duplicate raft
        _json(voters=[1, 2], members=[_m(1, api="x:8"), _m(2, api="x:8")]),  # duplicate api
        _json(members=[{"id": 1}]), _json(members=[_m(1, promote=1)]),
        _json(members=[_m(1, api=3)]), _json(members=[7]),
        b'{"learners":[],"members":[],"v":1, "voters":[1]}',  # not canonical (space)
        b'{"v":1,"learners":[],"members":[],"voters":[1]}',  # not canonical (key order)
        b'{"v":' + b"[" * 100000,  # nesting too deep for the parser
    ],
)
def test_confstate_decode_rejects_malformed_json(payload: bytes) -> None:
    with pytest.raises(ValueError):
        ConfState.decode(payload)


def test_confstate_decode_accepts_the_canonical_json_of_a_valid_conf() -> None:
    assert ConfState.decode(_json(voters=[1, 2], learners=[3])) == ConfState(
        frozenset({1, 2}), frozenset({3}))

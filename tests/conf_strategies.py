"""A Hypothesis strategy for configurations, shared by the tests of what stores or sends them.

Voters only (the original form), with learners, and with members' names and addresses. Tests
that round-trip one compare against ``ConfState.decode(conf.encode())``: the stores and the codec
carry the encoded bytes, so whatever the configuration holds must come back exactly so.
"""

from __future__ import annotations

from collections.abc import Iterable

from hypothesis import strategies as st

from raftly.core.types import ConfState, Member

MAX_ID = 2**63 - 1
"""The largest node id the wire carries (its integers are below 2**63)."""

_ids = st.one_of(st.integers(0, 16), st.integers(0, MAX_ID))
_text = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789:.-é[]", max_size=16)


@st.composite
def conf_states(draw: st.DrawFn) -> ConfState:
    ids = sorted(draw(st.frozensets(_ids, min_size=1, max_size=8)))
    n_voters = draw(st.integers(1, len(ids)))
    voters, learners = frozenset(ids[:n_voters]), frozenset(ids[n_voters:])
    kind = draw(st.sampled_from(["voters", "learners", "members"]))
    if kind == "voters":  # no voter at all too: the default SnapshotMeta's
        return ConfState(frozenset(draw(st.sampled_from([ids, ids[:n_voters], []]))))
    if kind == "learners":
        return ConfState(voters, learners)
    # API addresses unique too, as names and Raft addresses are, or absent. The "/" (never in
    # _text) ends the id: "n2" + "6" would otherwise be "n26" + "".
    members = tuple(
        Member(i, f"n{i}/{draw(_text)}", f"h{i}:{draw(_text)}",
               draw(st.one_of(st.just(""), _text.map(lambda t, i=i: f"a{i}:{t}"))),
               draw(st.booleans()))
        for i in ids
    )
    return ConfState(voters, learners, members)


def addressed(voters: Iterable[int], learners: Iterable[int] = ()) -> ConfState:
    """A configuration recording each member's name and addresses (``n<id>``, Raft on
    127.0.0.1:7000+id, API on 8000+id); its learners stay learners (``promote=False``)."""
    v, lrn = frozenset(voters), frozenset(learners)
    members = tuple(Member(i, f"n{i}", f"127.0.0.1:{7000 + i}", f"127.0.0.1:{8000 + i}",
                           promote=i not in lrn) for i in sorted(v | lrn))
    return ConfState(v, lrn, members)

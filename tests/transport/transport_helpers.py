"""Hypothesis strategies for valid Raft messages, and small asyncio helpers for transport tests."""

from __future__ import annotations

from hypothesis import strategies as st

from raftly.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from raftly.core.types import ConfState, Entry, EntryType, Snapshot, SnapshotMeta

MAX = 2**63 - 1
uints = st.one_of(st.integers(0, 1000), st.integers(0, MAX))  # small values often, edges too
node_ids = st.one_of(st.integers(0, 8), st.integers(0, MAX))
blobs = st.binary(max_size=64)


@st.composite
def _header(draw: st.DrawFn) -> dict[str, int]:
    return {"term": draw(uints), "src": draw(node_ids), "dst": draw(node_ids)}


@st.composite
def append_entries(draw: st.DrawFn) -> AppendEntries:
    h = draw(_header())
    term = h["term"]
    prev_term = draw(st.integers(0, term))
    n = draw(st.integers(0, 20))
    prev_index = draw(st.integers(0, MAX - n))
    entries = []
    last = prev_term
    for k in range(n):
        last = draw(st.integers(last, min(term, last + 2)))
        entries.append(
            Entry(prev_index + 1 + k, last, draw(blobs), draw(st.sampled_from(list(EntryType))))
        )
    return AppendEntries(
        **h, prev_index=prev_index, prev_term=prev_term, entries=entries, commit=draw(uints)
    )


@st.composite
def install_snapshot(draw: st.DrawFn) -> InstallSnapshot:
    h = draw(_header())
    voters = draw(st.frozensets(node_ids, max_size=7))
    meta = SnapshotMeta(draw(uints), draw(st.integers(0, h["term"])), ConfState(voters))
    return InstallSnapshot(**h, snapshot=Snapshot(meta, draw(st.binary(max_size=256))))


def _simple(cls: type[Message], **fields: st.SearchStrategy[object]) -> st.SearchStrategy[Message]:
    return st.builds(lambda h, f: cls(**h, **f), _header(), st.fixed_dictionaries(fields))


MESSAGE_STRATEGIES: dict[type[Message], st.SearchStrategy[Message]] = {
    RequestVote: _simple(
        RequestVote,
        last_log_index=uints,
        last_log_term=uints,
        pre_vote=st.booleans(),
        transfer=st.booleans(),
    ),
    RequestVoteResponse: _simple(
        RequestVoteResponse, granted=st.booleans(), pre_vote=st.booleans()
    ),
    AppendEntries: append_entries(),
    AppendEntriesResponse: _simple(
        AppendEntriesResponse,
        success=st.booleans(),
        index=uints,
        conflict_term=uints,
        conflict_index=uints,
    ),
    Heartbeat: _simple(Heartbeat, commit=uints, seq=uints),
    HeartbeatResponse: _simple(HeartbeatResponse, seq=uints, accepted=uints),
    InstallSnapshot: install_snapshot(),
    TimeoutNow: _simple(TimeoutNow),
    ReadIndexRequest: _simple(ReadIndexRequest, context=blobs),
    ReadIndexResponse: _simple(ReadIndexResponse, context=blobs, index=uints),
}

messages = st.one_of(*MESSAGE_STRATEGIES.values())


"""Hypothesis strategies for valid Raft messages, and small asyncio helpers for transport tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

from conf_strategies import conf_states
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
from raftly.transport import SnapshotSinkFactory, TcpTransport
from raftly.transport.codec import (
    CHANNEL_MESSAGES,
    decode_handshake_reply,
    encode_frame,
    encode_handshake,
)
from raftly.transport.framing import read_frame

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
    conf = ConfState.decode(draw(conf_states()).encode())  # what any decoder gives back
    meta = SnapshotMeta(draw(uints), draw(st.integers(0, h["term"])), conf)
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

# -- real transports on loopback ------------------------------------------------------------------

LOCAL = ("127.0.0.1", 0)
CLUSTER = "test-cluster"


def run(coro: Callable[[], Awaitable[None]]) -> None:
    """Run a test body and check it left no task behind (every transport was closed)."""

    async def main() -> None:
        await asyncio.wait_for(coro(), 10.0)
        leftover = asyncio.all_tasks() - {asyncio.current_task()}
        assert not leftover, leftover

    asyncio.run(main())


class Node:
    """A started transport and the messages it received."""

    def __init__(self, node_id: int, **kwargs: object) -> None:
        self.id = node_id
        self.inbox: list[Message] = []
        kwargs.setdefault("cluster_id", CLUSTER)
        self.t = TcpTransport(node_id, kwargs.pop("listen", LOCAL), {}, **kwargs)  # type: ignore[arg-type]

    async def start(self, snapshot_sink: SnapshotSinkFactory | None = None) -> Node:
        await self.t.start(self.inbox.append, snapshot_sink=snapshot_sink)
        return self

    @property
    def addr(self) -> tuple[str, int]:
        return self.t.listen_address


async def pair(
    snapshot_sink: SnapshotSinkFactory | None = None, **kwargs: object
) -> tuple[Node, Node]:
    """Nodes 1 and 2, started and knowing each other; both take snapshots with ``snapshot_sink``."""
    a = await Node(1, **kwargs).start(snapshot_sink)
    b = await Node(2, **kwargs).start(snapshot_sink)
    peers = {1: a.addr, 2: b.addr}
    a.t.set_peers(peers)
    b.t.set_peers(peers)
    return a, b


def hb(src: int, dst: int, commit: int = 0) -> Heartbeat:
    return Heartbeat(term=1, src=src, dst=dst, commit=commit)


async def raw_client(
    addr: tuple[str, int],
    cluster_id: str = CLUSTER,
    node_id: int = 7,
    channel: str = CHANNEL_MESSAGES,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A hand-rolled peer that has shaken hands and may now write anything."""
    reader, writer = await asyncio.open_connection(*addr)
    writer.write(encode_frame(encode_handshake(cluster_id, node_id, channel=channel)))
    reply = await read_frame(reader)
    assert reply is not None and decode_handshake_reply(reply).accepted
    return reader, writer


async def closed_by_peer(reader: asyncio.StreamReader) -> bool:
    """True when the other end closes (EOF or reset) within the deadline."""
    try:
        return await asyncio.wait_for(reader.read(), 3.0) == b""
    except ConnectionError:
        return True


# -- snapshot sinks ------------------------------------------------------------------------------


class FakeSink:
    """Records what the transport did with it; ``gate`` (when given) holds every write until set,
    from the worker thread, so a test can keep a transfer stalled for as long as it likes."""

    def __init__(self, msg: InstallSnapshot, events: list[str], *, finish_error: str = "",
                 meta: SnapshotMeta | None = None, gate: threading.Event | None = None) -> None:
        self.msg = msg
        self.events = events
        self.data = bytearray()
        self.writes = 0
        self.finished = False
        self.aborted = False
        self.finish_error = finish_error
        self.meta = meta if meta is not None else msg.snapshot.meta
        self.gate = gate

    def write(self, data: bytes) -> int:
        assert type(data) is bytes and not self.finished and not self.aborted
        self.writes += 1
        if self.gate is not None:
            assert self.gate.wait(20.0)
        self.data += data
        return len(data)

    def finish(self) -> SnapshotMeta:
        assert not self.aborted
        if self.finish_error:
            raise ValueError(self.finish_error)
        self.finished = True
        self.events.append("finish")
        return self.meta

    def abort(self) -> None:
        assert not self.aborted
        self.aborted = True
        self.events.append("abort")


class Sinks:
    """A ``snapshot_sink`` factory that hands out FakeSinks and keeps them for the test."""

    def __init__(self, **options: object) -> None:
        self.options = options
        self.made: list[FakeSink] = []
        self.events: list[str] = []
        self.refuse = False

    def release(self) -> None:
        """Let the writes held by the ``gate`` option go on."""
        gate = self.options["gate"]
        assert isinstance(gate, threading.Event)
        gate.set()

    def writing(self) -> bool:
        """The first sink has begun its first write."""
        return bool(self.made) and self.made[0].writes > 0

    def __call__(self, msg: InstallSnapshot) -> FakeSink | None:
        if self.refuse:
            return None
        sink = FakeSink(msg, self.events, **self.options)  # type: ignore[arg-type]
        self.made.append(sink)
        return sink

"""Snapshot files over TcpTransport on loopback: whole and verified before delivery, beside
heartbeats, failing cleanly (broken connection, finish() raising, silent receiver, hostile
input) with the sink aborted, and a retry succeeding."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conf_strategies import addressed
from polling import eventually
from transport_helpers import LOCAL, Node, Sinks, closed_by_peer, hb, pair, raw_client, run

from raftly.core.messages import Heartbeat, InstallSnapshot, Message
from raftly.core.types import ConfState, Snapshot, SnapshotMeta
from raftly.logevents import event_of
from raftly.storage.snapshots import IncomingSnapshot, SnapshotStore
from raftly.transport.codec import (
    CHANNEL_SNAPSHOT,
    decode_handshake,
    decode_snapshot_reply,
    encode_frame,
    encode_handshake_reply,
    encode_message,
    encode_snapshot_header,
    snapshot_chunk_prefix,
)
from raftly.transport.framing import read_frame

META = SnapshotMeta(index=120, term=3, conf=ConfState(frozenset({1, 2, 3})))


def install(
    meta: SnapshotMeta = META, src: int = 1, dst: int = 2, term: int = 4
) -> InstallSnapshot:
    return InstallSnapshot(term=term, src=src, dst=dst, snapshot=Snapshot(meta))


def snapshot_file(tmp_path: Path, size: int, name: str = "snap") -> tuple[str, bytes]:
    data = os.urandom(size)
    path = tmp_path / name
    path.write_bytes(data)
    return str(path), data


def snapshots(node: Node) -> list[Message]:
    return [m for m in node.inbox if isinstance(m, InstallSnapshot)]


@contextlib.asynccontextmanager
async def snapshot_pair(sinks: Sinks) -> AsyncIterator[tuple[Node, Node]]:
    """Nodes 1 and 2 where 2's deliveries are logged in ``sinks.events`` after its sink's;
    both closed on the way out."""
    a = await Node(1).start(sinks)
    b = Node(2)
    b.inbox = _Inbox(sinks.events)
    await b.start(sinks)
    for node in (a, b):
        node.t.set_peers({1: a.addr, 2: b.addr})
    try:
        yield a, b
    finally:
        await a.t.close()
        await b.t.close()


async def stalled_transfer(a: Node, sinks: Sinks, path: str) -> asyncio.Task[bool]:
    """A transfer of ``install()`` from ``a``, running and held at its first write (by a gate
    the test gave ``sinks``)."""
    transfer = asyncio.create_task(a.t.send_snapshot(install(), path, chunk_size=64 << 10))
    await eventually(sinks.writing, what="the first write")
    return transfer


class _Inbox(list[Message]):
    def __init__(self, events: list[str]) -> None:
        super().__init__()
        self.events = events

    def append(self, msg: Message) -> None:
        if isinstance(msg, InstallSnapshot):
            self.events.append("deliver")
        super().append(msg)


# -- success --------------------------------------------------------------------------------------


def test_a_multi_mib_file_arrives_byte_identical_and_is_delivered_once_after_finish(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="raftly.transport")
    path, data = snapshot_file(tmp_path, (5 << 20) + 12345)  # not a multiple of the chunk size

    async def body() -> None:
        sinks = Sinks()
        async with snapshot_pair(sinks) as (a, b):
            msg = install()
            assert await a.t.send_snapshot(msg, path, chunk_size=256 << 10) is True
            [sink] = sinks.made
            assert bytes(sink.data) == data and sink.finished and not sink.aborted
            assert sink.writes == 21  # 20 whole chunks and the tail
            assert sinks.events == ["finish", "deliver"]  # delivered once, after finish()
            assert snapshots(b) == [msg]
            assert a.t.stats()["snapshots_sent"] == 1 and b.t.stats()["snapshots_received"] == 1

    run(body)
    [sent] = [event_of(r)[1] for r in caplog.records if event_of(r)[0] == "snapshot_sent"]
    assert sent["peer"] == 2 and sent["size"] == len(data) and sent["seconds"] >= 0
    [received] = [event_of(r)[1] for r in caplog.records if event_of(r)[0] == "snapshot_received"]
    assert received == {"peer": 1, "index": install().snapshot.meta.index, "size": len(data)}


def test_a_stored_snapshot_with_learners_and_addresses_arrives_as_the_leader_holds_it(
    tmp_path: Path,
) -> None:
    # The configuration travels twice, in the header frame and in the file's own header; the
    # receiver's store checks that they agree, so both carry every field.
    meta = SnapshotMeta(120, 3, addressed({1, 2}, {7}))
    leader, follower = SnapshotStore(tmp_path / "leader"), SnapshotStore(tmp_path / "follower")
    writer = leader.create(meta)
    writer.write(os.urandom(100_000))
    writer.commit()
    received: list[IncomingSnapshot] = []

    def sink(msg: InstallSnapshot) -> IncomingSnapshot:
        received.append(follower.receive())
        return received[-1]

    async def body() -> None:
        a, b = await pair(sink)
        try:
            msg = install(meta)
            assert await a.t.send_snapshot(msg, leader.path(meta)) is True
            assert snapshots(b) == [msg]
        finally:
            await a.t.close()
            await b.t.close()

    run(body)
    [incoming] = received
    assert incoming.meta == meta and follower.install(incoming) == meta
    assert follower.metas() == [meta]


def test_an_empty_file_is_delivered(tmp_path: Path) -> None:
    path, _ = snapshot_file(tmp_path, 0)

    async def body() -> None:
        sinks = Sinks()
        async with snapshot_pair(sinks) as (a, b):
            assert await a.t.send_snapshot(install(), path) is True
            assert sinks.events == ["finish", "deliver"] and sinks.made[0].writes == 0
            assert snapshots(b) == [install()]

    run(body)


def test_heartbeats_keep_flowing_while_a_slow_sink_throttles_a_transfer(tmp_path: Path) -> None:
    path, data = snapshot_file(tmp_path, 3 << 20)

    async def body() -> None:
        sinks = Sinks(gate=threading.Event())
        async with snapshot_pair(sinks) as (a, b):
            transfer = await stalled_transfer(a, sinks, path)
            for commit in range(200):  # both ways, while the receiver's disk is stuck
                a.t.send(hb(1, 2, commit))
                b.t.send(hb(2, 1, commit))
            await eventually(lambda: sum(isinstance(m, Heartbeat) for m in b.inbox) == 200)
            await eventually(lambda: len(a.inbox) == 200)
            assert not transfer.done() and sinks.made[0].writes == 1  # still held by the sink
            sinks.release()
            assert await transfer is True
            assert bytes(sinks.made[0].data) == data

    run(body)


# -- failures -------------------------------------------------------------------------------------


class Proxy:
    """A TCP relay on loopback whose connections a test can cut, like a failing network."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> tuple[str, int]:
        self.server = await asyncio.start_server(self._accept, *LOCAL)
        host, port = self.server.sockets[0].getsockname()[:2]
        return host, port

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._relay(reader, writer))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers += [writer, up_writer]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(1 << 16):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    def cut(self) -> None:
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()

    async def close(self) -> None:
        self.cut()
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def test_a_broken_connection_aborts_the_sink_and_fails_then_a_retry_succeeds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, data = snapshot_file(tmp_path, 2 << 20)

    async def body() -> None:
        sinks = Sinks(gate=threading.Event())
        async with snapshot_pair(sinks) as (a, b):
            proxy = Proxy(b.addr)
            a.t.set_peers({2: await proxy.start()})
            transfer = await stalled_transfer(a, sinks, path)
            proxy.cut()
            assert await transfer is False
            sinks.release()  # the receiver finds the broken connection once its write returns
            await eventually(lambda: sinks.made[0].aborted, what="the sink aborted")
            assert snapshots(b) == [] and not sinks.made[0].finished
            assert b.t.stats()["snapshots_receive_failed"] == 1
            assert await a.t.send_snapshot(install(), path, chunk_size=64 << 10) is True
            assert bytes(sinks.made[1].data) == data and snapshots(b) == [install()]
            await proxy.close()

    with caplog.at_level(logging.INFO):
        run(body)
    failed = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert any(m.startswith("node 1 -> 2: snapshot 3/120") for m in failed), failed
    assert any(m.startswith("node 2: snapshot 3/120") and "node 1" in m for m in failed), failed
    [broke] = [event_of(r)[1] for r in caplog.records
               if event_of(r)[0] == "snapshot_receive_failed"]
    assert broke["peer"] == 1 and broke["index"] == 120 and broke["reason"]
    [received] = [event_of(r)[1] for r in caplog.records if event_of(r)[0] == "snapshot_received"]
    assert received == {"peer": 1, "index": 120, "size": len(data)}


def test_finish_raising_fails_the_transfer_aborts_the_sink_and_delivers_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, _ = snapshot_file(tmp_path, 300_000)

    async def body() -> None:
        sinks = Sinks(finish_error="checksum mismatch at byte 1234")
        async with snapshot_pair(sinks) as (a, b):
            assert await a.t.send_snapshot(install(), path, chunk_size=64 << 10) is False
            await eventually(lambda: sinks.made[0].aborted)
            assert snapshots(b) == [] and sinks.events == ["abort"]

    with caplog.at_level(logging.WARNING):
        run(body)
    sender = [r.getMessage() for r in caplog.records if r.getMessage().startswith("node 1 -> 2")]
    assert len(sender) == 1 and "checksum mismatch at byte 1234" in sender[0], sender


def test_a_file_whose_meta_is_not_the_announced_one_is_refused(tmp_path: Path) -> None:
    path, _ = snapshot_file(tmp_path, 1000)

    async def body() -> None:
        sinks = Sinks(meta=SnapshotMeta(index=119, term=3, conf=META.conf))
        async with snapshot_pair(sinks) as (a, b):
            assert await a.t.send_snapshot(install(), path) is False
            await eventually(lambda: sinks.made[0].aborted)
            assert snapshots(b) == []

    run(body)


def test_a_refused_or_unwanted_snapshot_fails_without_delivery(tmp_path: Path) -> None:
    path, _ = snapshot_file(tmp_path, 1000)

    async def body() -> None:
        sinks = Sinks()
        sinks.refuse = True
        async with snapshot_pair(sinks) as (a, b):
            assert await a.t.send_snapshot(install(), path) is False
            no_sink = await Node(3).start()  # accepts no snapshots at all
            a.t.set_peers({2: b.addr, 3: no_sink.addr})
            assert await a.t.send_snapshot(install(dst=3), path) is False
            assert snapshots(b) == [] and snapshots(no_sink) == [] and sinks.made == []
            assert await a.t.send_snapshot(install(dst=9), path) is False  # no address
            assert await a.t.send_snapshot(install(), str(tmp_path / "missing")) is False
            assert a.t.stats()["snapshots_send_failed"] == 3
            for node in (a, b, no_sink):
                await node.t.close()

    run(body)


async def silent_server(answer_handshake: bool) -> tuple[asyncio.Server, list[bytes]]:
    """A listener that reads everything it gets and never says anything beyond (optionally) the
    handshake's acceptance."""
    received: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hello = await read_frame(reader)
        assert hello is not None
        received.append(hello)
        if answer_handshake:
            writer.write(encode_frame(encode_handshake_reply(True)))
        while data := await reader.read(1 << 16):
            received.append(data)
        writer.close()

    return await asyncio.start_server(serve, *LOCAL), received


@pytest.mark.parametrize("answers_handshake", [False, True])
def test_a_receiver_that_does_not_answer_fails_the_transfer_after_the_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, answers_handshake: bool
) -> None:
    path, _ = snapshot_file(tmp_path, 1 << 20)

    async def body() -> None:
        server, received = await silent_server(answers_handshake)
        a = await Node(1, connect_timeout=0.3, handshake_timeout=0.3,
                       snapshot_timeout=0.3).start()
        a.t.set_peers({2: server.sockets[0].getsockname()[:2]})
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await a.t.send_snapshot(install(), path, chunk_size=64 << 10) is False
        assert loop.time() - started < 5.0
        assert decode_handshake(received[0]).channel == CHANNEL_SNAPSHOT
        await a.t.close()
        server.close()
        await server.wait_closed()

    with caplog.at_level(logging.WARNING):
        run(body)
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("node 1 -> 2")]
    assert ("no progress for 0.3s" in line) if answers_handshake else ("TimeoutError" in line)


def test_a_newer_transfer_replaces_the_running_one_and_the_same_one_is_joined(
    tmp_path: Path,
) -> None:
    path, data = snapshot_file(tmp_path, 1 << 20)

    async def body() -> None:
        sinks = Sinks(gate=threading.Event())
        async with snapshot_pair(sinks) as (a, b):
            old = await stalled_transfer(a, sinks, path)
            same = asyncio.create_task(a.t.send_snapshot(install(), path, chunk_size=64 << 10))
            await asyncio.sleep(0)  # let it register; a joined call opens no connection
            newer = install(SnapshotMeta(index=200, term=3, conf=META.conf))
            new = asyncio.create_task(a.t.send_snapshot(newer, path, chunk_size=64 << 10))
            assert await old is False and await same is False  # replaced, both its callers told
            sinks.release()
            assert await new is True
            await eventually(lambda: sinks.made[0].aborted)
            assert [s.msg for s in sinks.made] == [install(), newer]
            assert snapshots(b) == [newer] and bytes(sinks.made[1].data) == data

    run(body)


def test_closing_either_side_mid_transfer_fails_it_and_aborts_the_sink(tmp_path: Path) -> None:
    path, _ = snapshot_file(tmp_path, 1 << 20)

    async def body() -> None:
        for closing_sender in (True, False):
            sinks = Sinks(gate=threading.Event())
            async with snapshot_pair(sinks) as (a, b):  # closes the other one
                transfer = await stalled_transfer(a, sinks, path)
                await (a if closing_sender else b).t.close()
                sinks.release()
                assert await transfer is False
                await eventually(lambda s=sinks: s.made[0].aborted)  # type: ignore[misc]

    run(body)


def test_caller_mistakes_raise_value_error(tmp_path: Path) -> None:
    path, _ = snapshot_file(tmp_path, 10)

    async def body() -> None:
        a = await Node(1, max_frame_size=1 << 16).start()
        a.t.set_peers({2: ("127.0.0.1", 1)})
        with pytest.raises(ValueError, match="chunk_size"):
            await a.t.send_snapshot(install(), path, chunk_size=1 << 16)  # + the tag: too big
        with pytest.raises(ValueError, match="no data"):
            msg = InstallSnapshot(term=4, src=1, dst=2, snapshot=Snapshot(META, b"x"))
            await a.t.send_snapshot(msg, path, chunk_size=1024)
        with pytest.raises(ValueError, match="src"):
            await a.t.send_snapshot(install(src=5), path, chunk_size=1024)
        await a.t.close()

    run(body)


# -- hostile input --------------------------------------------------------------------------------

_SIZE = struct.Struct(">Q")


def _header(size: int, msg: Message | None = None) -> bytes:
    return encode_frame(encode_snapshot_header(msg or install(src=7), size))


def _chunk(data: bytes) -> bytes:
    return snapshot_chunk_prefix(len(data)) + data


HOSTILE = {
    "a chunk before the header": _chunk(b"abc"),
    "a header that is not an InstallSnapshot": encode_frame(
        b"H" + _SIZE.pack(3) + encode_message(hb(7, 2))
    ),
    "a header carrying data": encode_frame(
        b"H" + _SIZE.pack(3) + encode_message(
            InstallSnapshot(term=4, src=7, dst=2, snapshot=Snapshot(META, b"inline")))
    ),
    "a header from another node than the handshake's": _header(3, install(src=5)),
    "a header for another node": _header(3, install(src=7, dst=9)),
    "a truncated header": encode_frame(b"H\x00\x00"),
    "garbage": encode_frame(b"\x00garbage"),
    "more bytes than announced": _header(3) + _chunk(b"abcd"),
    "an empty chunk": _header(3) + _chunk(b""),
    "a second header": _header(3) + _header(3),
    "an oversized chunk": _header(1 << 20) + snapshot_chunk_prefix(1 << 20),
    "fewer bytes than announced, then the end": _header(10) + _chunk(b"abc"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_snapshot_streams_are_refused_and_abort_the_sink(case: str) -> None:
    async def body() -> None:
        sinks = Sinks()
        b = await Node(2, max_frame_size=1 << 16, snapshot_timeout=5.0).start(sinks)
        reader, writer = await raw_client(b.addr, node_id=7, channel=CHANNEL_SNAPSHOT)
        writer.write(HOSTILE[case])
        if case.endswith("then the end"):
            writer.write_eof()
        reply = decode_snapshot_reply(await asyncio.wait_for(read_frame(reader), 5.0) or b"")
        while reply.kind == "ack":  # of what was written before the problem
            reply = decode_snapshot_reply(await asyncio.wait_for(read_frame(reader), 5.0) or b"")
        assert reply.kind == "refused", reply  # told why, then closed
        if writer.can_write_eof() and not case.endswith("then the end"):
            writer.write_eof()  # as a sender does on a refusal: the receiver stops lingering
        assert await closed_by_peer(reader)
        writer.close()
        await eventually(lambda: all(s.aborted for s in sinks.made))
        assert snapshots(b) == [] and not any(s.finished for s in sinks.made)
        assert b.t.stats()["snapshots_receive_failed"] == 1
        # The node is unharmed: ordinary messages still arrive.
        _, w = await raw_client(b.addr, node_id=7)
        w.write(encode_frame(encode_message(hb(7, 2))))
        await eventually(lambda: b.inbox == [hb(7, 2)])
        w.close()
        await b.t.close()

    run(body)


def test_a_snapshot_stream_does_not_close_the_message_connection_of_its_node() -> None:
    async def body() -> None:
        a, b = await pair()
        a.t.send(hb(1, 2, 1))
        await eventually(lambda: b.inbox == [hb(1, 2, 1)])
        _, writer = await raw_client(b.addr, node_id=1, channel=CHANNEL_SNAPSHOT)
        a.t.send(hb(1, 2, 2))
        await eventually(lambda: b.inbox == [hb(1, 2, 1), hb(1, 2, 2)])
        assert a.t.stats()["connects"] == 1  # the message connection was never redialled
        writer.close()
        await a.t.close()
        await b.t.close()

    run(body)


def test_a_wrong_cluster_is_refused_on_the_snapshot_channel_too(tmp_path: Path) -> None:
    path, _ = snapshot_file(tmp_path, 100)

    async def body() -> None:
        sinks = Sinks()
        a = await Node(1, cluster_id="other").start()
        b = await Node(2).start(sinks)
        a.t.set_peers({2: b.addr})
        assert await a.t.send_snapshot(install(), path) is False
        assert sinks.made == [] and b.t.stats()["refused"] == 1
        await a.t.close()
        await b.t.close()

    run(body)



def test_a_sender_that_stalls_mid_file_is_dropped_after_the_timeout_and_its_sink_aborted() -> None:
    async def body() -> None:
        sinks = Sinks()
        b = await Node(2, snapshot_timeout=0.3).start(sinks)
        reader, writer = await raw_client(b.addr, node_id=7, channel=CHANNEL_SNAPSHOT)
        writer.write(_header(10) + _chunk(b"abc"))  # and then nothing
        assert decode_snapshot_reply(await read_frame(reader) or b"").kind == "ack"
        reply = decode_snapshot_reply(await asyncio.wait_for(read_frame(reader), 5.0) or b"")
        assert reply.kind == "refused" and "no progress for 0.3s" in reply.reason
        await eventually(lambda: sinks.made[0].aborted)
        writer.close()
        await b.t.close()

    run(body)

"""TcpTransport over real loopback sockets: exchange, reconnect, refusal, garbage, limits, close."""

from __future__ import annotations

import asyncio
import logging
import struct

import pytest
from polling import eventually
from transport_helpers import CLUSTER, LOCAL, Node, closed_by_peer, hb, pair, raw_client, run

from raftly.core.messages import (
    AppendEntries,
    HeartbeatResponse,
    Message,
    ReadIndexRequest,
    RequestVote,
)
from raftly.core.types import Entry
from raftly.logevents import event_of
from raftly.transport import TcpTransport, Transport
from raftly.transport.codec import (
    CodecError,
    FrameTooLarge,
    decode_handshake_reply,
    encode_frame,
    encode_handshake,
    encode_handshake_reply,
    frame_message,
)
from raftly.transport.tcp import read_frame


def _reader(data: bytes, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


def test_read_frame() -> None:
    async def main() -> None:
        assert await read_frame(_reader(encode_frame(b"abc"))) == b"abc"
        assert await read_frame(_reader(b"")) is None
        with pytest.raises(CodecError):
            await read_frame(_reader(b"\x00\x00"))
        with pytest.raises(CodecError):
            await read_frame(_reader(encode_frame(b"abcdef")[:-1]))
        with pytest.raises(FrameTooLarge):  # raised without waiting for a body (no EOF fed)
            await asyncio.wait_for(read_frame(_reader(b"\x00\x00\x01\x00", False), 255), 1.0)

    asyncio.run(main())


def test_tcp_transport_satisfies_the_protocol() -> None:
    t = TcpTransport(1, LOCAL, {}, cluster_id=CLUSTER)
    assert isinstance(t, Transport)


def test_two_transports_exchange_messages_in_order_and_count_them_per_peer() -> None:
    async def body() -> None:
        a, b = await pair()
        entries = [Entry(i, 1, b"x" * 16) for i in range(1, 101)]
        ae = AppendEntries(term=1, src=1, dst=2, prev_index=0, prev_term=0, entries=entries)
        sent_ab: list[Message] = [ae] + [hb(1, 2, i) for i in range(200)]
        for m in sent_ab:
            a.t.send(m)
        sent_ba = [HeartbeatResponse(term=1, src=2, dst=1, seq=i) for i in range(200)]
        for m in sent_ba:
            b.t.send(m)
        await eventually(lambda: len(b.inbox) == len(sent_ab) and len(a.inbox) == len(sent_ba))
        assert b.inbox == sent_ab
        assert a.inbox == sent_ba
        sa, sb = a.t.stats(), b.t.stats()
        assert sa["sent"] == len(sent_ab) and sa["received"] == len(sent_ba)
        assert sb["sent"] == len(sent_ba) and sb["received"] == len(sent_ab)
        assert sa["dropped"] == sb["dropped"] == sa["decode_errors"] == 0
        assert sa["connections"] == 2  # one outbound to b, one inbound from b
        # Per peer id (never our own), every message and every byte of its frame, both ends.
        frames_ab = sum(len(frame_message(m)) for m in sent_ab)
        frames_ba = sum(len(frame_message(m)) for m in sent_ba)
        ta, tb = a.t.traffic(), b.t.traffic()
        assert set(ta) == {2} and set(tb) == {1}
        assert (ta[2].messages_sent, ta[2].bytes_sent) == (len(sent_ab), frames_ab)
        assert (tb[1].messages_received, tb[1].bytes_received) == (len(sent_ab), frames_ab)
        assert (tb[1].messages_sent, tb[1].bytes_sent) == (len(sent_ba), frames_ba)
        assert (ta[2].messages_received, ta[2].bytes_received) == (len(sent_ba), frames_ba)
        a.t.set_peers({})  # counters outlive the peer's removal: they never go back
        assert a.t.traffic()[2].messages_sent == len(sent_ab)
        await a.t.close()
        await b.t.close()

    run(body)


def test_a_peer_that_is_down_is_reached_once_it_comes_up() -> None:
    async def body() -> None:
        b = await Node(2).start()
        port = b.addr[1]
        await b.t.close()  # b is down; its port is known
        a = await Node(1, connect_timeout=0.5).start()
        a.t.set_peers({2: ("127.0.0.1", port)})
        a.t.send(hb(1, 2))
        await eventually(lambda: a.t.stats()["connect_failures"] >= 1)
        assert a.t.stats()["dropped"] >= 1  # what was queued for a dead peer is dropped

        b = await Node(2, listen=("127.0.0.1", port)).start()

        async def keep_sending() -> None:  # as Raft does: heartbeats until someone listens
            while True:
                a.t.send(hb(1, 2))
                await asyncio.sleep(0.02)

        sender = asyncio.create_task(keep_sending())
        try:
            await eventually(lambda: len(b.inbox) >= 3, timeout=5.0)
        finally:
            sender.cancel()
        assert a.t.stats()["connects"] == 1
        await a.t.close()
        await b.t.close()

    run(body)


def test_a_restarted_peer_is_redialled() -> None:
    async def body() -> None:
        a, b = await pair()
        a.t.send(hb(1, 2))
        await eventually(lambda: len(b.inbox) == 1)
        port = b.addr[1]
        await b.t.close()
        b = await Node(2, listen=("127.0.0.1", port)).start()

        async def keep_sending() -> None:
            while True:
                a.t.send(hb(1, 2))
                await asyncio.sleep(0.02)

        sender = asyncio.create_task(keep_sending())
        try:
            await eventually(lambda: len(b.inbox) >= 1)
        finally:
            sender.cancel()
        await a.t.close()
        await b.t.close()

    run(body)


def test_a_wrong_cluster_id_is_refused_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="raftly.transport")

    async def body() -> None:
        b = await Node(2).start()
        a = await Node(1, cluster_id="other-cluster").start()
        a.t.set_peers({2: b.addr})
        a.t.send(hb(1, 2))
        await eventually(lambda: b.t.stats()["refused"] >= 1 and a.t.stats()["connect_failures"])
        assert b.inbox == []
        assert b.t.stats()["connections"] == 0
        await a.t.close()
        await b.t.close()

    run(body)
    refused = [r for r in caplog.records if r.levelno == logging.WARNING and "refused" in r.message]
    assert any("other-cluster" in r.message for r in refused), caplog.text
    # And as a structured event: who, from where, why.
    fields = [event_of(r)[1] for r in refused if event_of(r)[0] == "peer_refused"]
    assert fields and fields[0]["peer"] == 1 and "other-cluster" in fields[0]["reason"]
    assert fields[0]["source"].startswith("127.0.0.1:")


# Version 1 sent a snapshot's voters as an array where version 2 sends ConfState.encode() bytes.
@pytest.mark.parametrize("version", [1, 99])
def test_a_wrong_protocol_version_is_refused(version: int) -> None:
    async def body() -> None:
        b = await Node(2).start()
        reader, writer = await asyncio.open_connection(*b.addr)
        writer.write(encode_frame(encode_handshake(CLUSTER, 7, version=version)))
        reply = await read_frame(reader)
        assert reply is not None
        answer = decode_handshake_reply(reply)
        assert not answer.accepted and "version" in answer.reason
        assert await closed_by_peer(reader)
        writer.close()
        await b.t.close()

    run(body)


def test_garbage_on_the_port_closes_that_connection_and_others_keep_working(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="raftly.transport")

    async def body() -> None:
        a, b = await pair()
        # Garbage instead of a handshake.
        r1, w1 = await asyncio.open_connection(*b.addr)
        w1.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await closed_by_peer(r1)
        # A good handshake, then a frame that is not a message.
        r2, w2 = await raw_client(b.addr)
        w2.write(encode_frame(b"\xc1garbage"))
        assert await closed_by_peer(r2)
        # A good handshake, then a valid message that claims another sender.
        r3, w3 = await raw_client(b.addr, node_id=7)
        w3.write(frame_message(hb(src=8, dst=2)))
        assert await closed_by_peer(r3)
        # ... or another recipient.
        r4, w4 = await raw_client(b.addr, node_id=7)
        w4.write(frame_message(hb(src=7, dst=3)))
        assert await closed_by_peer(r4)
        for w in (w1, w2, w3, w4):
            w.close()
        assert b.t.stats()["decode_errors"] == 4
        # The node still serves its real peer.
        a.t.send(hb(1, 2, 42))
        await eventually(lambda: len(b.inbox) == 1)
        assert b.inbox[0] == hb(1, 2, 42)
        await a.t.close()
        await b.t.close()

    run(body)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 4, [r.message for r in warnings]  # one line per bad connection
    assert all(r.levelno == logging.WARNING for r in warnings)  # no tracebacks, no errors


def test_strangers_claiming_ids_add_no_traffic_counters_and_junk_counts_for_no_peer() -> None:
    async def body() -> None:
        a, b = await pair()
        a.t.send(hb(1, 2, 1))
        await eventually(lambda: len(b.inbox) == 1)
        counted = b.t.traffic()
        assert set(counted) == {1}
        # Ids nobody configured, each with junk or with a valid message: no new entries.
        for i in range(20):
            r, w = await raw_client(b.addr, node_id=1000 + i)
            w.write(frame_message(hb(1000 + i, 2)) if i % 2 else b"\x00\x00\x00\x05hello")
            if i % 2 == 0:
                assert await closed_by_peer(r)
            w.close()
        await eventually(lambda: len(b.inbox) == 11, what="the valid messages delivered")
        # A stranger claiming the member's id and sending junk adds nothing to its counters.
        r, w = await raw_client(b.addr, node_id=1)
        w.write(b"\x00\x00\x00\x05hello")
        assert await closed_by_peer(r)
        w.close()
        assert b.t.traffic() == counted
        await a.t.close()
        await b.t.close()

    run(body)


def test_valid_frames_before_a_bad_one_are_delivered() -> None:
    async def body() -> None:
        b = await Node(2).start()
        r, w = await raw_client(b.addr, node_id=7)
        w.write(frame_message(hb(7, 2, 1)) + frame_message(hb(7, 2, 2)) + encode_frame(b"\x00"))
        assert await closed_by_peer(r)
        assert b.inbox == [hb(7, 2, 1), hb(7, 2, 2)]
        w.close()
        await b.t.close()

    run(body)


def test_an_oversized_frame_closes_the_connection_before_its_body() -> None:
    async def body() -> None:
        b = await Node(2, max_frame_size=1024).start()
        r, w = await raw_client(b.addr)
        w.write(struct.pack(">I", 1025))  # only the header: the body never needs to arrive
        assert await closed_by_peer(r)
        assert b.t.stats()["decode_errors"] == 1
        w.close()
        await b.t.close()

    run(body)


def test_a_message_over_the_frame_limit_is_dropped_by_the_sender() -> None:
    async def body() -> None:
        a, b = await pair(max_frame_size=1024)
        a.t.send(ReadIndexRequest(term=1, src=1, dst=2, context=b"x" * 2000))
        a.t.send(hb(1, 2))
        await eventually(lambda: len(b.inbox) == 1)
        assert b.inbox == [hb(1, 2)]
        assert a.t.stats()["dropped"] == 1
        await a.t.close()
        await b.t.close()

    run(body)


def test_a_silent_client_is_dropped_after_the_handshake_timeout() -> None:
    async def body() -> None:
        b = await Node(2, handshake_timeout=0.2).start()
        r, w = await asyncio.open_connection(*b.addr)
        assert await closed_by_peer(r)
        w.close()
        await b.t.close()

    run(body)


def test_a_peer_connection_that_sends_nothing_is_closed_after_the_idle_timeout() -> None:
    async def body() -> None:
        b = await Node(2, idle_timeout=0.3).start()
        r, w = await raw_client(b.addr)
        assert b.t.stats()["inbound_connections"] == 1
        assert await closed_by_peer(r)
        await eventually(lambda: b.t.stats()["inbound_connections"] == 0, what="forgotten")
        w.close()
        await b.t.close()

    run(body)


def test_a_peer_connection_that_keeps_talking_outlives_the_idle_timeout_then_idles_out() -> None:
    async def body() -> None:
        b = await Node(2, idle_timeout=0.3).start()
        r, w = await raw_client(b.addr)
        for commit in range(1, 11):  # 1s of traffic, a message every 0.1s: > 3 idle timeouts
            w.write(frame_message(hb(7, 2, commit)))
            await eventually(lambda n=commit: len(b.inbox) == n, what=f"message {commit}")
            assert b.t.stats()["inbound_connections"] == 1
            await asyncio.sleep(0.1)  # paces the traffic; nothing waits on it to happen
        assert not r.at_eof()
        assert await closed_by_peer(r)  # silent now: closed after the idle timeout
        assert b.inbox == [hb(7, 2, c) for c in range(1, 11)]
        w.close()
        await b.t.close()

    run(body)


def test_the_queue_is_bounded_and_drops_instead_of_growing() -> None:
    async def body() -> None:
        a = await Node(1, queue_limit=10).start()
        a.t.set_peers({2: ("127.0.0.1", 9)})
        for i in range(1000):  # no await: the writer has not even run yet
            a.t.send(hb(1, 2, i))
        stats = a.t.stats()
        assert stats["queued"] == 10
        assert stats["dropped"] == 990
        await a.t.close()

    run(body)


def test_a_peer_that_stops_reading_does_not_grow_memory() -> None:
    """The peer shakes hands, then never reads: the socket buffers fill, then the queue."""

    async def body() -> None:
        accepted: list[asyncio.StreamWriter] = []

        async def stalled(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_frame(reader)
            writer.write(encode_frame(encode_handshake_reply(True)))
            accepted.append(writer)  # and never read again

        server = await asyncio.start_server(stalled, *LOCAL)
        port = server.sockets[0].getsockname()[1]
        a = await Node(1, queue_limit=50).start()
        a.t.set_peers({2: ("127.0.0.1", port)})
        big = ReadIndexRequest(term=1, src=1, dst=2, context=b"x" * 65536)
        for _ in range(400):  # 26 MB offered, far beyond socket buffers
            a.t.send(big)
            await asyncio.sleep(0)
            assert a.t.stats()["queued"] <= 50
        await eventually(lambda: a.t.stats()["dropped"] > 0)
        await a.t.close()
        for w in accepted:
            w.close()
        server.close()
        await server.wait_closed()

    run(body)


def test_a_failing_handler_is_logged_and_the_connection_survives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body() -> None:
        a, b = await pair()

        def handler(msg: Message) -> None:
            b.inbox.append(msg)
            if len(b.inbox) == 1:
                raise RuntimeError("handler bug")

        b.t._on_message = handler  # swap the handler the transport was started with
        a.t.send(hb(1, 2, 1))
        a.t.send(hb(1, 2, 2))
        await eventually(lambda: len(b.inbox) == 2)
        await a.t.close()
        await b.t.close()

    run(body)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None


def test_set_peers_moves_and_removes_peers() -> None:
    async def body() -> None:
        a = await Node(1).start()
        b = await Node(2).start()
        c = await Node(2).start()  # a second node with id 2 at another address
        a.t.set_peers({1: a.addr, 2: b.addr})  # its own id is ignored
        a.t.send(hb(1, 2, 1))
        await eventually(lambda: len(b.inbox) == 1)
        a.t.set_peers({2: c.addr})
        a.t.send(hb(1, 2, 2))
        await eventually(lambda: len(c.inbox) == 1)
        assert c.inbox == [hb(1, 2, 2)]
        a.t.set_peers({})
        a.t.send(hb(1, 2, 3))
        assert a.t.stats()["dropped"] == 1
        for n in (a, b, c):
            await n.t.close()

    run(body)


def test_messages_to_unknown_nodes_or_with_a_foreign_src_are_dropped() -> None:
    async def body() -> None:
        a = await Node(1).start()
        a.t.send(hb(1, 5))
        a.t.send(RequestVote(term=1, src=3, dst=5, last_log_index=0, last_log_term=0))
        assert a.t.stats()["dropped"] == 2
        await a.t.close()
        a.t.send(hb(1, 5))  # after close: dropped, never raises
        assert a.t.stats()["dropped"] == 3

    run(body)


def test_close_cancels_everything_even_with_connections_in_flight() -> None:
    async def body() -> None:
        a, b = await pair()
        for i in range(1000):
            a.t.send(hb(1, 2, i))
            b.t.send(hb(2, 1, i))
        r, w = await asyncio.open_connection(*b.addr)  # a connection still in its handshake
        await a.t.close()
        await b.t.close()
        assert await closed_by_peer(r)
        w.close()
        # run() asserts that no task is left behind

    run(body)


def test_listen_address_before_start_is_an_error() -> None:
    t = TcpTransport(1, LOCAL, {}, cluster_id=CLUSTER)
    with pytest.raises(RuntimeError):
        _ = t.listen_address


def test_invalid_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        TcpTransport(1, LOCAL, {}, cluster_id="")
    with pytest.raises(ValueError):
        TcpTransport(-1, LOCAL, {}, cluster_id=CLUSTER)
    with pytest.raises(ValueError):
        TcpTransport(1, LOCAL, {}, cluster_id=CLUSTER, max_frame_size=0)


def test_connections_beyond_max_pending_unfinished_handshakes_are_closed_at_accept() -> None:
    async def body() -> None:
        b = await Node(2, handshake_timeout=30.0, max_pending=3).start()
        silent = [await asyncio.open_connection(*b.addr) for _ in range(3)]
        await eventually(lambda: b.t.stats()["pending_connections"] == 3, what="3 pending")
        r, w = await asyncio.open_connection(*b.addr)
        assert await closed_by_peer(r)  # long before the 30 s handshake timeout
        assert b.t.stats()["refused"] == 1
        assert b.t.stats()["pending_connections"] == 3  # the others still wait
        w.close()
        for _, writer in silent:
            writer.close()
        await eventually(lambda: b.t.stats()["pending_connections"] == 0, what="released")
        # Slots are free again: a real peer shakes hands.
        r, w = await raw_client(b.addr)
        w.close()
        await b.t.close()

    run(body)


def test_a_stranger_holding_unfinished_handshakes_takes_only_its_own_share_of_max_pending(
) -> None:
    import raftly.transport.tcp as tcp

    async def body() -> None:
        b = await Node(2, handshake_timeout=30.0, max_pending=64).start()
        # From 127.0.0.2 (loopback too): more idle sockets than one source's share.
        silent = [await asyncio.open_connection(*b.addr, local_addr=("127.0.0.2", 0))
                  for _ in range(tcp._PENDING_PER_SOURCE + 8)]
        await eventually(lambda: b.t.stats()["refused"] == 8, what="the extra ones refused")
        assert b.t.stats()["pending_connections"] == tcp._PENDING_PER_SOURCE
        _, w = await raw_client(b.addr)  # a peer from 127.0.0.1 still shakes hands
        w.close()
        for _, writer in silent:
            writer.close()
        await b.t.close()

    run(body)


def test_refusals_are_logged_once_per_source_then_with_the_count_not_logged(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import raftly.transport.tcp as tcp

    monkeypatch.setattr(tcp, "_REFUSAL_LOG_INTERVAL", 3600.0)
    caplog.set_level(logging.DEBUG, "raftly.transport.tcp")

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and "node 2: refused" in r.getMessage()]

    async def refused_once(b: Node, refused: int) -> None:
        _, w = await raw_client_refused(b.addr)
        w.close()
        await eventually(lambda: b.t.stats()["refused"] == refused, what=f"{refused} refused")

    async def body() -> None:
        b = await Node(2).start()
        for n in range(1, 21):  # a scanner speaking the protocol with a foreign cluster id
            await refused_once(b, n)
        assert len(warnings()) == 1
        sources = b.t._refusal_log._sources
        sources["127.0.0.1"] = (0.0, sources["127.0.0.1"][1])  # as if the interval had passed
        await refused_once(b, 21)
        assert len(warnings()) == 2
        assert "19 more refusals of 127.0.0.1 not logged" in warnings()[-1]
        await b.t.close()

    run(body)


async def raw_client_refused(
    addr: tuple[str, int]
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection whose handshake names another cluster: refused."""
    reader, writer = await asyncio.open_connection(*addr)
    writer.write(encode_frame(encode_handshake("another-cluster", 7)))
    reply = await read_frame(reader)
    assert reply is not None and not decode_handshake_reply(reply).accepted
    return reader, writer


def test_the_default_idle_timeout_of_authenticated_peers_outlasts_long_quiet_terms() -> None:
    """A follower's connection to another follower is silent for a whole term: closing it
    after a minute would make the next election pay a TLS dial."""
    import inspect

    default = inspect.signature(TcpTransport).parameters["idle_timeout"].default
    assert default >= 600.0


def test_a_connected_idle_peer_gets_a_message_written_at_once_without_the_writer_task() -> None:
    async def body() -> None:
        a, b = await pair()
        a.t.send(hb(1, 2, 0))  # the first one dials, through the queue and the writer task
        await eventually(lambda: len(b.inbox) == 1)
        await eventually(lambda: a.t._peers[2].writable())  # the socket took all written
        sent = a.t.stats()["sent"]
        a.t.send(hb(1, 2, 1))
        # Counted within send itself: written to the socket, not left for the writer task.
        assert a.t.stats()["sent"] == sent + 1
        assert a.t.stats()["queued"] == 0
        await eventually(lambda: len(b.inbox) == 2)
        assert b.inbox == [hb(1, 2, 0), hb(1, 2, 1)]
        await a.t.close()
        await b.t.close()

    run(body)


def test_messages_keep_their_order_when_writes_move_between_the_socket_and_the_queue() -> None:
    async def body() -> None:
        a, b = await pair()
        a.t.send(hb(1, 2, 0))
        await eventually(lambda: len(b.inbox) == 1)
        # Large appends fill the socket buffer, so later sends take the queue until the writer
        # task has drained it, then go straight to the socket again.
        sent: list[Message] = [hb(1, 2, 0)]
        big = [Entry(1, 1, b"y" * 250_000)]
        queued = 0
        for i in range(300):
            msg: Message = (AppendEntries(term=1, src=1, dst=2, prev_index=0, prev_term=0,
                                          entries=big, commit=i) if i % 3 else hb(1, 2, i))
            a.t.send(msg)
            sent.append(msg)
            queued = max(queued, a.t.stats()["queued"])
            if i % 100 == 0:
                await asyncio.sleep(0.01)  # let the socket drain between bursts
        await eventually(lambda: len(b.inbox) == len(sent))
        assert queued > 0  # the queue was really used between direct writes
        assert b.inbox == sent
        assert a.t.stats()["dropped"] == 0
        await a.t.close()
        await b.t.close()

    run(body)

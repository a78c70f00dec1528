"""The wire codec: every message round-trips; anything malformed gives CodecError, nothing else."""

from __future__ import annotations

import struct

import msgpack
import pytest
from conf_strategies import addressed, conf_states
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transport_helpers import MESSAGE_STRATEGIES, install_snapshot, messages

from raftly.core.messages import (
    ALL_MESSAGE_TYPES,
    AppendEntries,
    Heartbeat,
    InstallSnapshot,
    Message,
    RequestVote,
)
from raftly.core.types import ConfState, Entry, EntryType, Snapshot, SnapshotMeta
from raftly.testing import SimCluster
from raftly.transport.codec import (
    CHANNEL_MESSAGES,
    CHANNEL_SNAPSHOT,
    DEFAULT_MAX_CONF_SIZE,
    MAX_INT,
    PROTOCOL_VERSION,
    CodecError,
    FrameDecoder,
    FrameTooLarge,
    Handshake,
    HandshakeReply,
    SnapshotReply,
    decode_handshake,
    decode_handshake_reply,
    decode_message,
    decode_snapshot_chunk,
    decode_snapshot_header,
    decode_snapshot_reply,
    encode_frame,
    encode_handshake,
    encode_handshake_reply,
    encode_message,
    encode_snapshot_ack,
    encode_snapshot_done,
    encode_snapshot_header,
    encode_snapshot_refusal,
    frame_message,
    snapshot_chunk_prefix,
)


def pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def valid_or_codec_error(data: bytes) -> Message | None:
    """Decode ``data``: it must either be a valid message (that round-trips) or a CodecError."""
    try:
        msg = decode_message(data)
    except CodecError:
        return None
    assert decode_message(encode_message(msg)) == msg
    return msg


# -- round trips ------------------------------------------------------------------------------


def test_strategies_cover_every_message_type() -> None:
    assert set(MESSAGE_STRATEGIES) == set(ALL_MESSAGE_TYPES)


@given(messages)
@settings(max_examples=500)
def test_every_message_round_trips(msg: Message) -> None:
    data = encode_message(msg)
    assert decode_message(data) == msg
    assert type(decode_message(data)) is type(msg)


@given(st.lists(messages, max_size=10), st.data())
def test_frames_split_anywhere_reassemble(msgs: list[Message], data: st.DataObject) -> None:
    stream = b"".join(frame_message(m) for m in msgs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    decoder = FrameDecoder()
    out: list[Message] = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        out += [decode_message(p) for p in decoder.feed(stream[prev:cut])]
        prev = cut
    assert out == msgs
    assert decoder.buffered == 0


def test_compact_layout_is_a_positional_array() -> None:
    msg = AppendEntries(
        term=3, src=1, dst=2, prev_index=4, prev_term=2, commit=4,
        entries=[Entry(5, 3, b"ab", EntryType.NOOP)],
    )
    assert msgpack.unpackb(encode_message(msg)) == [3, 3, 1, 2, 4, 2, 4, [[5, 3, 1, b"ab"]]]


def test_messages_of_a_real_simulated_cluster_round_trip() -> None:
    """Whatever the core actually sends (elections, replication, faults) passes the codec."""
    seen: set[type[Message]] = set()
    for seed in range(3):
        c = SimCluster(n=3, seed=seed)
        original = c._send

        def checked(msg: Message, original=original) -> None:  # type: ignore[no-untyped-def]
            assert decode_message(encode_message(msg)) == msg
            seen.add(type(msg))
            original(msg)

        c._send = checked  # type: ignore[method-assign]
        leader = c.check_one_leader()
        c.one(b"a" * 16, 3)
        c.disconnect(leader)
        c.one(b"b", 2, retry=True)
        c.connect(leader)
        c.set_unreliable(True)
        for k in range(5):
            c.start(c.check_one_leader(), b"c%d" % k)
        c.run(2.0)
    assert {RequestVote, AppendEntries, Heartbeat} <= seen


# -- malformed input -------------------------------------------------------------------------


@given(st.binary(max_size=200))
@settings(max_examples=1000)
def test_random_bytes_give_codec_error_or_a_valid_message(data: bytes) -> None:
    valid_or_codec_error(data)


@given(messages, st.data())
def test_every_truncation_is_a_codec_error(msg: Message, data: st.DataObject) -> None:
    encoded = encode_message(msg)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(CodecError):
        decode_message(encoded[:cut])


@given(messages, st.binary(min_size=1, max_size=8))
def test_trailing_bytes_are_a_codec_error(msg: Message, extra: bytes) -> None:
    with pytest.raises(CodecError):
        decode_message(encode_message(msg) + extra)


@given(messages, st.data())
@settings(max_examples=500)
def test_flipped_bytes_give_codec_error_or_a_valid_message(
    msg: Message, data: st.DataObject
) -> None:
    encoded = bytearray(encode_message(msg))
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(encoded) - 1))
        encoded[i] = data.draw(st.integers(0, 255))
    valid_or_codec_error(bytes(encoded))


any_value = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)  # what msgpack can carry
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=10,
)


def _paths(obj: object, prefix: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    out = [prefix] if prefix else []
    if isinstance(obj, list):
        for i, item in enumerate(obj):
            out += _paths(item, (*prefix, i))
    return out


@given(messages, st.data())
@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
def test_any_field_replaced_by_any_value_gives_codec_error_or_a_valid_message(
    msg: Message, data: st.DataObject
) -> None:
    tree = msgpack.unpackb(encode_message(msg))
    path = data.draw(st.sampled_from(_paths(tree)))
    node = tree
    for i in path[:-1]:
        node = node[i]
    node[path[-1]] = data.draw(any_value)
    valid_or_codec_error(pack(tree))


@given(st.lists(any_value, max_size=9))
def test_random_arrays_give_codec_error_or_a_valid_message(items: list[object]) -> None:
    valid_or_codec_error(pack(items))


def hb(**over: object) -> list[object]:
    """A Heartbeat as a wire array, with fields overridden by name."""
    fields = {"code": 5, "term": 1, "src": 0, "dst": 1, "commit": 0, "seq": 0}
    fields.update(over)
    return list(fields.values())


def ae(entries: list[object], term: int = 5, prev_index: int = 10, prev_term: int = 3) -> bytes:
    return pack([3, term, 0, 1, prev_index, prev_term, 0, entries])


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(pack(hb(term=True)), id="bool-for-int"),
        pytest.param(pack(hb(term=-1)), id="negative"),
        pytest.param(pack(hb(term=MAX_INT)), id="2**63"),
        pytest.param(pack(hb(commit=2**64 - 1)), id="2**64-1"),
        pytest.param(pack(hb(term=1.0)), id="float"),
        pytest.param(pack(hb(src=None)), id="nil-src"),
        pytest.param(pack(hb(dst=-5)), id="negative-node-id"),
        pytest.param(pack(hb(code=99)), id="unknown-type"),
        pytest.param(pack(hb(code=True)), id="bool-type-code"),
        pytest.param(pack(hb()[:-1]), id="too-few-fields"),
        pytest.param(pack([*hb(), 0]), id="too-many-fields"),
        pytest.param(pack({"term": 1}), id="map"),
        pytest.param(pack(5), id="not-an-array"),
        pytest.param(pack([1, 1, 0, 1, 0, 0, 1, 0]), id="int-for-bool"),
        pytest.param(pack([9, 1, 0, 1, "ctx"]), id="str-for-bytes"),
        pytest.param(pack([9, 1, 0, 1, [1, 2]]), id="list-for-bytes"),
        pytest.param(msgpack.packb(msgpack.ExtType(1, b"x")), id="ext"),
        pytest.param(b"\xdd\xff\xff\xff\xff", id="array32-claiming-4G-items"),
        pytest.param(b"\xc6\xff\xff\xff\xff", id="bin32-claiming-4GiB"),
        pytest.param(b"\x91" * 100_000, id="deeply-nested"),
        pytest.param(b"\xc1", id="reserved-byte"),
        pytest.param(ae([[12, 3, 0, b""]]), id="entry-index-gap"),
        pytest.param(ae([[11, 3, 0, b""], [11, 3, 0, b""]]), id="entry-index-repeat"),
        pytest.param(ae([[11, 6, 0, b""]]), id="entry-term-above-message-term"),
        pytest.param(ae([[11, 2, 0, b""]]), id="entry-term-below-prev-term"),
        pytest.param(ae([[11, 4, 0, b""], [12, 3, 0, b""]]), id="entry-terms-decrease"),
        pytest.param(ae([[11, 3, 3, b""]]), id="unknown-entry-type"),
        pytest.param(ae([[11, 3, False, b""]]), id="bool-entry-type"),
        pytest.param(ae([[11, 3, 0, "x"]]), id="str-entry-data"),
        pytest.param(ae([[11, 3, 0]]), id="short-entry"),
        pytest.param(ae([[True, 3, 0, b""]], prev_index=0), id="bool-entry-index"),
        pytest.param(ae([[MAX_INT, 3, 0, b""]], prev_index=MAX_INT - 1), id="entry-index-2**63"),
        pytest.param(ae("notalist"), id="entries-not-a-list"),  # type: ignore[arg-type]
        pytest.param(pack([7, 5, 0, 1, 1, 1, [2, 1], b""]), id="voters-unsorted"),
        pytest.param(pack([7, 5, 0, 1, 1, 1, [1, 1], b""]), id="voters-duplicate"),
        pytest.param(pack([7, 5, 0, 1, 1, 6, [1], b""]), id="snapshot-term-above-term"),
        pytest.param(pack([7, 5, 0, 1, 1, 1, [-1], b""]), id="negative-voter"),
    ],
)
def test_malformed_messages_are_codec_errors(data: bytes) -> None:
    with pytest.raises(CodecError):
        decode_message(data)


def test_limits_on_entries_and_voters() -> None:
    entries = [Entry(11 + i, 3) for i in range(10)]
    data = encode_message(
        AppendEntries(term=3, src=0, dst=1, prev_index=10, prev_term=3, entries=entries)
    )
    assert len(decode_message(data, max_entries=10).entries) == 10  # type: ignore[attr-defined]
    with pytest.raises(CodecError):
        decode_message(data, max_entries=9)
    snap = InstallSnapshot(
        term=1, src=0, dst=1, snapshot=Snapshot(SnapshotMeta(1, 1, ConfState(frozenset(range(5)))))
    )
    data = encode_message(snap)
    assert decode_message(data, max_voters=5) == snap
    with pytest.raises(CodecError):
        decode_message(data, max_voters=4)


# -- a snapshot's configuration -----------------------------------------------------------------


def _snap(conf: bytes | object, term: int = 5) -> bytes:
    """An InstallSnapshot as wire bytes, its configuration field as given."""
    return pack([7, term, 0, 1, 9, 2, conf, b""])


def _install(conf: ConfState) -> InstallSnapshot:
    return InstallSnapshot(term=5, src=0, dst=1, snapshot=Snapshot(SnapshotMeta(9, 2, conf)))


@given(conf_states())
def test_a_snapshot_configuration_travels_as_its_encoded_bytes(conf: ConfState) -> None:
    wire = msgpack.unpackb(encode_message(_install(conf)))
    assert wire == [7, 5, 0, 1, 9, 2, conf.encode(), b""]
    assert decode_message(_snap(conf.encode())) == _install(ConfState.decode(conf.encode()))


def test_learners_and_member_addresses_survive_the_wire() -> None:
    conf = addressed({1}, {4})
    meta = decode_message(encode_message(_install(conf))).snapshot.meta  # type: ignore[attr-defined]
    assert meta.conf == conf and meta.conf.member(4).promote is False


def test_a_version_1_snapshot_with_a_voter_array_is_refused() -> None:
    # Peers of protocol version 1 are refused at the handshake, so this layout never arrives
    # from a correct peer; it must not decode to some configuration either.
    with pytest.raises(CodecError, match="snapshot configuration: expected bytes"):
        decode_message(_snap([1, 2, 3]))
    assert PROTOCOL_VERSION == 3


@pytest.mark.parametrize(
    "conf",
    [
        pytest.param(b"2,1", id="unsorted"),
        pytest.param(b"1,1", id="duplicate"),
        pytest.param(b"-1", id="negative"),
        pytest.param(b"01", id="not-canonical"),
        pytest.param(b"\xff", id="not-ascii"),
        pytest.param(b"{", id="truncated-json"),
        pytest.param(b'{"v":' + b"[" * 100_000, id="deeply-nested-json"),
        pytest.param(b'{"learners":[1],"members":[],"v":1,"voters":[1]}', id="voter-and-learner"),
        pytest.param(b'{"learners":[],"members":[],"v":1,"voters":[]}', id="no-voter"),
        pytest.param(b'{"learners":[],"members":[],"v":9,"voters":[1]}', id="unknown-version"),
        pytest.param(b'{"learners":[],"members":[],"v":1,"voters":[%d]}' % MAX_INT,
                     id="node-id-2**63"),
        pytest.param(b"9" * 5000, id="huge-node-id"),
        pytest.param(5, id="int-for-bytes"),
        pytest.param(None, id="nil"),
    ],
)
def test_a_malformed_snapshot_configuration_is_a_codec_error(conf: object) -> None:
    with pytest.raises(CodecError, match="snapshot configuration"):
        decode_message(_snap(conf))


def test_a_snapshot_configuration_is_bounded_in_bytes_and_nodes() -> None:
    conf = ConfState(frozenset(range(3)), frozenset(range(3, 5)))
    data = encode_message(_install(conf))
    size = len(conf.encode())
    assert decode_message(data, max_conf_size=size, max_voters=5) == _install(conf)
    with pytest.raises(CodecError, match=f"{size} bytes exceeds the limit of {size - 1}"):
        decode_message(data, max_conf_size=size - 1)
    with pytest.raises(CodecError, match="5 nodes, at most 4"):  # learners count too
        decode_message(data, max_voters=4)
    with pytest.raises(CodecError, match="exceeds the limit"):
        decode_snapshot_header(b"H" + struct.pack(">Q", 1) + data, max_conf_size=size - 1)


def test_a_configuration_over_the_default_limit_is_refused_both_ways() -> None:
    blob = ",".join(str(i) for i in range(200_000)).encode()
    assert len(blob) > DEFAULT_MAX_CONF_SIZE
    with pytest.raises(CodecError, match="exceeds the limit"):
        encode_message(_install(ConfState.decode(blob)))
    with pytest.raises(CodecError, match="exceeds the limit"):
        decode_message(_snap(blob), max_voters=MAX_INT)


def test_decoding_non_bytes_is_a_codec_error() -> None:
    with pytest.raises(CodecError):
        decode_message("text")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "msg",
    [
        Heartbeat(term=-1, src=0, dst=1, commit=0),
        Heartbeat(term=1, src=0, dst=1, commit=2**64),
        Heartbeat(term=1, src=0, dst=1, commit=0, seq=MAX_INT),
        RequestVote(term=1, src=0, dst=1, last_log_index=0, last_log_term=0, pre_vote=None),  # type: ignore[arg-type]
    ],
)
def test_encoding_what_the_peer_would_refuse_is_a_codec_error(msg: Message) -> None:
    try:
        data = encode_message(msg)
    except CodecError:
        return
    pytest.fail(f"encoded an invalid message: {data!r}")


def test_encoding_a_non_message_is_a_codec_error() -> None:
    with pytest.raises(CodecError):
        encode_message(object())  # type: ignore[arg-type]


# -- handshake -------------------------------------------------------------------------------


@given(st.text(min_size=1, max_size=256), st.integers(0, MAX_INT - 1))
def test_handshake_round_trips(cluster_id: str, node_id: int) -> None:
    assert decode_handshake(encode_handshake(cluster_id, node_id)) == Handshake(
        PROTOCOL_VERSION, cluster_id, node_id
    )


def test_handshake_reply_round_trips() -> None:
    assert decode_handshake_reply(encode_handshake_reply(True)) == HandshakeReply(True, "")
    refused = decode_handshake_reply(encode_handshake_reply(False, "wrong cluster"))
    assert refused == HandshakeReply(False, "wrong cluster")


@pytest.mark.parametrize(
    "obj",
    [
        [b"raftlx", 1, "c", 1],
        ["raftly", 1, "c", 1],
        [b"raftly", 1, "c"],
        [b"raftly", 1, "", 1],
        [b"raftly", 1, "x" * 257, 1],
        [b"raftly", 1, b"c", 1],
        [b"raftly", True, "c", 1],
        [b"raftly", 1, "c", -1],
        [b"raftly", 1, "c", False],
        {"magic": b"raftly"},
    ],
)
def test_malformed_handshakes_are_codec_errors(obj: object) -> None:
    with pytest.raises(CodecError):
        decode_handshake(pack(obj))


@given(st.binary(max_size=64) | st.lists(any_value, max_size=5).map(pack))
def test_garbage_handshakes_and_replies_are_codec_errors(data: bytes) -> None:
    with pytest.raises(CodecError):
        decode_handshake(data)
    with pytest.raises(CodecError):
        decode_handshake_reply(data)


def test_bad_cluster_id_is_refused_when_encoding() -> None:
    with pytest.raises(CodecError):
        encode_handshake("", 1)


def test_a_handshake_names_its_channel_and_a_message_connection_keeps_four_items() -> None:
    assert msgpack.unpackb(encode_handshake("c", 1)) == [b"raftly", PROTOCOL_VERSION, "c", 1]
    snapshot = decode_handshake(encode_handshake("c", 1, channel=CHANNEL_SNAPSHOT))
    assert snapshot == Handshake(PROTOCOL_VERSION, "c", 1, CHANNEL_SNAPSHOT)
    assert decode_handshake(encode_handshake("c", 1)).channel == CHANNEL_MESSAGES
    for bad in ("files", b"snapshot", 1, None):
        with pytest.raises(CodecError, match="channel"):
            decode_handshake(pack([b"raftly", 1, "c", 1, bad]))
    with pytest.raises(CodecError, match="channel"):
        encode_handshake("c", 1, channel="files")


# -- snapshot streams ------------------------------------------------------------------------


def _meta_only(msg: InstallSnapshot) -> InstallSnapshot:
    return InstallSnapshot(term=msg.term, src=msg.src, dst=msg.dst,
                           snapshot=Snapshot(msg.snapshot.meta))


@given(install_snapshot(), st.integers(0, MAX_INT - 1))
def test_a_snapshot_header_round_trips(msg: InstallSnapshot, size: int) -> None:
    msg = _meta_only(msg)
    assert decode_snapshot_header(encode_snapshot_header(msg, size)) == (msg, size)


def test_a_snapshot_header_with_data_is_refused_both_ways() -> None:
    msg = InstallSnapshot(term=2, src=1, dst=2, snapshot=Snapshot(SnapshotMeta(5, 1), b"x"))
    with pytest.raises(CodecError, match="data"):
        encode_snapshot_header(msg, 1)
    with pytest.raises(CodecError, match="data"):
        decode_snapshot_header(b"H" + struct.pack(">Q", 1) + encode_message(msg))


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"H",
        b"H" + struct.pack(">Q", 1),
        b"H" + struct.pack(">Q", MAX_INT) + encode_message(
            InstallSnapshot(term=2, src=1, dst=2, snapshot=Snapshot(SnapshotMeta(5, 1)))),
        b"H" + struct.pack(">Q", 1) + encode_message(Heartbeat(term=1, src=1, dst=2, commit=0)),
        b"H" + struct.pack(">Q", 1) + b"\xc1",
        b"C" + struct.pack(">Q", 1) + encode_message(
            InstallSnapshot(term=2, src=1, dst=2, snapshot=Snapshot(SnapshotMeta(5, 1)))),
    ],
)
def test_malformed_snapshot_headers_are_codec_errors(payload: bytes) -> None:
    with pytest.raises(CodecError):
        decode_snapshot_header(payload)


def test_a_snapshot_chunk_carries_at_least_one_raw_byte() -> None:
    frame = snapshot_chunk_prefix(3) + b"abc"
    assert FrameDecoder().feed(frame) == [b"Cabc"]
    assert decode_snapshot_chunk(b"Cabc") == b"abc"
    for bad in (b"", b"C", b"Habc", b"Aabc"):
        with pytest.raises(CodecError):
            decode_snapshot_chunk(bad)


def test_snapshot_replies_round_trip() -> None:
    assert decode_snapshot_reply(encode_snapshot_ack(12345)) == SnapshotReply("ack", 12345)
    assert decode_snapshot_reply(encode_snapshot_done()) == SnapshotReply("done")
    refusal = decode_snapshot_reply(encode_snapshot_refusal("disk full"))
    assert refusal == SnapshotReply("refused", reason="disk full")
    assert len(encode_snapshot_refusal("\u00e9" * 5000)) <= 1 + 2 * 1024  # bounded


@pytest.mark.parametrize(
    "payload",
    [b"", b"X", b"A", b"A" + bytes(7), b"A" + bytes(9), b"A" + struct.pack(">Q", MAX_INT),
     b"D\x00", b"F" + bytes(5000)],
)
def test_malformed_snapshot_replies_are_codec_errors(payload: bytes) -> None:
    with pytest.raises(CodecError):
        decode_snapshot_reply(payload)


# -- framing ---------------------------------------------------------------------------------


def test_frame_decoder_refuses_an_oversized_header_before_the_body() -> None:
    decoder = FrameDecoder(max_frame_size=100)
    assert decoder.feed(encode_frame(b"x" * 100)) == [b"x" * 100]
    with pytest.raises(FrameTooLarge):
        decoder.feed(struct.pack(">I", 101))  # header only: no body has been sent


def test_max_frame_size_must_be_sane() -> None:
    for bad in (0, -1, 2**32):
        with pytest.raises(ValueError):
            FrameDecoder(bad)


# -- findings of the wire fuzzer (raftly.testing.wirefuzz), kept as regressions ----------------


@pytest.mark.parametrize("depth", [100, 1000, 5000])
def test_a_deeply_nested_field_is_a_codec_error_not_a_recursion_error(depth: int) -> None:
    # The error message's repr of the bad field used to recurse through every level.
    nested = b"\x91" * depth + b"\xc0"
    data = b"\x98\x01\x07" + nested + b"\x00\x00\x00\xc2\xc2"  # RequestVote, src nested
    with pytest.raises(CodecError):
        decode_message(data)


@pytest.mark.parametrize("header", [b"\xdd\x00\x01\x00\x00", b"\xdc\xff\xff",
                                    b"\xdb\x00\x00\x10\x00"])
def test_a_container_header_claiming_more_than_the_input_holds_allocates_nothing_for_it(
    header: bytes,
) -> None:
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(CodecError):
            decode_message(header)
        with pytest.raises(CodecError):
            decode_handshake(header)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 10  # msgpack used to allocate the claimed slots: 80 KB for 5 bytes


def test_append_entries_with_prev_term_above_its_term_is_refused() -> None:
    # [type, term, src, dst, prev_index, prev_term, commit, entries]: no entries to catch it.
    with pytest.raises(CodecError, match="prev_term 4 exceeds"):
        decode_message(msgpack.packb([3, 3, 1, 2, 5, 4, 0, []]))
    assert decode_message(msgpack.packb([3, 4, 1, 2, 5, 4, 0, []])) == AppendEntries(
        term=4, src=1, dst=2, prev_index=5, prev_term=4, entries=[], commit=0)

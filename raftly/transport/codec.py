"""The wire codec: Raft messages as msgpack, length-prefixed frames, and the connection handshake.

Everything that reaches ``decode_message`` or ``decode_handshake`` may come from anyone who can
open a TCP connection, so decoding trusts nothing: every field is type- and range-checked and any
malformed input raises ``CodecError`` (a ``ValueError``), never another exception. Nothing is ever
unpickled.

Layout (compact: positional msgpack arrays, no field names on the wire)::

    message   [type_code, term, src, dst, *fields]           (fields per type, see _LAYOUTS)
    entry     [index, term, type, data]
    InstallSnapshot fields  [index, term, conf, data]   conf: ``ConfState.encode()`` as bin
    frame     4-byte big-endian payload length, then the payload
    handshake [b"raftly", protocol_version, cluster_id, node_id]           (a message connection)
              [b"raftly", protocol_version, cluster_id, node_id, "snapshot"] (a snapshot stream)
    reply     [b"raftly", protocol_version, accepted, reason]

A snapshot stream (one connection per transfer, after its handshake) carries frames whose first
byte says what they are; the rest is raw, so a 1 MiB chunk is never re-encoded::

    sender    b"H" + size (8 bytes, big-endian) + an InstallSnapshot message with empty data
              b"C" + chunk bytes (at least one), ``size`` bytes over all chunks, in order
    receiver  b"A" + bytes received and written so far (8 bytes): one ack per chunk
              b"D": the whole file is verified and the message delivered
              b"F" + UTF-8 reason: refused; the transfer is over

Integers on the wire are non-negative and below 2**63 (so they fit a signed 64-bit integer in any
other implementation); booleans are msgpack booleans, never 0/1; byte strings are msgpack ``bin``.

The codec is pure bytes <-> values and does no I/O: reading frames off a socket is the
transport's job (``raftly.transport.tcp.read_frame``).
"""

from __future__ import annotations

import reprlib
import struct
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Final

import msgpack  # type: ignore[import-untyped]  # msgpack ships no type information

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

__all__ = [
    "CHANNEL_MESSAGES",
    "CHANNEL_SNAPSHOT",
    "DEFAULT_MAX_CONF_SIZE",
    "DEFAULT_MAX_ENTRIES",
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_MAX_VOTERS",
    "HANDSHAKE_MAGIC",
    "HANDSHAKE_MAX_FRAME_SIZE",
    "HEADER_SIZE",
    "MAX_CLUSTER_ID_LENGTH",
    "MAX_INT",
    "PROTOCOL_VERSION",
    "CodecError",
    "FrameDecoder",
    "FrameTooLarge",
    "Handshake",
    "HandshakeReply",
    "SnapshotReply",
    "decode_handshake",
    "decode_handshake_reply",
    "decode_message",
    "decode_snapshot_chunk",
    "decode_snapshot_header",
    "decode_snapshot_reply",
    "encode_frame",
    "encode_handshake",
    "encode_handshake_reply",
    "encode_message",
    "encode_snapshot_ack",
    "encode_snapshot_done",
    "encode_snapshot_header",
    "encode_snapshot_refusal",
    "frame_length",
    "frame_message",
    "snapshot_chunk_prefix",
]

PROTOCOL_VERSION: Final = 3
"""Bumped on any incompatible change of the layout; peers of another version are refused.

2: an InstallSnapshot carries its configuration as ``ConfState.encode()`` bytes (learners and
members' addresses travel with it), not as the array of voter ids of version 1. A version-1 node
could not decode that, and a CONFIG entry of the new configuration format would stop it, so the
two never talk: the handshake refuses, with a reason that names both versions.

3: the coordination commands (a lease expiry revoke names its grant, a grant takes the next free
id, a transaction's gets are capped) and snapshot format 3: a version-2 node would apply the same
log differently, so nodes of the two versions must not form one cluster."""

HANDSHAKE_MAGIC: Final = b"raftly"

MAX_INT: Final = 1 << 63
"""Every integer on the wire is in ``range(0, MAX_INT)``."""

DEFAULT_MAX_FRAME_SIZE: Final = 16 << 20
DEFAULT_MAX_ENTRIES: Final = 1 << 16
DEFAULT_MAX_VOTERS: Final = 1 << 10
DEFAULT_MAX_CONF_SIZE: Final = 1 << 20
"""Bytes of a snapshot's encoded configuration (as the snapshot files bound it)."""
MAX_CLUSTER_ID_LENGTH: Final = 256
"""Characters; a cluster id is a short name from a config file."""

CHANNEL_MESSAGES: Final = "messages"
CHANNEL_SNAPSHOT: Final = "snapshot"
_CHANNELS: Final = (CHANNEL_MESSAGES, CHANNEL_SNAPSHOT)

HANDSHAKE_MAX_FRAME_SIZE: Final = 4096
"""A handshake is tiny: reading one never buffers more than this from an unknown client."""

_MAX_REASON_LENGTH: Final = 1024

_HEADER: Final = struct.Struct(">I")
HEADER_SIZE: Final = _HEADER.size
_MAX_FRAME_LIMIT: Final = (1 << 32) - 1  # what a 4-byte length prefix can express


class CodecError(ValueError):
    """Malformed input: bad msgpack, a field of the wrong type or out of range, a bad frame."""


class FrameTooLarge(CodecError):
    """A frame's declared length exceeds the limit; raised before its body is read."""


# -- field checks ---------------------------------------------------------------------------------
# ``type(v) is int`` rather than isinstance: bool is a subclass of int and must not pass as one.


def _uint(value: object, name: str) -> int:
    if type(value) is not int or value < 0 or value >= MAX_INT:
        raise CodecError(f"{name}: expected an integer in [0, 2**63), got {_show(value)}")
    return value


def _bool(value: object, name: str) -> bool:
    if type(value) is not bool:
        raise CodecError(f"{name}: expected a boolean, got {_show(value)}")
    return value


def _bytes(value: object, name: str) -> bytes:
    if type(value) is not bytes:
        raise CodecError(f"{name}: expected bytes, got {_show(value)}")
    return value


def _list(value: object, name: str, max_len: int) -> list[Any]:
    if type(value) is not list:
        raise CodecError(f"{name}: expected an array, got {_show(value)}")
    if len(value) > max_len:
        raise CodecError(f"{name}: {len(value)} items, at most {max_len} allowed")
    return value


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 3, 4, 30, 30, 30
"""Bounded in depth as well as length: ``repr`` of a value nested a thousand levels deep (which
msgpack decodes) would raise RecursionError, and of a long one would cost its whole size."""


def _show(value: object) -> str:
    """A short description of a bad value for error messages (never the whole payload)."""
    text = _REPR.repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"


_ENTRY_TYPES: Final = tuple(EntryType)  # indexed by value: EntryType(v) is slower in a hot loop
assert all(t.value == i for i, t in enumerate(_ENTRY_TYPES))

# Building a frozen dataclass through __init__ costs twice as much as setting its slots directly,
# and AppendEntries decoding builds thousands of entries a second. The fields are checked here
# so that a change to Entry breaks loudly at import rather than decoding wrong values.
assert tuple(f.name for f in fields(Entry)) == ("index", "term", "data", "type")
_SET_INDEX = Entry.__dict__["index"].__set__
_SET_TERM = Entry.__dict__["term"].__set__
_SET_DATA = Entry.__dict__["data"].__set__
_SET_TYPE = Entry.__dict__["type"].__set__


def _make_entry(index: int, term: int, data: bytes, etype: EntryType) -> Entry:
    entry: Entry = object.__new__(Entry)
    _SET_INDEX(entry, index)
    _SET_TERM(entry, term)
    _SET_DATA(entry, data)
    _SET_TYPE(entry, etype)
    return entry


# -- messages -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Limits:
    max_entries: int
    max_voters: int
    max_conf_size: int


def _enc_request_vote(m: RequestVote) -> list[Any]:
    return [m.last_log_index, m.last_log_term, m.pre_vote, m.transfer]


def _dec_request_vote(f: list[Any], term: int, src: int, dst: int, _: _Limits) -> Message:
    return RequestVote(
        term=term,
        src=src,
        dst=dst,
        last_log_index=_uint(f[4], "last_log_index"),
        last_log_term=_uint(f[5], "last_log_term"),
        pre_vote=_bool(f[6], "pre_vote"),
        transfer=_bool(f[7], "transfer"),
    )


def _enc_request_vote_response(m: RequestVoteResponse) -> list[Any]:
    return [m.granted, m.pre_vote]


def _dec_request_vote_response(
    f: list[Any], term: int, src: int, dst: int, _: _Limits
) -> Message:
    return RequestVoteResponse(
        term=term,
        src=src,
        dst=dst,
        granted=_bool(f[4], "granted"),
        pre_vote=_bool(f[5], "pre_vote"),
    )


def _entry_error(item: object, index: int, min_term: int, max_term: int) -> CodecError:
    if type(item) is not list or len(item) != 4:
        return CodecError(f"entry {index}: expected [index, term, type, data], got {_show(item)}")
    if item[0] != index or type(item[0]) is not int:
        return CodecError(f"entry index {_show(item[0])}, expected {index} (consecutive)")
    if type(item[1]) is not int or not min_term <= item[1] <= max_term:
        return CodecError(
            f"entry {index}: term {_show(item[1])} outside [{min_term}, {max_term}] "
            "(terms must not decrease nor exceed the message's term)"
        )
    if type(item[2]) is not int or not 0 <= item[2] < len(_ENTRY_TYPES):
        return CodecError(f"entry {index}: unknown entry type {_show(item[2])}")
    return CodecError(f"entry {index}: data must be bytes, got {_show(item[3])}")


def _enc_append_entries(m: AppendEntries) -> list[Any]:
    return [
        m.prev_index,
        m.prev_term,
        m.commit,
        [[e.index, e.term, e.type, e.data] for e in m.entries]  # IntEnum packs as int,
    ]


def _dec_append_entries(f: list[Any], term: int, src: int, dst: int, lim: _Limits) -> Message:
    prev_index = _uint(f[4], "prev_index")
    prev_term = _uint(f[5], "prev_term")
    if prev_term > term:  # the leader's log holds no term above its own (checked for entries too)
        raise CodecError(f"prev_term {prev_term} exceeds the message's term {term}")
    commit = _uint(f[6], "commit")
    raw = _list(f[7], "entries", lim.max_entries)
    entries: list[Entry] = []
    # A leader only ever sends a consecutive run of its log right after (prev_index, prev_term),
    # with terms that never decrease and never exceed its own. Anything else is not a message a
    # correct peer sends, and rejecting it here keeps the core from having to defend against it.
    expected_index = prev_index + 1
    last_term = prev_term
    append = entries.append
    n_types = len(_ENTRY_TYPES)
    for item in raw:
        # One combined test on the hot path (100 entries per message is common); the detailed
        # error message is worked out only when it fails.
        if (
            type(item) is not list
            or len(item) != 4
            or item[0] != expected_index
            or type(item[0]) is not int
            or type(item[1]) is not int
            or not last_term <= item[1] <= term
            or type(item[2]) is not int
            or not 0 <= item[2] < n_types
            or type(item[3]) is not bytes
        ):
            raise _entry_error(item, expected_index, last_term, term)
        index, last_term, etype, data = item
        append(_make_entry(index, last_term, data, _ENTRY_TYPES[etype]))
        expected_index += 1
    if expected_index > MAX_INT:
        raise CodecError("entry index out of range")
    return AppendEntries(
        term=term,
        src=src,
        dst=dst,
        prev_index=prev_index,
        prev_term=prev_term,
        entries=entries,
        commit=commit,
    )


def _enc_append_entries_response(m: AppendEntriesResponse) -> list[Any]:
    return [m.success, m.index, m.conflict_term, m.conflict_index]


def _dec_append_entries_response(
    f: list[Any], term: int, src: int, dst: int, _: _Limits
) -> Message:
    return AppendEntriesResponse(
        term=term,
        src=src,
        dst=dst,
        success=_bool(f[4], "success"),
        index=_uint(f[5], "index"),
        conflict_term=_uint(f[6], "conflict_term"),
        conflict_index=_uint(f[7], "conflict_index"),
    )


def _enc_heartbeat(m: Heartbeat) -> list[Any]:
    return [m.commit, m.seq]


def _dec_heartbeat(f: list[Any], term: int, src: int, dst: int, _: _Limits) -> Message:
    return Heartbeat(
        term=term, src=src, dst=dst, commit=_uint(f[4], "commit"), seq=_uint(f[5], "seq")
    )


def _enc_heartbeat_response(m: HeartbeatResponse) -> list[Any]:
    return [m.seq, m.accepted]


def _dec_heartbeat_response(f: list[Any], term: int, src: int, dst: int, _: _Limits) -> Message:
    return HeartbeatResponse(term=term, src=src, dst=dst, seq=_uint(f[4], "seq"),
                             accepted=_uint(f[5], "accepted"))


def _enc_install_snapshot(m: InstallSnapshot) -> list[Any]:
    meta = m.snapshot.meta
    conf = meta.conf.encode()
    # Refused here rather than by every peer, over and over (as _check_message does).
    if len(conf) > DEFAULT_MAX_CONF_SIZE:
        raise CodecError(f"snapshot configuration of {len(conf)} bytes exceeds the limit of "
                         f"{DEFAULT_MAX_CONF_SIZE}")
    return [meta.index, meta.term, conf, m.snapshot.data]


def _dec_install_snapshot(f: list[Any], term: int, src: int, dst: int, lim: _Limits) -> Message:
    index = _uint(f[4], "snapshot index")
    sterm = _uint(f[5], "snapshot term")
    if sterm > term:
        raise CodecError(f"snapshot term {sterm} exceeds the message's term {term}")
    raw = _bytes(f[6], "snapshot configuration")
    if len(raw) > lim.max_conf_size:
        raise CodecError(f"snapshot configuration of {len(raw)} bytes exceeds the limit of "
                         f"{lim.max_conf_size}")
    try:
        conf = ConfState.decode(raw)
    except ValueError as exc:
        raise CodecError(f"snapshot configuration: {exc}") from None
    ids = conf.ids
    if len(ids) > lim.max_voters:
        raise CodecError(f"snapshot configuration: {len(ids)} nodes, at most "
                         f"{lim.max_voters} allowed")
    if ids and max(ids) >= MAX_INT:  # as every other integer on the wire
        raise CodecError(f"snapshot configuration: node id {max(ids)} out of range")
    data = _bytes(f[7], "snapshot data")
    snapshot = Snapshot(SnapshotMeta(index, sterm, conf), data)
    return InstallSnapshot(term=term, src=src, dst=dst, snapshot=snapshot)


def _enc_timeout_now(m: TimeoutNow) -> list[Any]:
    return []


def _dec_timeout_now(f: list[Any], term: int, src: int, dst: int, _: _Limits) -> Message:
    return TimeoutNow(term=term, src=src, dst=dst)


def _enc_read_index_request(m: ReadIndexRequest) -> list[Any]:
    return [m.context]


def _dec_read_index_request(f: list[Any], term: int, src: int, dst: int, _: _Limits) -> Message:
    return ReadIndexRequest(term=term, src=src, dst=dst, context=_bytes(f[4], "context"))


def _enc_read_index_response(m: ReadIndexResponse) -> list[Any]:
    return [m.context, m.index]


def _dec_read_index_response(
    f: list[Any], term: int, src: int, dst: int, _: _Limits
) -> Message:
    return ReadIndexResponse(
        term=term, src=src, dst=dst, context=_bytes(f[4], "context"), index=_uint(f[5], "index")
    )


_Encoder = Callable[[Any], list[Any]]
_Decoder = Callable[[list[Any], int, int, int, _Limits], Message]

# type code -> (class, number of fields after [code, term, src, dst], encoder, decoder).
# Codes are part of the protocol: never renumber, only append.
_LAYOUTS: Final[dict[int, tuple[type[Message], int, _Encoder, _Decoder]]] = {
    1: (RequestVote, 4, _enc_request_vote, _dec_request_vote),
    2: (RequestVoteResponse, 2, _enc_request_vote_response, _dec_request_vote_response),
    3: (AppendEntries, 4, _enc_append_entries, _dec_append_entries),
    4: (AppendEntriesResponse, 4, _enc_append_entries_response, _dec_append_entries_response),
    5: (Heartbeat, 2, _enc_heartbeat, _dec_heartbeat),
    6: (HeartbeatResponse, 2, _enc_heartbeat_response, _dec_heartbeat_response),
    7: (InstallSnapshot, 4, _enc_install_snapshot, _dec_install_snapshot),
    8: (TimeoutNow, 0, _enc_timeout_now, _dec_timeout_now),
    9: (ReadIndexRequest, 1, _enc_read_index_request, _dec_read_index_request),
    10: (ReadIndexResponse, 2, _enc_read_index_response, _dec_read_index_response),
}
_CODES: Final[dict[type[Message], tuple[int, _Encoder]]] = {
    cls: (code, enc) for code, (cls, _, enc, _) in _LAYOUTS.items()
}
_DECODERS: Final[dict[int, tuple[int, _Decoder]]] = {
    code: (4 + n, dec) for code, (_, n, _, dec) in _LAYOUTS.items()
}


def _pack(obj: object) -> bytes:
    try:
        data = msgpack.packb(obj, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"cannot encode: {exc}") from exc
    assert isinstance(data, bytes)
    return data


def _unpack(data: bytes | bytearray | memoryview, *, max_array_len: int, max_str_len: int) -> Any:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError(f"expected bytes, got {type(data).__name__}")
    # Every item and every character takes at least a byte of the input, so nothing may claim
    # more than the input holds: msgpack allocates an array's slots from its header alone, so
    # without this a 5-byte header makes it allocate for max_array_len items.
    size = len(data) if not isinstance(data, memoryview) else data.nbytes
    try:
        # The limits make msgpack refuse, before allocating, any container larger than we would
        # accept anyway (a 5-byte array32 header can otherwise claim 4 billion items). Maps and
        # extension types are never used by this protocol.
        return msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_array_len=min(max_array_len, size),
            max_str_len=min(max_str_len, size),
            max_map_len=0,
            max_ext_len=0,
            max_bin_len=size,
        )
    except Exception as exc:  # msgpack raises several unrelated types; all mean "malformed"
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise CodecError(f"malformed msgpack: {detail}") from exc


def _check_message(msg: Message, fields: list[Any]) -> None:
    """Refuse to encode what the peer's decoder would refuse, so that such a bug is loud and
    local instead of a connection the peer keeps closing. Checks the header and every scalar
    field (entries come from the log, which the core keeps valid)."""
    for value in (msg.term, msg.src, msg.dst):
        _uint(value, "header")
    name = type(msg).__name__
    for value in fields:
        kind = type(value)
        if kind is int:
            _uint(value, name)
        elif kind is not bool and kind is not bytes and kind is not list:
            raise CodecError(f"{name}: cannot encode field value {_show(value)}")


def encode_message(msg: Message) -> bytes:
    """The msgpack payload of ``msg`` (without a frame header); raises CodecError if invalid."""
    try:
        code, enc = _CODES[type(msg)]
    except KeyError:
        raise CodecError(f"not a Raft message: {type(msg).__name__}") from None
    fields = enc(msg)
    _check_message(msg, fields)
    return _pack([code, msg.term, msg.src, msg.dst, *fields])


def decode_message(
    data: bytes | bytearray | memoryview,
    *,
    max_entries: int = DEFAULT_MAX_ENTRIES,
    max_voters: int = DEFAULT_MAX_VOTERS,
    max_conf_size: int = DEFAULT_MAX_CONF_SIZE,
) -> Message:
    """Decode one payload from ``encode_message``; raises CodecError on anything malformed.

    ``max_entries`` bounds the entries of one AppendEntries, ``max_conf_size`` the bytes of a
    snapshot's configuration and ``max_voters`` its nodes (voters and learners). The payload
    size itself is bounded by the frame limit.
    """
    obj = _unpack(data, max_array_len=max(max_entries, 16), max_str_len=0)
    if type(obj) is not list or len(obj) < 4:
        raise CodecError(f"expected a message array, got {_show(obj)}")
    code = obj[0]
    layout = _DECODERS.get(code) if type(code) is int else None
    if layout is None:
        raise CodecError(f"unknown message type {_show(code)}")
    arity, dec = layout
    if len(obj) != arity:
        raise CodecError(f"message type {code}: expected {arity} items, got {len(obj)}")
    term = _uint(obj[1], "term")
    src = _uint(obj[2], "src")
    dst = _uint(obj[3], "dst")
    return dec(obj, term, src, dst, _Limits(max_entries, max_voters, max_conf_size))


# -- handshake ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Handshake:
    """The first frame a connecting node sends: who it is, which cluster it belongs to, and
    whether the connection carries messages or one snapshot transfer (``channel``)."""

    version: int
    cluster_id: str
    node_id: int
    channel: str = CHANNEL_MESSAGES


@dataclass(frozen=True, slots=True)
class HandshakeReply:
    """The listener's answer; ``reason`` says why a connection was refused."""

    accepted: bool
    reason: str = ""


def _check_cluster_id(cluster_id: object) -> str:
    if type(cluster_id) is not str or not 0 < len(cluster_id) <= MAX_CLUSTER_ID_LENGTH:
        raise CodecError(
            f"cluster id: expected 1 to {MAX_CLUSTER_ID_LENGTH} characters, got {_show(cluster_id)}"
        )
    return cluster_id


def _check_magic(obj: object, what: str, lengths: tuple[int, ...] = (4,)) -> list[Any]:
    if type(obj) is not list or len(obj) not in lengths or obj[0] != HANDSHAKE_MAGIC:
        raise CodecError(f"not a raftly {what}: {_show(obj)}")
    return obj


def encode_handshake(
    cluster_id: str,
    node_id: int,
    version: int = PROTOCOL_VERSION,
    channel: str = CHANNEL_MESSAGES,
) -> bytes:
    """The payload of the handshake frame a connecting node sends first."""
    _check_cluster_id(cluster_id)
    _uint(node_id, "node id")
    _uint(version, "protocol version")
    if channel not in _CHANNELS:
        raise CodecError(f"unknown channel {channel!r}")
    hello: list[Any] = [HANDSHAKE_MAGIC, version, cluster_id, node_id]
    # A message connection keeps the original four items, so nodes that predate snapshot
    # streams still accept it (and refuse a snapshot stream cleanly, as a bad handshake).
    if channel != CHANNEL_MESSAGES:
        hello.append(channel)
    return _pack(hello)


def decode_handshake(data: bytes | bytearray | memoryview) -> Handshake:
    """Parse a handshake; any version is returned (the listener decides whether it speaks it)."""
    obj = _unpack(data, max_array_len=5, max_str_len=4 * MAX_CLUSTER_ID_LENGTH)
    obj = _check_magic(obj, "handshake", (4, 5))
    channel = obj[4] if len(obj) == 5 else CHANNEL_MESSAGES
    if channel not in _CHANNELS or type(channel) is not str:
        raise CodecError(f"unknown channel {_show(channel)}")
    return Handshake(
        version=_uint(obj[1], "protocol version"),
        cluster_id=_check_cluster_id(obj[2]),
        node_id=_uint(obj[3], "node id"),
        channel=channel,
    )


def encode_handshake_reply(accepted: bool, reason: str = "") -> bytes:
    """The payload of the listener's answer to a handshake."""
    return _pack([HANDSHAKE_MAGIC, PROTOCOL_VERSION, bool(accepted), reason[:_MAX_REASON_LENGTH]])


def decode_handshake_reply(data: bytes | bytearray | memoryview) -> HandshakeReply:
    """Parse the listener's answer; raises CodecError if it is not one."""
    obj = _unpack(data, max_array_len=4, max_str_len=4 * _MAX_REASON_LENGTH)
    obj = _check_magic(obj, "reply")
    _uint(obj[1], "protocol version")
    reason = obj[3]
    if type(reason) is not str:
        raise CodecError(f"reason: expected a string, got {_show(reason)}")
    return HandshakeReply(accepted=_bool(obj[2], "accepted"), reason=reason)


# -- snapshot streams -----------------------------------------------------------------------------

_TAG_HEADER: Final = 0x48  # b"H"
_TAG_CHUNK: Final = 0x43  # b"C"
_TAG_ACK: Final = 0x41  # b"A"
_TAG_DONE: Final = 0x44  # b"D"
_TAG_FAIL: Final = 0x46  # b"F"
_SIZE: Final = struct.Struct(">Q")


@dataclass(frozen=True, slots=True)
class SnapshotReply:
    """What the receiver of a snapshot stream said: ``kind`` is "ack" (with ``received``, the
    bytes written so far), "done" (verified and delivered) or "refused" (with ``reason``)."""

    kind: str
    received: int = 0
    reason: str = ""


def encode_snapshot_header(msg: InstallSnapshot, size: int) -> bytes:
    """The first frame of a snapshot stream: ``msg`` (meta only) and the file's size in bytes."""
    if msg.snapshot.data:
        raise CodecError("a snapshot stream's header carries the metadata only, not the data")
    _uint(size, "snapshot size")
    return bytes([_TAG_HEADER]) + _SIZE.pack(size) + encode_message(msg)


def decode_snapshot_header(
    payload: bytes,
    *,
    max_entries: int = DEFAULT_MAX_ENTRIES,
    max_voters: int = DEFAULT_MAX_VOTERS,
    max_conf_size: int = DEFAULT_MAX_CONF_SIZE,
) -> tuple[InstallSnapshot, int]:
    """The message and the size announced by a header frame; CodecError if it is not one."""
    if len(payload) <= 1 + _SIZE.size or payload[0] != _TAG_HEADER:
        raise CodecError(f"expected a snapshot header, got {_frame_kind(payload)}")
    size = _uint(_SIZE.unpack_from(payload, 1)[0], "snapshot size")
    msg = decode_message(payload[1 + _SIZE.size :], max_entries=max_entries,
                         max_voters=max_voters, max_conf_size=max_conf_size)
    if type(msg) is not InstallSnapshot:
        raise CodecError(f"a snapshot header carries an InstallSnapshot, not {type(msg).__name__}")
    if msg.snapshot.data:
        raise CodecError("a snapshot header must not carry data")
    return msg, size


def snapshot_chunk_prefix(length: int) -> bytes:
    """Frame header and tag of a chunk of ``length`` bytes (the chunk follows them unchanged)."""
    return _HEADER.pack(1 + length) + bytes([_TAG_CHUNK])


def decode_snapshot_chunk(payload: bytes) -> bytes:
    """The bytes a chunk frame carries (at least one); CodecError if it is not a chunk."""
    if len(payload) < 2 or payload[0] != _TAG_CHUNK:
        raise CodecError(f"expected a snapshot chunk, got {_frame_kind(payload)}")
    return payload[1:]


def encode_snapshot_ack(received: int) -> bytes:
    return bytes([_TAG_ACK]) + _SIZE.pack(_uint(received, "received"))


def encode_snapshot_done() -> bytes:
    return bytes([_TAG_DONE])


def encode_snapshot_refusal(reason: str) -> bytes:
    return bytes([_TAG_FAIL]) + reason[:_MAX_REASON_LENGTH].encode("utf-8", "replace")


def decode_snapshot_reply(payload: bytes) -> SnapshotReply:
    """Parse a frame from the receiver of a snapshot stream; CodecError if malformed."""
    tag = payload[0] if payload else None
    if tag == _TAG_ACK and len(payload) == 1 + _SIZE.size:
        return SnapshotReply("ack", received=_uint(_SIZE.unpack_from(payload, 1)[0], "received"))
    if tag == _TAG_DONE and len(payload) == 1:
        return SnapshotReply("done")
    if tag == _TAG_FAIL and len(payload) <= 1 + 4 * _MAX_REASON_LENGTH:
        return SnapshotReply("refused", reason=payload[1:].decode("utf-8", "replace"))
    raise CodecError(f"expected a snapshot ack, done or refusal, got {_frame_kind(payload)}")


def _frame_kind(payload: bytes) -> str:
    if not payload:
        return "an empty frame"
    return f"a frame of {len(payload)} bytes starting with {bytes(payload[:1])!r}"


# -- framing --------------------------------------------------------------------------------------


def _check_frame_limit(max_frame_size: int) -> int:
    if type(max_frame_size) is not int or not 0 < max_frame_size <= _MAX_FRAME_LIMIT:
        raise ValueError(f"max_frame_size must be in [1, {_MAX_FRAME_LIMIT}], got {max_frame_size}")
    return max_frame_size


def encode_frame(payload: bytes) -> bytes:
    """``payload`` behind its 4-byte big-endian length."""
    if len(payload) > _MAX_FRAME_LIMIT:
        raise CodecError(f"payload of {len(payload)} bytes cannot be framed")
    return _HEADER.pack(len(payload)) + payload


def frame_length(header: bytes | bytearray, max_frame_size: int, offset: int = 0) -> int:
    """The payload length announced by the frame header at ``offset`` of ``header``.

    Raises FrameTooLarge beyond ``max_frame_size``, so a reader refuses an oversized frame
    before buffering any of its body.
    """
    (size,) = _HEADER.unpack_from(header, offset)
    if size > max_frame_size:
        raise FrameTooLarge(f"frame of {size} bytes exceeds the limit of {max_frame_size}")
    return int(size)


def frame_message(msg: Message) -> bytes:
    """``encode_frame(encode_message(msg))``: what goes on the wire for one message."""
    return encode_frame(encode_message(msg))


class FrameDecoder:
    """Incremental splitter of a byte stream into frame payloads.

    Reading the socket in large chunks and splitting them here costs far less per message than
    two ``readexactly`` awaits per frame. A header announcing more than ``max_frame_size`` raises
    ``FrameTooLarge`` as soon as the header is seen, so an oversized body is never buffered.
    """

    __slots__ = ("_buf", "max_frame_size")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self.max_frame_size = _check_frame_limit(max_frame_size)
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes received that do not yet make a whole frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return the payloads of the frames it completes, in order."""
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        pos = 0
        end = len(buf)
        limit = self.max_frame_size
        while end - pos >= HEADER_SIZE:
            size = frame_length(buf, limit, pos)
            start = pos + HEADER_SIZE
            if end - start < size:
                break
            frames.append(bytes(buf[start : start + size]))
            pos = start + size
        if pos:
            del buf[:pos]
        return frames

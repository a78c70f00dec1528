"""Hostile input for the peer wire: the codec, the frame readers and a live ``TcpTransport``.

Everything the peer port decodes may come from anyone who can open a TCP connection. This
harness feeds the decoders of ``raftly.transport.codec`` (messages, handshakes and their replies,
the snapshot-stream frames), ``FrameDecoder`` and ``framing.read_frame`` with mutations of valid
encodings of every kind (bit flips, truncations, splices, length fields set huge, msgpack type
confusion, deep nesting, huge and negative integers, NaN, wrong-typed fields) and random bytes,
and checks for each input that

- the decoder either returns a value or raises ``CodecError``: any other exception is a finding;
- it returns within ``SLOW_INPUT`` seconds (rerun once, so a GC pause is not a finding);
- what it returns satisfies the invariants the core relies on (``check_message`` and friends,
  written independently of the codec) and re-encodes to the same value;
- on a sample (every ``alloc_every``-th input and every input with a huge length field), the
  peak of memory allocated while decoding stays within a constant plus a multiple of the
  input's size: a length field is never trusted to allocate before the bytes arrive.

``run_sockets`` then opens real connections to a ``TcpTransport`` on 127.0.0.1 and sends hostile
handshakes and frames: each must end in a disconnect by the transport with exactly one refusal
line (WARNING, or DEBUG under the per-source rate limit) and no traceback, and a legitimate
peer's messages must still arrive afterwards.

One seed fixes every input: ``python -m raftly.testing.wirefuzz --inputs 1000000 --seed 1``.
``--atheris`` runs the same targets under atheris (coverage-guided) when it is installed
(``pip install atheris``, or the ``fuzz`` extra).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import re
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field, fields
from typing import Any

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
from raftly.core.types import ConfState, Entry, EntryType, Member, Snapshot, SnapshotMeta
from raftly.transport import codec
from raftly.transport.codec import (
    CHANNEL_MESSAGES,
    CHANNEL_SNAPSHOT,
    DEFAULT_MAX_ENTRIES,
    DEFAULT_MAX_VOTERS,
    HEADER_SIZE,
    MAX_CLUSTER_ID_LENGTH,
    MAX_INT,
    CodecError,
    FrameDecoder,
    FrameTooLarge,
)
from raftly.transport.framing import read_frame

__all__ = [
    "SLOW_INPUT",
    "TARGETS",
    "Finding",
    "Invalid",
    "Records",
    "Report",
    "SocketReport",
    "Target",
    "check_input",
    "check_message",
    "main",
    "mutate",
    "run",
    "run_atheris",
    "run_sockets",
    "seed_corpus",
]

SLOW_INPUT = 0.25
"""Seconds one input may take to decode; the largest valid input decodes in about 1 ms."""
FRAME_LIMIT = 4096
"""The frame limit of the frame-reader targets: small, so oversized frames are common."""
_ALLOC_BASE = 32 << 10
_ALLOC_PER_BYTE = 64
"""Peak bytes allocated while decoding an input of n bytes may be at most BASE + PER_BYTE * n:
decoded objects are larger than their encoding (an entry of 5 bytes becomes ~200 bytes of
objects), but nothing may be proportional to a length the input merely declares."""
_MAX_INPUT = 1 << 20
"""Mutations that repeat ranges compound; inputs are cut here (the frame limit is 16 MiB, and a
size the decoders handle in linear time says nothing more at 300 MB)."""
_KEEP_BYTES = 256
"""Bytes of an input kept with a finding (shown in hex)."""


class Invalid(Exception):
    """A decoded value breaks an invariant the core relies on."""


@dataclass(slots=True)
class Finding:
    """One distinct problem: where, what, how often, and the first input that showed it."""

    target: str
    kind: str  # "crash", "slow", "invalid", "alloc", "hang"
    detail: str
    example: bytes
    count: int = 1

    def __str__(self) -> str:
        data = self.example[:_KEEP_BYTES].hex()
        more = "..." if len(self.example) > _KEEP_BYTES else ""
        return (f"[{self.kind}] {self.target}: {self.detail} (x{self.count}; "
                f"{len(self.example)}-byte input {data}{more})")


@dataclass(slots=True)
class Report:
    """What a run did: inputs, seconds, outcome counts per target, findings."""

    inputs: int = 0
    seconds: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)
    alloc_checked: int = 0
    findings: dict[tuple[str, str, str], Finding] = field(default_factory=dict)

    def add(self, target: str, kind: str, detail: str, data: bytes) -> None:
        key = (target, kind, re.sub(r"\d+", "N", detail))  # one finding, whatever the numbers
        found = self.findings.get(key)
        if found is None:
            self.findings[key] = Finding(target, kind, detail, bytes(data))
        else:
            found.count += 1

    def lines(self) -> list[str]:
        rate = self.inputs / self.seconds if self.seconds else 0.0
        out = [f"{self.inputs} inputs in {self.seconds:.1f}s ({rate:,.0f} inputs/s), "
               f"{self.alloc_checked} allocation-checked, {len(self.findings)} findings"]
        out += [f"  {name}: {count}" for name, count in sorted(self.outcomes.items())]
        out += [f"  FINDING {f}" for f in self.findings.values()]
        return out


# -- invariants of decoded values (independent of the codec's own checks) ----------------------


def _uint(value: object, what: str) -> None:
    if type(value) is not int or not 0 <= value < MAX_INT:
        raise Invalid(f"{what} = {value!r}: not an integer in [0, 2**63)")


def _check_conf(conf: ConfState, what: str) -> None:
    if not isinstance(conf, ConfState) or len(conf.ids) > DEFAULT_MAX_VOTERS:
        raise Invalid(f"{what}: bad configuration {conf!r}")
    for node in conf.ids:
        _uint(node, f"{what} node id")
    if conf.voters & conf.learners:
        raise Invalid(f"{what}: a node is both voter and learner")


_INT_FIELDS = ("int", "NodeId")
"""Field annotations (strings: the dataclasses use postponed annotations) of integers."""


def check_message(msg: object, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
    """Raise Invalid unless ``msg`` is a message the core may be handed as it is."""
    if not isinstance(msg, Message) or type(msg) not in _MESSAGE_TYPES:
        raise Invalid(f"not a Raft message: {type(msg).__name__}")
    name = type(msg).__name__
    for f in fields(msg):
        value = getattr(msg, f.name)
        kind = str(f.type)
        if kind in _INT_FIELDS:
            _uint(value, f"{name}.{f.name}")
        elif kind == "bool" and type(value) is not bool:
            raise Invalid(f"{name}.{f.name} = {value!r}: not a bool")
        elif kind == "bytes" and type(value) is not bytes:
            raise Invalid(f"{name}.{f.name} = {value!r}: not bytes")
    if isinstance(msg, AppendEntries):
        if type(msg.entries) is not list or len(msg.entries) > max_entries:
            raise Invalid("AppendEntries.entries: not a list within the limit")
        # A correct leader sends a consecutive run after prev, terms never decreasing from
        # prev_term and never above its own term.
        if msg.prev_term > msg.term:
            raise Invalid(f"prev_term {msg.prev_term} above the message's term {msg.term}")
        index, last_term = msg.prev_index, msg.prev_term
        for entry in msg.entries:
            index += 1
            if (type(entry) is not Entry or entry.index != index or type(entry.term) is not int
                    or not last_term <= entry.term <= msg.term
                    or type(entry.type) is not EntryType or type(entry.data) is not bytes):
                raise Invalid(f"entry {entry!r} after index {index - 1}, term {last_term}")
            last_term = entry.term
        _uint(index, "last entry index")
    elif isinstance(msg, InstallSnapshot):
        meta = msg.snapshot.meta
        _uint(meta.index, "snapshot index")
        _uint(meta.term, "snapshot term")
        if meta.term > msg.term:
            raise Invalid(f"snapshot term {meta.term} above the message's term {msg.term}")
        if type(msg.snapshot.data) is not bytes:
            raise Invalid("snapshot data not bytes")
        _check_conf(meta.conf, "snapshot")
    again = codec.decode_message(codec.encode_message(msg))
    if again != msg:
        raise Invalid(f"does not survive re-encoding: {msg} became {again}")


def _check_handshake(hello: codec.Handshake) -> None:
    _uint(hello.version, "handshake version")
    _uint(hello.node_id, "handshake node id")
    if type(hello.cluster_id) is not str or not 0 < len(hello.cluster_id) <= MAX_CLUSTER_ID_LENGTH:
        raise Invalid(f"handshake cluster id {hello.cluster_id!r}")
    if hello.channel not in (CHANNEL_MESSAGES, CHANNEL_SNAPSHOT):
        raise Invalid(f"handshake channel {hello.channel!r}")


def _check_reply(reply: codec.HandshakeReply) -> None:
    if type(reply.accepted) is not bool or type(reply.reason) is not str:
        raise Invalid(f"handshake reply {reply!r}")


def _check_snapshot_reply(reply: codec.SnapshotReply) -> None:
    if reply.kind not in ("ack", "done", "refused") or type(reply.reason) is not str:
        raise Invalid(f"snapshot reply {reply!r}")
    _uint(reply.received, "snapshot reply received")


_MESSAGE_TYPES = (AppendEntries, AppendEntriesResponse, Heartbeat, HeartbeatResponse,
                  InstallSnapshot, ReadIndexRequest, ReadIndexResponse, RequestVote,
                  RequestVoteResponse, TimeoutNow)


# -- targets: bytes in, CodecError or a checked value out --------------------------------------


def _frames(data: bytes) -> Iterator[bytes | None]:
    """The reference split of ``data`` into payloads; None stands for an oversized header."""
    pos = 0
    while len(data) - pos >= HEADER_SIZE:
        size = int.from_bytes(data[pos : pos + HEADER_SIZE], "big")
        if size > FRAME_LIMIT:
            yield None
            return
        if len(data) - pos - HEADER_SIZE < size:
            return
        yield data[pos + HEADER_SIZE : pos + HEADER_SIZE + size]
        pos += HEADER_SIZE + size


def _split_frames(data: bytes) -> list[bytes | None]:
    """Feed ``data`` to a FrameDecoder in pieces (cut where its own first byte says)."""
    decoder = FrameDecoder(FRAME_LIMIT)
    got: list[bytes | None] = []
    step = 1 + (data[0] if data else 0)
    try:
        for pos in range(0, len(data), step):
            got += decoder.feed(data[pos : pos + step])
            if decoder.buffered > HEADER_SIZE + FRAME_LIMIT:
                raise Invalid(f"buffers {decoder.buffered} bytes, more than one frame")
    except FrameTooLarge:
        got.append(None)
    return got


def _run_to_end(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that must not wait (its reader holds the whole stream and its end)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise Invalid("waited for more bytes on a stream that had ended (a hang on a socket)")


_LOOP = asyncio.new_event_loop()
"""StreamReader wants a loop; this one is never run (the reads complete without waiting)."""


def _read_frames(data: bytes) -> list[bytes | None]:
    """``read_frame`` until the end of ``data``; a stream cut inside a frame ends in "cut"."""
    reader = asyncio.StreamReader(limit=1 << 20, loop=_LOOP)
    reader.feed_data(data)
    reader.feed_eof()
    got: list[bytes | None] = []
    try:
        while (payload := _run_to_end(read_frame(reader, FRAME_LIMIT))) is not None:
            got.append(payload)
    except FrameTooLarge:
        got.append(None)
    except CodecError:
        got.append(b"cut")
    return got


def _check_frames(got: list[bytes | None], data: bytes) -> None:
    """Compare with the reference split; raise CodecError if the stream is refused."""
    expected: list[bytes | None] = list(_frames(data))
    cut = got[-1:] == [b"cut"]
    if cut:  # read_frame: only a stream that ends inside a frame may do this
        whole = sum(HEADER_SIZE + len(p) for p in expected if p is not None)
        if None in expected or whole == len(data):
            raise Invalid("stream error on a well-framed stream")
        got = got[:-1]
    if got != expected:
        raise Invalid(f"split {len(got)} frames, the reference {len(expected)}")
    for payload in got:
        if payload is not None:
            with contextlib.suppress(CodecError):
                check_message(codec.decode_message(payload))
    if cut or None in got:
        raise CodecError("stream refused")


def _check_snapshot_header(decoded: tuple[InstallSnapshot, int], data: bytes) -> None:
    msg, size = decoded
    check_message(msg)
    _uint(size, "snapshot size")
    if msg.snapshot.data:
        raise Invalid("a snapshot header with data")


def _check_chunk(chunk: bytes, data: bytes) -> None:
    if not chunk or len(chunk) != len(data) - 1:
        raise Invalid(f"chunk of {len(chunk)} bytes from a {len(data)}-byte frame")


@dataclass(frozen=True, slots=True)
class Target:
    """A decoder of the peer wire and the check of what it returns (given the input too)."""

    decode: Callable[[bytes], Any]
    check: Callable[[Any, bytes], None]


TARGETS: dict[str, Target] = {
    "message": Target(codec.decode_message, lambda m, _: check_message(m)),
    "handshake": Target(codec.decode_handshake, lambda h, _: _check_handshake(h)),
    "handshake_reply": Target(codec.decode_handshake_reply, lambda r, _: _check_reply(r)),
    "snapshot_header": Target(codec.decode_snapshot_header, _check_snapshot_header),
    "snapshot_chunk": Target(codec.decode_snapshot_chunk, _check_chunk),
    "snapshot_reply": Target(codec.decode_snapshot_reply, lambda r, _: _check_snapshot_reply(r)),
    "frame_decoder": Target(_split_frames, _check_frames),
    "read_frame": Target(_read_frames, _check_frames),
}
"""Every decoder of the peer wire, under the name the report counts it by."""


# -- valid inputs ---------------------------------------------------------------------------------


def _rand_uint(rng: random.Random) -> int:
    return rng.choice((0, 1, rng.randrange(1000), rng.randrange(MAX_INT), MAX_INT - 1))


def _rand_conf(rng: random.Random) -> ConfState:
    ids = rng.sample(range(1, 50), rng.randrange(0, 6))
    learners = frozenset(ids[:1]) if rng.random() < 0.3 else frozenset()
    voters = frozenset(ids) - learners
    members: tuple[Member, ...] = ()
    if rng.random() < 0.5:
        members = tuple(Member(i, f"n{i}", f"127.0.0.1:{7000 + i}", f"127.0.0.1:{8000 + i}")
                        for i in sorted(ids))
    return ConfState(voters, learners, members)


def _rand_message(rng: random.Random, cls: type[Message]) -> Message:
    term = rng.randrange(1, 1000)
    head: dict[str, Any] = {"term": term, "src": rng.randrange(1, 9), "dst": rng.randrange(1, 9)}
    if cls is AppendEntries:
        prev = rng.randrange(0, 1000)
        prev_term = rng.randrange(0, term + 1)
        entries = [Entry(prev + 1 + i, term, rng.randbytes(rng.randrange(0, 20)),
                         rng.choice(list(EntryType))) for i in range(rng.randrange(0, 6))]
        return AppendEntries(**head, prev_index=prev, prev_term=prev_term, entries=entries,
                             commit=rng.randrange(0, prev + 1))
    if cls is InstallSnapshot:
        data = b"" if rng.random() < 0.5 else rng.randbytes(rng.randrange(1, 40))
        meta = SnapshotMeta(rng.randrange(0, 1000), rng.randrange(0, term + 1), _rand_conf(rng))
        return InstallSnapshot(**head, snapshot=Snapshot(meta, data))
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name in head:
            continue
        kind = str(f.type)
        if kind == "bool":
            values[f.name] = rng.random() < 0.5
        elif kind == "bytes":
            values[f.name] = rng.randbytes(rng.randrange(0, 16))
        else:
            values[f.name] = _rand_uint(rng)
    return cls(**head, **values)


def seed_corpus(rng: random.Random) -> dict[str, list[bytes]]:
    """Valid inputs for every target: the starting points of the mutations."""
    messages = [_rand_message(rng, cls) for cls in _MESSAGE_TYPES for _ in range(4)]
    payloads = [codec.encode_message(m) for m in messages]
    headers = []
    for _ in range(8):
        msg = _rand_message(rng, InstallSnapshot)
        assert isinstance(msg, InstallSnapshot)
        bare = InstallSnapshot(term=msg.term, src=msg.src, dst=msg.dst,
                               snapshot=Snapshot(msg.snapshot.meta, b""))
        headers.append(codec.encode_snapshot_header(bare, _rand_uint(rng)))
    handshakes = [codec.encode_handshake(rng.choice(("c", "raftly-local-1234abcd", "x" * 256)),
                                         _rand_uint(rng), channel=channel)
                  for channel in (CHANNEL_MESSAGES, CHANNEL_SNAPSHOT) for _ in range(3)]
    small = [p for p in payloads if len(p) < FRAME_LIMIT]
    streams = [b"".join(codec.encode_frame(p) for p in rng.sample(small, rng.randrange(1, 5)))
               for _ in range(12)]
    return {
        "message": payloads,
        "handshake": handshakes,
        "handshake_reply": [codec.encode_handshake_reply(True),
                            codec.encode_handshake_reply(False, "cluster id 'x' is not ...")],
        "snapshot_header": headers,
        "snapshot_chunk": [b"C" + rng.randbytes(rng.randrange(1, 64)) for _ in range(3)],
        "snapshot_reply": [codec.encode_snapshot_ack(_rand_uint(rng)),
                           codec.encode_snapshot_done(), codec.encode_snapshot_refusal("no")],
        "frame_decoder": streams,
        "read_frame": streams,
    }


# -- mutations ----------------------------------------------------------------------------------

_HUGE_HEADERS = (
    b"\xdd\xff\xff\xff\xff", b"\xdd\x00\x01\x00\x00", b"\xdc\xff\xff",  # arrays
    b"\xc6\xff\xff\xff\xff", b"\xc6\x00\xff\xff\xff", b"\xc5\xff\xff",  # bin
    b"\xdb\xff\xff\xff\xff", b"\xda\xff\xff",  # str
    b"\xdf\xff\xff\xff\xff", b"\xde\xff\xff",  # map
    b"\xc9\xff\xff\xff\xff\x01",  # ext
)
"""msgpack headers that declare far more items or bytes than any input holds."""
_HUGE_FRAMES = (b"\xff\xff\xff\xff", b"\x01\x00\x00\x00", b"\x00\x00\x10\x01", b"\x7f\xff\xff\xff")
_INTERESTING = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0xC0, 0xC1, 0xC2, 0xC3, 0xC4, 0xCA, 0xCB, 0xCC,
                0xCF, 0xD0, 0xD3, 0xD4, 0xD9, 0xDC, 0xDD, 0x90, 0x9F, 0xA0, 0xE0)
_HOSTILE_VALUES: tuple[object, ...] = (
    -1, -(1 << 63), 1 << 63, (1 << 64) - 1, MAX_INT - 1, 0, True, False, None, float("nan"),
    float("inf"), -0.0, 1.5, "", "raftly", "\u00e9", b"", b"raftly",
    [], [[]], {}, {"a": 1}, msgpack.ExtType(1, b"x"), msgpack.Timestamp(0),
)


def _deep(rng: random.Random) -> bytes:
    depth = rng.choice((10, 200, 1000, 5000, 100_000))
    opener = rng.choice((b"\x91", b"\x81\x00"))  # [[[...]]] or {0: {0: ...}}
    return opener * depth + b"\xc0"


def _tweak(rng: random.Random, obj: object) -> object:
    """Replace one random node of a decoded msgpack tree with a hostile value."""
    if isinstance(obj, list) and obj and rng.random() < 0.8:
        obj = list(obj)
        i = rng.randrange(len(obj))
        choice = rng.random()
        if choice < 0.7:
            obj[i] = _tweak(rng, obj[i])
        elif choice < 0.8:
            del obj[i]
        elif choice < 0.9:
            obj.insert(i, rng.choice(_HOSTILE_VALUES))
        else:
            j = rng.randrange(len(obj))
            obj[i], obj[j] = obj[j], obj[i]
        return obj
    if isinstance(obj, int) and not isinstance(obj, bool) and rng.random() < 0.5:
        return rng.choice((obj + 1, obj - 1, -obj - 1, obj ^ (1 << rng.randrange(64)), obj << 8,
                           float(obj), str(obj), bool(obj & 1)))
    if isinstance(obj, bytes) and rng.random() < 0.5:
        return rng.choice((obj.decode("latin-1"), list(obj[:1000]), obj[:1000] * 1000, b""))
    return rng.choice(_HOSTILE_VALUES)


def _pack(obj: object, rng: random.Random) -> bytes:
    try:
        return bytes(msgpack.packb(obj, use_bin_type=rng.random() < 0.8, strict_types=False))
    except (TypeError, ValueError, OverflowError):
        return b""


def _structural(rng: random.Random, data: bytes, payload_at: int) -> bytes:
    """Mutate ``data`` as msgpack values (type confusion, bad ranges), not as bytes."""
    try:
        obj = msgpack.unpackb(data[payload_at:], raw=False, strict_map_key=False)
    except Exception:
        return data
    if rng.random() < 0.1:
        return data[:payload_at] + _pack([obj, *rng.sample(_HOSTILE_VALUES, 2)], rng)
    return data[:payload_at] + _pack(_tweak(rng, obj), rng)


def mutate(rng: random.Random, data: bytes, others: list[bytes], framed: bool) -> bytes:
    """One hostile variant of ``data``: one to four byte- or value-level mutations."""
    for _ in range(rng.choice((1, 1, 1, 2, 3, 4))):
        data = data[:_MAX_INPUT]
        n = len(data)
        op = rng.randrange(13)
        pos = rng.randrange(n + 1)
        if op == 0 and n:  # bit flips
            buf = bytearray(data)
            for _ in range(rng.randrange(1, 4)):
                buf[rng.randrange(n)] ^= 1 << rng.randrange(8)
            data = bytes(buf)
        elif op == 1 and n:  # an interesting byte (msgpack type markers, limits)
            buf = bytearray(data)
            buf[rng.randrange(n)] = rng.choice(_INTERESTING)
            data = bytes(buf)
        elif op == 2:  # truncate
            data = data[:pos]
        elif op == 3:  # drop a range
            data = data[:pos] + data[pos + rng.randrange(1, 16):]
        elif op == 4:  # random bytes inserted
            data = data[:pos] + rng.randbytes(rng.randrange(1, 32)) + data[pos:]
        elif op == 5:  # splice with another valid input
            other = rng.choice(others)
            data = data[:pos] + other[rng.randrange(len(other) + 1):]
        elif op == 6:  # a length field set huge, in place or inserted
            header = rng.choice(_HUGE_FRAMES if framed and rng.random() < 0.5 else _HUGE_HEADERS)
            keep = pos + (len(header) if rng.random() < 0.5 else 0)
            data = data[:pos] + header + data[keep:]
        elif op == 7:  # deep nesting
            data = data[:pos] + _deep(rng) + data[pos:]
        elif op == 8:  # repeat a range
            end = rng.randrange(pos, n + 1)
            data = data[:end] + data[pos:end] * rng.randrange(1, 20) + data[end:]
        elif op <= 10:  # value-level: type confusion, negative, huge, NaN, wrong fields
            skip = HEADER_SIZE if framed else (9 if data[:1] == b"H" else 0)
            data = _structural(rng, data, skip)
        elif op == 11:  # random bytes
            data = rng.randbytes(rng.randrange(0, 64))
        else:  # an integer field made huge or negative, by its msgpack encoding
            big = rng.choice((b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff", b"\xd3\x80" + bytes(7),
                              b"\xcf\x80" + bytes(7), b"\xff", b"\xcb\x7f\xf8" + bytes(6)))
            data = data[:pos] + big + data[pos + rng.randrange(0, 3):]
    return data[:_MAX_INPUT]


# -- the loop -------------------------------------------------------------------------------------


def _classify(target: Target, data: bytes) -> tuple[str, str]:
    """(outcome, detail): outcome is "accepted", "refused", "crash" or "invalid"."""
    try:
        target.check(target.decode(data), data)
    except CodecError:
        return "refused", ""
    except Invalid as exc:
        return "invalid", str(exc)
    except Exception as exc:  # the finding this harness exists for
        frame = exc.__traceback__
        while frame is not None and frame.tb_next is not None:
            frame = frame.tb_next
        where = (f"{frame.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.tb_lineno}"
                 if frame is not None else "?")
        return "crash", f"{type(exc).__name__} at {where}: {str(exc)[:120]}"
    return "accepted", ""


def _peak_alloc(target: Target, data: bytes) -> int:
    tracemalloc.start()
    try:
        with contextlib.suppress(Exception):
            target.decode(data)  # the decoder's allocations, not the harness's checks
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def check_input(report: Report, name: str, target: Target, data: bytes,
                alloc: bool = False) -> None:
    """Run one input through one target and record its outcome and any finding."""
    report.inputs += 1
    started = time.perf_counter()
    outcome, detail = _classify(target, data)
    elapsed = time.perf_counter() - started
    report.outcomes[f"{name} {outcome}"] += 1
    if outcome in ("crash", "invalid"):
        report.add(name, outcome, detail, data)
    if elapsed > SLOW_INPUT:
        started = time.perf_counter()
        _classify(target, data)  # once more: a GC pause or a busy machine is not a finding
        elapsed = min(elapsed, time.perf_counter() - started)
        if elapsed > SLOW_INPUT:
            report.add(name, "slow", f"took over {SLOW_INPUT}s", data)
    if alloc:
        report.alloc_checked += 1
        peak = _peak_alloc(target, data)
        if peak > _ALLOC_BASE + _ALLOC_PER_BYTE * len(data):
            report.add(name, "alloc", f"peak {peak} bytes allocated for {len(data)} input bytes",
                       data)


def run(inputs: int, seed: int = 0, *, alloc_every: int = 500,
        targets: dict[str, Target] | None = None, progress: Callable[[Report], None] | None = None
        ) -> Report:
    """Feed ``inputs`` hostile inputs, spread over ``targets`` (default: every decoder)."""
    targets = targets if targets is not None else TARGETS
    rng = random.Random(seed)
    corpus = seed_corpus(random.Random(seed))
    everything = [d for ds in corpus.values() for d in ds]
    names = sorted(targets)
    report = Report()
    started = time.perf_counter()
    for i in range(inputs):
        name = names[i % len(names)]
        framed = name in ("frame_decoder", "read_frame")
        seeds = corpus.get(name) or everything
        if rng.random() < 0.05:
            data = rng.randbytes(rng.randrange(0, 80))
        else:
            data = mutate(rng, rng.choice(seeds), everything, framed)
        huge = any(h in data for h in _HUGE_HEADERS[:2] + _HUGE_FRAMES[:1])
        check_input(report, name, targets[name], data,
                    alloc=huge or (alloc_every > 0 and i % alloc_every == 0))
        if progress is not None and i % 100_000 == 99_999:
            report.seconds = time.perf_counter() - started
            progress(report)
    report.seconds = time.perf_counter() - started
    return report


# -- the socket-level part ---------------------------------------------------------------------


@dataclass(slots=True)
class SocketReport:
    """What ``run_sockets`` did: hostile connections, their outcomes, legit deliveries."""

    connections: int = 0
    seconds: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)
    legit_rounds: int = 0
    findings: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"{self.connections} hostile connections in {self.seconds:.1f}s, "
               f"{self.legit_rounds} legitimate-peer rounds delivered, "
               f"{len(self.findings)} findings"]
        out += [f"  {name}: {count}" for name, count in sorted(self.outcomes.items())]
        out += [f"  FINDING {f}" for f in self.findings]
        return out


class Records(logging.Handler):
    """Keeps every record it is handed (at ``level`` and above), for the fuzzers to inspect."""

    def __init__(self, level: int = logging.DEBUG) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


_TAIL = b"\xff\xff\xff\xff"
"""An oversized frame header: the end of a stream of hostile messages."""


def _hostile_stream(rng: random.Random, corpus: dict[str, list[bytes]], cluster_id: str,
                    me: int, node: int) -> tuple[str, bytes]:
    """(scenario, bytes) for one hostile connection claiming to be ``node`` (when it gets that
    far); every scenario ends in something the transport must refuse."""
    frame = codec.encode_frame
    kind = rng.randrange(7)
    hello = frame(codec.encode_handshake(cluster_id, node))
    if kind == 0:
        return "random bytes", rng.randbytes(rng.randrange(1, 200))
    if kind == 1:
        bad = mutate(rng, rng.choice(corpus["handshake"]), corpus["handshake"], False)
        return "mutated handshake", frame(bad)
    if kind == 2:
        return "oversized handshake frame", rng.choice(_HUGE_FRAMES) + rng.randbytes(8)
    if kind == 3:
        return "handshake cut short", hello[: rng.randrange(1, len(hello))]
    if kind == 4:
        wrong = rng.choice((frame(codec.encode_handshake("other", node)),
                            frame(codec.encode_handshake(cluster_id, me)),
                            frame(codec.encode_handshake(cluster_id, node, version=1))))
        return "refused handshake", wrong
    if kind == 5:
        header = mutate(rng, rng.choice(corpus["snapshot_header"]), corpus["snapshot_header"],
                        False)
        snap = frame(codec.encode_handshake(cluster_id, node, channel=CHANNEL_SNAPSHOT))
        return "mutated snapshot header", snap + frame(header) + b"\xff" * 4
    # Messages from the claimed node: some valid, then mutated ones, then a frame too large.
    msgs = [_rand_message(rng, cls) for cls in _MESSAGE_TYPES]
    for m in msgs:
        m.src, m.dst = node, me
    body = b"".join(frame(codec.encode_message(m)) for m in msgs[: rng.randrange(0, 4)])
    for _ in range(rng.randrange(1, 4)):
        body += frame(mutate(rng, rng.choice(corpus["message"]), corpus["message"], False))
    # The closing header goes in a write of its own, a moment later (_TAIL): in the same read
    # as the frames before it, FrameDecoder would refuse the lot before decoding any of them.
    return "mutated messages", hello + body + _TAIL


async def _hostile_connection(address: tuple[str, int], data: bytes, timeout: float,
                              opened: asyncio.Future[int]) -> bool:
    """Send ``data``, then read until the transport closes; False if it did not in time.

    ``opened`` gets the local port (the transport's log lines name it)."""
    reader, writer = await asyncio.open_connection(*address)
    opened.set_result(writer.get_extra_info("sockname")[1])
    try:
        with contextlib.suppress(OSError):
            if data.endswith(_TAIL):
                writer.write(data[: -len(_TAIL)])
                await writer.drain()
                await asyncio.sleep(0.05)
                data = _TAIL
            writer.write(data)
            await writer.drain()
        async with asyncio.timeout(timeout):
            while await reader.read(1 << 16):
                pass
        return True
    except TimeoutError:
        return False
    except OSError:
        return True  # reset by the transport: closed too
    finally:
        writer.close()


async def _legit_round(sender: Any, received: list[Message], seq: int, deadline: float) -> bool:
    """Send Heartbeat ``seq`` from the legitimate peer until it arrives; False past deadline."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while loop.time() < end:
        sender.send(Heartbeat(term=1, src=2, dst=1, commit=0, seq=seq))
        for _ in range(10):
            if any(isinstance(m, Heartbeat) and m.seq == seq for m in received):
                return True
            await asyncio.sleep(0.01)
    return False


def _errors_logged(records: list[logging.LogRecord], report: SocketReport) -> None:
    for record in records:
        if record.exc_info is not None or record.levelno >= logging.ERROR:
            report.findings.append(f"logged at {record.levelname}: {record.getMessage()}")


_FIRST_HOSTILE_ID = 1000
"""Hostile connections claim ids from here, one each, so log lines can be told apart."""


async def run_sockets(connections: int, seed: int = 0, *, concurrency: int = 100,
                      timeout: float = 10.0) -> SocketReport:
    """Hostile connections to a live TcpTransport on 127.0.0.1, ``concurrency`` at a time.

    Each must be closed by the transport with exactly one refusal line about it (a WARNING, or a
    DEBUG when the transport's per-source rate limit holds the WARNING back; found by its port
    or its claimed node id) and nothing logged at ERROR or with a traceback; after every
    batch a legitimate peer's heartbeat must still be delivered.
    """
    from raftly.transport.tcp import TcpTransport  # the socket part alone needs it

    rng = random.Random(seed)
    corpus = seed_corpus(random.Random(seed))
    cluster_id = "wirefuzz"
    # A short handshake timeout: a stream cut short inside its handshake ends by timing out.
    target = TcpTransport(1, ("127.0.0.1", 0), {}, cluster_id=cluster_id, handshake_timeout=0.5,
                          max_frame_size=64 << 10)
    peer = TcpTransport(2, ("127.0.0.1", 0), {}, cluster_id=cluster_id)
    received: list[Message] = []
    handler = Records()
    log = logging.getLogger("raftly.transport")
    saved = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False  # counted here, not printed
    report = SocketReport()
    started = time.perf_counter()
    try:
        await target.start(received.append)
        await peer.start(lambda m: None)
        peer.set_peers({1: target.listen_address})
        checked = 0
        for first in range(0, connections, concurrency):
            ids = range(_FIRST_HOSTILE_ID + first,
                        _FIRST_HOSTILE_ID + min(first + concurrency, connections))
            streams = [_hostile_stream(rng, corpus, cluster_id, 1, node) for node in ids]
            ports = [asyncio.get_running_loop().create_future() for _ in streams]
            closed = await asyncio.gather(*(
                _hostile_connection(target.listen_address, data, timeout, port)
                for (_, data), port in zip(streams, ports, strict=True)))
            await asyncio.sleep(0.01)  # the transport's last lines, after its close
            # From the last check on: the previous legitimate round's lines are checked too.
            records = handler.records[checked:]
            checked = len(handler.records)
            _errors_logged(records, report)
            for node, (scenario, data), port, ok in zip(ids, streams, ports, closed,
                                                           strict=True):
                report.connections += 1
                mine = re.compile(rf"127\.0\.0\.1:{port.result()}\b|\bnode {node}\b")
                # One refusal line each: a WARNING, or a DEBUG once the transport's rate limit
                # of refusal WARNINGs per source address (all of these come from 127.0.0.1)
                # holds it back; INFO lines are not about refusals.
                lines = [r for r in records if r.levelno != logging.INFO
                         and mine.search(r.getMessage())]
                outcome = "closed" if ok else "left open"
                report.outcomes[f"{scenario}: {outcome}, {len(lines)} refusal line(s)"] += 1
                if not ok:
                    report.findings.append(f"{scenario}: not closed within {timeout}s: "
                                           f"{data[:64].hex()}")
                if len(lines) != 1:
                    shown = "; ".join(r.getMessage() for r in lines)
                    report.findings.append(f"{scenario}: {len(lines)} refusal lines ({shown}) "
                                           f"for {data[:64].hex()}")
            if await _legit_round(peer, received, first, timeout):
                report.legit_rounds += 1
            else:
                report.findings.append(f"legitimate peer not served after {first} hostile "
                                       "connections")
            received.clear()
        await asyncio.sleep(0.01)
        _errors_logged(handler.records[checked:], report)  # the last legitimate round's
    finally:
        report.seconds = time.perf_counter() - started
        await peer.close()
        await target.close()
        log.removeHandler(handler)
        log.level, log.propagate = saved
    return report


# -- atheris ------------------------------------------------------------------------------------


def run_atheris(inputs: int) -> int:
    """Coverage-guided: atheris picks the target from the first byte; raises on a finding."""
    try:
        import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]  # ``fuzz`` extra
    except ImportError:
        print("atheris is not installed (pip install atheris)", file=sys.stderr)
        return 2
    names = sorted(TARGETS)

    def one_input(data: bytes) -> None:
        if not data:
            return
        name = names[data[0] % len(names)]
        report = Report()
        check_input(report, name, TARGETS[name], data[1:])
        if report.findings:
            raise AssertionError("\n".join(str(f) for f in report.findings.values()))

    atheris.instrument_all()
    atheris.Setup([sys.argv[0], f"-runs={inputs}"], one_input)
    atheris.Fuzz()
    return 0


# -- command line -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raftly.testing.wirefuzz",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=100_000, help="decoder inputs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--connections", type=int, default=1000,
                        help="hostile connections to a live transport (0: none)")
    parser.add_argument("--alloc-every", type=int, default=500,
                        help="check the allocation peak of every Nth input (0: only huge ones)")
    parser.add_argument("--atheris", action="store_true",
                        help="coverage-guided with atheris instead of the seeded mutator")
    args = parser.parse_args(argv)
    if args.atheris:
        return run_atheris(args.inputs)
    findings = 0

    def progress(report: Report) -> None:
        print(f"... {report.inputs} inputs, {report.inputs / report.seconds:,.0f}/s, "
              f"{len(report.findings)} findings", flush=True)

    if args.inputs:
        report = run(args.inputs, args.seed, alloc_every=args.alloc_every, progress=progress)
        print("\n".join(report.lines()))
        findings += len(report.findings)
    if args.connections:
        sockets = asyncio.run(run_sockets(args.connections, args.seed))
        print("\n".join(sockets.lines()))
        findings += len(sockets.findings)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())

"""The replicated key-value state machine: its commands, their wire encoding, exactly-once, and
its snapshots.

Every node applies the same committed commands in the same order, so everything here must be
deterministic: no clock, no randomness, no dependence on anything but the commands applied so
far and the constructor's limits (which must be the same on every node). A malformed command is
applied as an error result and never raises, since every node applies it all the same.

Commands are msgpack arrays, one fixed layout per operation (never pickle)::

    [OP_PUT,    client, seq, ack, retry, key, value]
    [OP_DELETE, client, seq, ack, retry, key]
    [OP_CAS,    client, seq, ack, retry, key, expected, new]

``client`` is a str or nil, ``seq`` and ``ack`` ints or nil, ``retry`` a bool or nil (all nil:
no session). With a session, the machine remembers the result of every ``seq`` of that client
from ``ack`` on, so a retried write gets its first result back instead of being applied twice
(Raft dissertation §6.3). ``ack`` is the client's promise never to retry a seq below it; it lets
the machine forget. ``retry`` marks a resend whose earlier attempt may have been applied: if the
client's session was evicted meanwhile, the write is refused as STALE_SEQ (outcome unknown)
rather than applied again.

A snapshot (``capture`` then ``persist``; ``restore``) holds the whole state: the keys, the
session table (so exactly-once survives log compaction) and the last applied index. Its format is
described at ``KVCapture``.
"""

from __future__ import annotations

import bisect
import builtins
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Final

import msgpack  # type: ignore[import-untyped]

from raftly.core.state_machine import SupportsRead, SupportsWrite

OP_PUT: Final = 1
OP_DELETE: Final = 2
OP_CAS: Final = 3

DEFAULT_MAX_KEY_BYTES: Final = 4096
DEFAULT_MAX_SESSIONS: Final = 10_000
DEFAULT_SESSION_WINDOW: Final = 256
MAX_CLIENT_ID_LEN: Final = 128
_MAX_SEQ: Final = (1 << 63) - 1

# Error codes of a ``Result``; the HTTP layer maps them to status codes.
MALFORMED: Final = "malformed"
KEY_TOO_LARGE: Final = "key_too_large"
STALE_SEQ: Final = "stale_seq"


class CommandError(ValueError):
    """A command could not be encoded (raised by ``encode_*``, never by ``apply``)."""


@dataclass(frozen=True, slots=True)
class Session:
    """Who sent a write: ``seq`` increases per write, ``ack`` is the lowest seq still awaited."""

    client: str
    seq: int
    ack: int = 0
    retry: bool = False

    def __post_init__(self) -> None:
        err = _check_session(self.client, self.seq, self.ack)
        if err is not None:
            raise CommandError(err)


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: bytes


@dataclass(frozen=True, slots=True)
class Delete:
    key: str


@dataclass(frozen=True, slots=True)
class Cas:
    """Set ``key`` to ``new`` only if its current value is ``expected`` (a missing key never is)."""

    key: str
    expected: bytes
    new: bytes


Op = Put | Delete | Cas


@dataclass(frozen=True, slots=True)
class Result:
    """What ``apply`` returns for one command (and what a retried seq gets back).

    ``ok``: put - True; delete - whether the key existed; cas - whether it swapped. ``error`` is
    one of MALFORMED, KEY_TOO_LARGE, STALE_SEQ, with ``message`` for humans; ``ok`` is then False.
    """

    index: int
    ok: bool
    error: str | None = None
    message: str = ""


# -- encoding ------------------------------------------------------------------------------------


def encode(op: Op, session: Session | None = None) -> bytes:
    """The command bytes to propose for ``op``."""
    if not isinstance(op.key, str) or not op.key:
        raise CommandError("key must be a non-empty str")
    try:
        op.key.encode("utf-8")
    except UnicodeEncodeError:
        raise CommandError("key is not valid unicode (lone surrogate)") from None
    head: list[object] = (
        [session.client, session.seq, session.ack, session.retry] if session is not None
        else [None, None, None, None]
    )
    if isinstance(op, Put):
        body: list[object] = [OP_PUT, *head, op.key, bytes(op.value)]
    elif isinstance(op, Delete):
        body = [OP_DELETE, *head, op.key]
    elif isinstance(op, Cas):
        body = [OP_CAS, *head, op.key, bytes(op.expected), bytes(op.new)]
    else:  # pragma: no cover - guarded by the type checker
        raise CommandError(f"not a KV operation: {op!r}")
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return packed


def _check_session(client: object, seq: object, ack: object) -> str | None:
    if not isinstance(client, str) or not 1 <= len(client) <= MAX_CLIENT_ID_LEN:
        return f"client id must be a str of 1 to {MAX_CLIENT_ID_LEN} characters"
    # bool is an int subclass; a True seq would be a decoding accident, not a number.
    if type(seq) is not int or not 1 <= seq <= _MAX_SEQ:
        return "seq must be an int from 1 to 2**63-1"
    if type(ack) is not int or not 0 <= ack <= seq:
        return "ack must be an int from 0 to seq"
    return None


def decode(command: bytes) -> tuple[Op, Session | None]:
    """Parse and validate one command; raise CommandError naming what is wrong."""
    try:
        obj = msgpack.unpackb(command, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises several types for garbage; all mean "malformed"
        raise CommandError(f"not msgpack: {type(exc).__name__}") from None
    if not isinstance(obj, list) or len(obj) < 6:
        raise CommandError("a command is an array of at least 6 items")
    op, client, seq, ack, retry, key = obj[:6]
    session: Session | None = None
    if client is not None or seq is not None or ack is not None or retry is not None:
        err = _check_session(client, seq, ack)
        if err is None and not isinstance(retry, bool):
            err = "retry must be a bool"
        if err is not None:
            raise CommandError(err)
        assert isinstance(client, str) and isinstance(seq, int) and isinstance(ack, int)
        session = Session(client, seq, ack, bool(retry))
    if not isinstance(key, str) or not key:
        raise CommandError("key must be a non-empty str")
    rest = obj[6:]
    if type(op) is not int:
        raise CommandError("op must be an int")
    if op == OP_PUT:
        if len(rest) != 1 or not isinstance(rest[0], bytes):
            raise CommandError("put takes one bytes value")
        return Put(key, rest[0]), session
    if op == OP_DELETE:
        if rest:
            raise CommandError("delete takes no value")
        return Delete(key), session
    if op == OP_CAS:
        if len(rest) != 2 or not all(isinstance(v, bytes) for v in rest):
            raise CommandError("cas takes two bytes values")
        return Cas(key, rest[0], rest[1]), session
    raise CommandError(f"unknown op {op}")


# -- the machine ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _ClientState:
    floor: int = 0  # every seq below it is forgotten: the client promised not to retry it
    results: dict[int, Result] = field(default_factory=dict)
    # The machine's capture count when ``results`` was made: a capture taken since may share it,
    # so it is copied before its next change (sessions can hold millions of results in all).
    made_at: int = 0

    def own_results(self, captures: int) -> dict[int, Result]:
        """``results``, to change: copied first if a capture may share it."""
        if self.made_at != captures:
            self.results = dict(self.results)
            self.made_at = captures
        return self.results


class KVStateMachine:
    """Keys are non-empty str (at most ``max_key_bytes`` in UTF-8), values bytes.

    ``max_sessions`` bounds the clients remembered for exactly-once (the least recently applied
    one is forgotten first); ``session_window`` bounds the results kept per client (the lowest
    seq is forgotten first). Both, and ``max_key_bytes``, must be equal on every node.
    """

    def __init__(
        self,
        *,
        max_key_bytes: int = DEFAULT_MAX_KEY_BYTES,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        session_window: int = DEFAULT_SESSION_WINDOW,
    ) -> None:
        if max_key_bytes < 1 or max_sessions < 1 or session_window < 1:
            raise ValueError("limits must be positive")
        self.max_key_bytes = max_key_bytes
        self.max_sessions = max_sessions
        self.session_window = session_window
        self._data: dict[str, bytes] = {}
        self._sorted: list[str] | None = []  # sorted keys for prefix scans; None when stale
        self._sorted_of: dict[str, bytes] = self._data
        """The dict ``_sorted`` was made from: a restore (in the driver's worker thread) swaps
        ``_data`` while the event loop may be listing, so a scan checks it has the right one."""
        self._sessions: OrderedDict[str, _ClientState] = OrderedDict()
        self._captures = 0
        self.last_index = 0

    # -- apply ----------------------------------------------------------------------------------

    def apply(self, index: int, command: bytes) -> Result:
        self.last_index = index
        try:
            op, session = decode(command)
        except CommandError as exc:
            # Not cached under a session: a malformed command's session fields are not trusted.
            return Result(index, False, MALFORMED, str(exc))
        if session is None:
            return self._apply_op(index, op)
        state = self._sessions.get(session.client)
        if state is None and session.retry:
            # An earlier attempt may have been applied under a session since forgotten.
            return Result(index, False, STALE_SEQ,
                          f"client {session.client!r} is not remembered (its session was "
                          f"evicted); the outcome of retried seq {session.seq} is unknown")
        if state is None:
            state = self._sessions[session.client] = _ClientState(made_at=self._captures)
            if len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        else:
            self._sessions.move_to_end(session.client)
        if session.ack > state.floor:
            state.floor = session.ack
            results = state.own_results(self._captures)
            for seq in [s for s in results if s < state.floor]:
                del results[seq]
        cached = state.results.get(session.seq)
        if cached is not None:
            return cached
        if session.seq < state.floor:
            # Its result was forgotten, so whether it was applied is not known here: the caller
            # must treat this as an unknown outcome, never as a plain failure.
            return Result(index, False, STALE_SEQ,
                          f"seq {session.seq} of client {session.client!r} is below its "
                          f"window (from {state.floor}); its outcome is no longer known")
        result = self._apply_op(index, op)
        results = state.own_results(self._captures)
        results[session.seq] = result
        if len(results) > self.session_window:
            oldest = min(results)
            del results[oldest]
            state.floor = max(state.floor, oldest + 1)
        return result

    def _apply_op(self, index: int, op: Op) -> Result:
        if len(op.key.encode("utf-8")) > self.max_key_bytes:
            return Result(index, False, KEY_TOO_LARGE,
                          f"key longer than {self.max_key_bytes} bytes")
        data = self._data
        if isinstance(op, Put):
            self._set(op.key, op.value)
            return Result(index, True)
        if isinstance(op, Delete):
            if op.key in data:
                del data[op.key]
                self._sorted = None
                return Result(index, True)
            return Result(index, False)
        current = data.get(op.key)
        if current is not None and current == op.expected:
            self._set(op.key, op.new)
            return Result(index, True)
        return Result(index, False)

    def _set(self, key: str, value: bytes) -> None:
        if key not in self._data:
            self._sorted = None
        self._data[key] = value

    # -- snapshots ------------------------------------------------------------------------------

    def capture(self) -> KVCapture:
        """The state as of now, set aside in a few milliseconds per million keys.

        Keys, values and results are immutable, so only containers are copied: the key dict
        now, and each session's results only when a later apply changes them (copy on write).
        """
        self._captures += 1
        return KVCapture(self.last_index, self._data.copy(),
                         [(client, state.floor, state.results)
                          for client, state in self._sessions.items()])

    def restore(self, source: SupportsRead) -> None:
        """Replace the whole state with the snapshot in ``source`` (see ``KVCapture``).

        Raises ValueError naming what is wrong if the snapshot is malformed or does not fit this
        machine's limits; the state is then left as it was (the new one is built aside).
        """
        data, sessions, last_index = _SnapshotReader(source, self).read()
        self._sorted = None
        self._data, self._sessions, self.last_index = data, sessions, last_index

    # -- queries --------------------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        return self._data.get(key)

    def list(self, prefix: str = "", limit: int | None = None) -> builtins.list[tuple[str, bytes]]:
        """Keys starting with ``prefix``, in code point order, with values; at most ``limit``."""
        data, keys = self._data, self._sorted
        if keys is None or self._sorted_of is not data:
            keys = sorted(data)
            self._sorted, self._sorted_of = keys, data
        out: builtins.list[tuple[str, bytes]] = []
        for i in range(bisect.bisect_left(keys, prefix), len(keys)):
            if limit is not None and len(out) >= limit:
                break
            key = keys[i]
            if not key.startswith(prefix):
                break
            out.append((key, data[key]))
        return out

    def __len__(self) -> int:
        return len(self._data)

    @property
    def session_count(self) -> int:
        return len(self._sessions)


# -- snapshot format -----------------------------------------------------------------------------

SNAPSHOT_FORMAT: Final = "raftly-kv"
SNAPSHOT_VERSION: Final = 1
_HEADER_FIELDS: Final = frozenset({"format", "version", "last_index", "keys", "sessions"})
_CHUNK_KEYS: Final = 1024
_CHUNK_BYTES: Final = 1 << 20
# Values have no size limit in the machine, so neither can one decoded object; the unpacker only
# allocates as data actually arrives.
_MAX_OBJECT_BYTES: Final = (1 << 31) - 1
_RESULT_ERRORS: Final = frozenset({MALFORMED, KEY_TOO_LARGE, STALE_SEQ})


@dataclass(frozen=True, slots=True)
class KVCapture:
    """A KVStateMachine's state set aside by ``capture``; ``persist`` streams it as msgpack.

    The stream is a sequence of msgpack objects, never one blob, so a large state streams::

        {"format": "raftly-kv", "version": 1, "last_index": int, "keys": n, "sessions": m}
        {key: value, ...}    maps of at most 1024 keys or about 1 MiB: n keys in all
        [client, floor, [[seq, index, ok, error, message], ...]]    m times, least recent first

    A reader checks ``format`` and ``version`` first, so a later version may change the rest.
    Maps and sessions keep the machine's order, so equal states give equal bytes.
    """

    last_index: int
    data: dict[str, bytes]
    sessions: list[tuple[str, int, dict[int, Result]]]

    def persist(self, sink: SupportsWrite) -> None:
        packer = msgpack.Packer(use_bin_type=True)
        pending = bytearray()
        for obj in self._objects():
            pending += packer.pack(obj)
            # Gather small objects into writes of about a chunk: each write may cost the sink a
            # frame and a checksum.
            if len(pending) >= _CHUNK_BYTES:
                sink.write(bytes(pending))
                pending.clear()
        if pending:
            sink.write(bytes(pending))

    def _objects(self) -> Iterator[object]:
        yield {"format": SNAPSHOT_FORMAT, "version": SNAPSHOT_VERSION,
               "last_index": self.last_index, "keys": len(self.data),
               "sessions": len(self.sessions)}
        yield from _chunks(self.data)
        for client, floor, results in self.sessions:
            yield [client, floor,
                   [[seq, r.index, r.ok, r.error, r.message] for seq, r in results.items()]]


def _chunks(data: dict[str, bytes]) -> Iterator[dict[str, bytes]]:
    """``data`` in maps of at most _CHUNK_KEYS keys and _CHUNK_BYTES (unless one value is more)."""
    items = iter(data.items())
    while chunk := dict(islice(items, _CHUNK_KEYS)):
        if sum(map(len, chunk.values())) <= _CHUNK_BYTES:
            yield chunk  # the common case, without a Python loop per key
            continue
        part: dict[str, bytes] = {}
        size = 0
        for key, value in chunk.items():
            if part and size + len(value) > _CHUNK_BYTES:
                yield part
                part, size = {}, 0
            part[key] = value
            size += len(value)
        yield part


def _malformed(what: str) -> ValueError:
    return ValueError(f"malformed KV snapshot: {what}")


class _SnapshotReader:
    """Decodes and validates one snapshot stream into a new state, leaving the machine alone."""

    def __init__(self, source: SupportsRead, machine: KVStateMachine) -> None:
        self._unpacker = msgpack.Unpacker(
            source, raw=False, strict_map_key=True, use_list=True,
            read_size=_CHUNK_BYTES, max_buffer_size=_MAX_OBJECT_BYTES)
        self._max_key_bytes = machine.max_key_bytes
        self._max_sessions = machine.max_sessions
        self._session_window = machine.session_window

    def read(self) -> tuple[dict[str, bytes], OrderedDict[str, _ClientState], int]:
        header = self._next("the header")
        if not isinstance(header, dict) or header.get("format") != SNAPSHOT_FORMAT:
            raise _malformed(f"it does not start with a {SNAPSHOT_FORMAT!r} header")
        version = header.get("version")
        if type(version) is not int or version != SNAPSHOT_VERSION:
            raise _malformed(f"version {version!r} is not supported (only {SNAPSHOT_VERSION})")
        if header.keys() != _HEADER_FIELDS:
            raise _malformed(f"the header has fields {sorted(map(str, header))}, "
                             f"not {sorted(_HEADER_FIELDS)}")
        last_index = _count(header["last_index"], "last_index")
        n_keys = _count(header["keys"], "the key count")
        n_sessions = _count(header["sessions"], "the session count")
        if n_sessions > self._max_sessions:
            raise _malformed(f"{n_sessions} sessions, more than this machine's max_sessions "
                             f"{self._max_sessions} (limits must be equal on every node)")
        data = self._read_data(n_keys)
        sessions: OrderedDict[str, _ClientState] = OrderedDict()
        for _ in range(n_sessions):
            client, state = self._read_session(last_index)
            if client in sessions:
                raise _malformed(f"client {client!r} has two sessions")
            sessions[client] = state
        if self._unpacker.read_bytes(1):
            raise _malformed("data after the last session")
        return data, sessions, last_index

    def _next(self, what: str) -> object:
        try:
            return self._unpacker.unpack()
        except msgpack.OutOfData:
            raise _malformed(f"truncated: {what} is missing") from None
        except (msgpack.UnpackException, ValueError) as exc:
            # FormatError, StackError, BufferFull, bad UTF-8, non-str map keys: all garbage.
            raise _malformed(f"{what} is not valid msgpack ({type(exc).__name__}: {exc})"
                             ) from None

    def _read_data(self, n_keys: int) -> dict[str, bytes]:
        data: dict[str, bytes] = {}
        seen = 0
        while seen < n_keys:
            chunk = self._next(f"keys from #{seen}")
            if not isinstance(chunk, dict) or not chunk:
                raise _malformed(f"keys from #{seen}: expected a non-empty map")
            # Whole-chunk checks run in C: a million keys must restore in about a second.
            if set(map(type, chunk)) != {str} or "" in chunk:
                raise _malformed(f"keys from #{seen}: a key is not a non-empty str")
            if set(map(type, chunk.values())) != {bytes}:
                raise _malformed(f"keys from #{seen}: a value is not bytes")
            # A code point is at most 4 bytes of UTF-8: encode only when that could matter.
            if max(map(len, chunk)) * 4 > self._max_key_bytes:
                for key in chunk:
                    if len(key.encode("utf-8")) > self._max_key_bytes:
                        raise _malformed(f"key {key[:40]!r}... is longer than this machine's "
                                         f"max_key_bytes {self._max_key_bytes}")
            seen += len(chunk)
            data.update(chunk)
        if seen != n_keys:
            raise _malformed(f"{seen} keys where the header says {n_keys}")
        if len(data) != n_keys:
            raise _malformed(f"{n_keys - len(data)} keys appear twice")
        return data

    def _read_session(self, last_index: int) -> tuple[str, _ClientState]:
        entry = self._next("a session")
        if not isinstance(entry, list) or len(entry) != 3:
            raise _malformed("a session is not [client, floor, results]")
        client, floor, results = entry
        if not isinstance(client, str) or not 1 <= len(client) <= MAX_CLIENT_ID_LEN:
            raise _malformed(f"client id {client!r} is not a str of 1 to {MAX_CLIENT_ID_LEN} "
                             f"characters")
        where = f"session of client {client!r}"
        # The floor can pass the largest seq by one when that seq leaves the window.
        if type(floor) is not int or not 0 <= floor <= _MAX_SEQ + 1:
            raise _malformed(f"{where}: floor {floor!r} is not an int from 0 to 2**63")
        if not isinstance(results, list) or len(results) > self._session_window:
            raise _malformed(f"{where}: results are not a list of at most this machine's "
                             f"session_window {self._session_window}")
        state = _ClientState(floor)
        for item in results:
            seq, result = _session_result(item, floor, last_index, where)
            if seq in state.results:
                raise _malformed(f"{where}: seq {seq} has two results")
            state.results[seq] = result
        return client, state


def _count(value: object, what: str) -> int:
    if type(value) is not int or value < 0:
        raise _malformed(f"{what} {value!r} is not an int >= 0")
    return value


def _session_result(item: object, floor: int, last_index: int, where: str
                    ) -> tuple[int, Result]:
    if not isinstance(item, list) or len(item) != 5:
        raise _malformed(f"{where}: a result is not [seq, index, ok, error, message]")
    seq, index, ok, error, message = item
    if type(seq) is not int or not floor <= seq <= _MAX_SEQ:
        raise _malformed(f"{where}: seq {seq!r} is not an int from its floor {floor} to 2**63-1")
    if type(index) is not int or not 1 <= index <= last_index:
        raise _malformed(f"{where}: seq {seq} has index {index!r}, not an int from 1 to "
                         f"last_index {last_index}")
    if not isinstance(ok, bool) or not isinstance(message, str):
        raise _malformed(f"{where}: seq {seq} has a non-bool ok or a non-str message")
    if error is not None and (not isinstance(error, str) or error not in _RESULT_ERRORS or ok):
        raise _malformed(f"{where}: seq {seq} has error {error!r} (with ok={ok})")
    return seq, Result(index, ok, error, message)


__all__ = [
    "KEY_TOO_LARGE",
    "MALFORMED",
    "SNAPSHOT_FORMAT",
    "SNAPSHOT_VERSION",
    "STALE_SEQ",
    "Cas",
    "CommandError",
    "Delete",
    "KVCapture",
    "KVStateMachine",
    "Op",
    "Put",
    "Result",
    "Session",
    "decode",
    "encode",
]

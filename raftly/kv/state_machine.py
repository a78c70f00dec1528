"""The replicated key-value state machine: its commands, their wire encoding, and exactly-once.

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
"""

from __future__ import annotations

import bisect
import builtins
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

import msgpack  # type: ignore[import-untyped]

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
        self._sessions: OrderedDict[str, _ClientState] = OrderedDict()
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
            state = self._sessions[session.client] = _ClientState()
            if len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        else:
            self._sessions.move_to_end(session.client)
        if session.ack > state.floor:
            state.floor = session.ack
            for seq in [s for s in state.results if s < state.floor]:
                del state.results[seq]
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
        state.results[session.seq] = result
        if len(state.results) > self.session_window:
            oldest = min(state.results)
            del state.results[oldest]
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

    # -- queries --------------------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        return self._data.get(key)

    def list(self, prefix: str = "", limit: int | None = None) -> builtins.list[tuple[str, bytes]]:
        """Keys starting with ``prefix``, in code point order, with values; at most ``limit``."""
        if self._sorted is None:
            self._sorted = sorted(self._data)
        keys = self._sorted
        out: builtins.list[tuple[str, bytes]] = []
        for i in range(bisect.bisect_left(keys, prefix), len(keys)):
            if limit is not None and len(out) >= limit:
                break
            key = keys[i]
            if not key.startswith(prefix):
                break
            out.append((key, self._data[key]))
        return out

    def __len__(self) -> int:
        return len(self._data)

    @property
    def session_count(self) -> int:
        return len(self._sessions)


__all__ = [
    "KEY_TOO_LARGE",
    "MALFORMED",
    "STALE_SEQ",
    "Cas",
    "CommandError",
    "Delete",
    "KVStateMachine",
    "Op",
    "Put",
    "Result",
    "Session",
    "decode",
    "encode",
]

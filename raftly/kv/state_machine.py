"""The replicated key-value state machine: applying commands to the keys, their metadata, the
lease table and the watch history, with exactly-once sessions; and its read queries.

Every node applies the same committed commands in the same order, so everything here must be
deterministic: no clock, no randomness, no dependence on anything but the commands applied so
far and the constructor's limits (which must be the same on every node). A malformed command is
applied as an error result and never raises, since every node applies it all the same. The
commands and their wire layout are in ``raftly.kv.commands``.

Revisions: the store's ``revision`` is the log index of the last entry that changed a key; each
key records the revision that created it and the one that last changed it, and its ``version``
(1 when created, +1 per put). A command that changes no key (a failed CAS, a txn of gets, a lease
grant, a revoke of a lease without keys) leaves the revision alone. Each change is an ``Event``,
kept in a bounded ``History`` and handed to the ``on_events`` subscribers.

Sessions: a command with ``client``/``seq``/``ack``/``retry`` gets exactly-once. The machine
remembers the result of every ``seq`` of that client from ``ack`` on, so a retried write gets its
first result back instead of being applied twice (Raft dissertation §6.3). ``ack`` is the
client's promise never to retry a seq below it; it lets the machine forget. ``retry`` marks a
resend whose earlier attempt may have been applied: if the client's session was evicted
meanwhile, the write is refused as STALE_SEQ (outcome unknown) rather than applied again.

A snapshot (``capture`` then ``persist``; ``restore``) holds the whole state: keys with their
metadata, leases, the revision, the session table (so exactly-once survives log compaction) and
the last applied index; see ``raftly.kv.kv_snapshot``. The watch history is not in it: after a
restore the history starts at the snapshot's revision.
"""

from __future__ import annotations

import bisect
import builtins
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from raftly.core.state_machine import SupportsRead
from raftly.kv.commands import (
    MAX_CLIENT_ID_LEN,
    MAX_TXN_GET_BYTES,
    OP_CAS,
    OP_DELETE,
    OP_PUT,
    Cas,
    CommandError,
    Compare,
    Delete,
    DeleteRange,
    LeaseGrant,
    LeaseRevoke,
    Op,
    Put,
    Session,
    Txn,
    TxnDelete,
    TxnGet,
    TxnOp,
    TxnPut,
    decode,
    encode,
)
from raftly.kv.history import DELETE, PUT, Compacted, Event, History
from raftly.kv.kv_snapshot import SNAPSHOT_FORMAT, SNAPSHOT_VERSION, KVCapture, SnapshotReader
from raftly.kv.leases import LeaseInfo, LeaseTable
from raftly.kv.records import (
    DUPLICATE_KEY,
    KEY_TOO_LARGE,
    LEASE_EXISTS,
    LEASE_NOT_FOUND,
    MALFORMED,
    STALE_SEQ,
    TOO_MANY_LEASES,
    TXN_DELETE_KIND,
    TXN_GET_KIND,
    TXN_PUT_KIND,
    TXN_TOO_LARGE,
    KeyValue,
    Result,
    TxnResponse,
)
from raftly.kv.sessions import ClientState
from raftly.kv.txn import compare_holds

DEFAULT_MAX_KEY_BYTES: Final = 4096
DEFAULT_MAX_SESSIONS: Final = 10_000
DEFAULT_SESSION_WINDOW: Final = 256
DEFAULT_MAX_LEASES: Final = 10_000
DEFAULT_HISTORY_LIMIT: Final = 100_000
DEFAULT_HISTORY_BYTES: Final = 64 << 20

logger = logging.getLogger("raftly.kv.state_machine")

EventListener = Callable[[list[Event]], None]

_ONE_KEY: Final = (Put, Delete, Cas)
"""The ops of a single key. A tuple, not ``Put | Delete | Cas``: that union would be built
again on every apply (a fifth of a microsecond)."""


class KVStateMachine:
    """Keys are non-empty str (at most ``max_key_bytes`` in UTF-8), values bytes.

    ``max_sessions`` bounds the clients remembered for exactly-once (the least recently applied
    one is forgotten first); ``session_window`` bounds the results kept per client (the lowest
    seq is forgotten first); ``max_leases`` bounds the lease table. These must be equal on every
    node. ``history_limit`` and ``history_bytes`` bound the events (and their keys' and values'
    bytes) kept for watchers (they may differ between nodes: they only decide how far back a
    watch may start).
    """

    def __init__(
        self,
        *,
        max_key_bytes: int = DEFAULT_MAX_KEY_BYTES,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        session_window: int = DEFAULT_SESSION_WINDOW,
        max_leases: int = DEFAULT_MAX_LEASES,
        history_limit: int = DEFAULT_HISTORY_LIMIT,
        history_bytes: int = DEFAULT_HISTORY_BYTES,
    ) -> None:
        if min(max_key_bytes, max_sessions, session_window, max_leases, history_limit,
               history_bytes) < 1:
            raise ValueError("limits must be positive")
        self.max_key_bytes = max_key_bytes
        self.max_sessions = max_sessions
        self.session_window = session_window
        self.max_leases = max_leases
        self.history_limit = history_limit
        self.history_bytes = history_bytes
        self._data: dict[str, KeyValue] = {}
        self._sorted: list[str] | None = []  # sorted keys for prefix scans; None when stale
        self._sorted_of: dict[str, KeyValue] = self._data
        """The dict ``_sorted`` was made from: a restore (in the driver's worker thread) swaps
        ``_data`` while the event loop may be listing, so a scan checks it has the right one."""
        self._leases = LeaseTable()
        self._sessions: OrderedDict[str, ClientState] = OrderedDict()
        self._captures = 0
        self._revision = 0
        self._history = History(history_limit, max_bytes=history_bytes)
        self._events: list[Event] = []  # the events of the command being applied
        self.last_index = 0
        self.on_events: list[EventListener] = []
        """Called with the events of each apply that changed keys, after it (on the applying
        thread), when ``revision`` and the keys already show them: the watch hub subscribes
        here. A listener must not block; one that raises is logged and does not stop the
        others. A restore replaces the state without events: a subscriber that got events up
        to revision L has missed some when ``oldest_available_revision`` exceeds L + 1."""
        self.on_restore: list[Callable[[], None]] = []
        """Called right after a restore replaced the state (where its swap runs: the server
        runs it on the event loop), so a subscriber learns of the skipped revisions at once
        rather than by polling. Same rules as ``on_events``."""

    # -- apply ----------------------------------------------------------------------------------

    def apply(self, index: int, command: bytes) -> Result:
        self.last_index = index
        result = self._apply(index, command)
        if self._events:
            events, self._events = self._events, []
            self._revision = index
            self._history.add(events)
            for listener in list(self.on_events):
                try:
                    listener(events)
                except Exception:
                    logger.exception("a KV event listener failed at revision %d", index)
        return result

    def _apply(self, index: int, command: bytes) -> Result:
        try:
            op, session = decode(command)
        except CommandError as exc:
            # Not cached under a session: a malformed command's session fields are not trusted.
            return self._result(index, False, exc.code, str(exc))
        if session is None:
            return self._apply_op(index, op)
        state = self._sessions.get(session.client)
        if state is None and session.retry:
            # An earlier attempt may have been applied under a session since forgotten.
            return self._result(index, False, STALE_SEQ,
                                f"client {session.client!r} is not remembered (its session "
                                f"was evicted); the outcome of retried seq {session.seq} is "
                                f"unknown")
        if state is None:
            state = self._sessions[session.client] = ClientState(made_at=self._captures)
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
            return self._result(index, False, STALE_SEQ,
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

    def _result(self, index: int, ok: bool, error: str | None = None, message: str = "", *,
                count: int = 0, lease: int = 0, ttl: int = 0,
                responses: tuple[TxnResponse, ...] = ()) -> Result:
        # A change of this command moves the revision to ``index`` once it is applied.
        revision = index if self._events else self._revision
        return Result(index, ok, error, message, revision, count, lease, ttl, responses)

    def _apply_op(self, index: int, op: Op) -> Result:
        too_large = self._key_too_large(op)
        if too_large is not None:
            return self._result(index, False, KEY_TOO_LARGE,
                                f"key longer than {self.max_key_bytes} bytes: {too_large[:40]!r}"
                                if isinstance(op, Txn | DeleteRange)
                                else f"key longer than {self.max_key_bytes} bytes")
        if isinstance(op, Put):
            if op.lease and op.lease not in self._leases:
                return self._no_lease(index, op.lease)
            self._put(index, op.key, op.value, op.lease)
            return self._result(index, True)
        if isinstance(op, Delete):
            return self._result(index, self._delete(index, op.key))
        if isinstance(op, Cas):
            current = self._data.get(op.key)
            if current is None or current.value != op.expected:
                return self._result(index, False)
            self._put(index, op.key, op.new, current.lease)
            return self._result(index, True)
        if isinstance(op, DeleteRange):
            keys = self._keys_under(op.prefix)
            for key in keys:
                self._delete(index, key)
            return self._result(index, bool(keys), count=len(keys))
        if isinstance(op, Txn):
            return self._txn(index, op)
        if isinstance(op, LeaseGrant):
            if op.id and op.id in self._leases:
                return self._result(index, False, LEASE_EXISTS, f"lease {op.id} exists")
            if len(self._leases) >= self.max_leases:
                return self._result(index, False, TOO_MANY_LEASES,
                                    f"{self.max_leases} leases exist, the most allowed")
            # No id given: the entry's index, or the next free id above it (a client may
            # have picked that id itself; an innocent grant must not fail for it).
            lease_id = op.id or index
            while lease_id in self._leases:
                lease_id += 1
            self._leases.grant(lease_id, op.ttl, index)
            return self._result(index, True, lease=lease_id, ttl=op.ttl)
        assert isinstance(op, LeaseRevoke)
        granted = self._leases.granted(op.id) if op.id in self._leases else None
        # A revoke meant for an earlier grant of this id (an expiry revoke that committed
        # after the lease was revoked and granted again) does not touch the new lease. A grant
        # index of 0 is unknown (restored from a version 2 snapshot): matched as before.
        if granted is None or (op.grant and granted and op.grant != granted):
            return self._no_lease(index, op.id)
        keys = self._leases.revoke(op.id)
        for key in keys:
            self._delete(index, key)
        return self._result(index, True, count=len(keys), lease=op.id)

    def _no_lease(self, index: int, lease_id: int) -> Result:
        return self._result(index, False, LEASE_NOT_FOUND, f"lease {lease_id} does not exist")

    def _key_too_large(self, op: Op) -> str | None:
        """The first key (or prefix) of ``op`` longer than ``max_key_bytes``, if any."""
        limit = self.max_key_bytes
        if isinstance(op, _ONE_KEY):  # the common case, without building a list
            keys: tuple[str, ...] | builtins.list[str] = (op.key,)
        elif isinstance(op, DeleteRange):
            keys = (op.prefix,)
        elif isinstance(op, Txn):
            keys = [c.key for c in op.compare]
            keys += [o.key for o in op.success] + [o.key for o in op.failure]
        else:
            return None
        for key in keys:
            # A code point is at most 4 bytes of UTF-8: encode only when that could matter.
            if len(key) * 4 > limit and len(key.encode("utf-8")) > limit:
                return key
        return None

    def _txn(self, index: int, txn: Txn) -> Result:
        succeeded = all(compare_holds(c, self._data.get(c.key)) for c in txn.compare)
        branch = txn.success if succeeded else txn.failure
        # Check before changing anything: the branch applies whole or not at all.
        for op in branch:
            if isinstance(op, TxnPut) and op.lease and op.lease not in self._leases:
                return self._no_lease(index, op.lease)
        get_bytes = self._get_bytes(branch)
        if get_bytes > MAX_TXN_GET_BYTES:
            return self._result(index, False, TXN_TOO_LARGE,
                                f"the txn's gets would return {get_bytes} bytes of values, more "
                                f"than {MAX_TXN_GET_BYTES}")
        responses: builtins.list[TxnResponse] = []
        for op in branch:
            if isinstance(op, TxnPut):
                self._put(index, op.key, op.value, op.lease)
                responses.append(TxnResponse(TXN_PUT_KIND, True))
            elif isinstance(op, TxnDelete):
                responses.append(TxnResponse(TXN_DELETE_KIND, self._delete(index, op.key)))
            else:
                assert isinstance(op, TxnGet)
                kv = self._data.get(op.key)
                responses.append(TxnResponse(TXN_GET_KIND, kv is not None, kv))
        return self._result(index, succeeded, responses=tuple(responses))

    def _get_bytes(self, branch: tuple[TxnOp, ...]) -> int:
        """The bytes of the values ``branch``'s gets would return, counting the branch's own
        earlier writes (a branch writes a key at most once)."""
        total = 0
        written: dict[str, int] = {}
        for op in branch:
            if isinstance(op, TxnPut):
                written[op.key] = len(op.value)
            elif isinstance(op, TxnDelete):
                written[op.key] = 0
            elif op.key in written:
                total += written[op.key]
            else:
                kv = self._data.get(op.key)
                total += 0 if kv is None else len(kv.value)
        return total

    def _put(self, index: int, key: str, value: bytes, lease: int) -> None:
        old = self._data.get(key)
        if old is None:
            self._sorted = None
            kv = KeyValue(key, value, index, index, 1, lease)
        else:
            if old.lease != lease and old.lease:
                self._leases.detach(old.lease, key)
            kv = KeyValue(key, value, old.create_revision, index, old.version + 1, lease)
        if lease:
            self._leases.attach(lease, key)
        self._data[key] = kv
        self._events.append(Event(index, PUT, key, value, kv.create_revision, index, kv.version,
                                  lease))

    def _delete(self, index: int, key: str) -> bool:
        old = self._data.pop(key, None)
        if old is None:
            return False
        self._sorted = None
        if old.lease and old.lease in self._leases:  # a revoke forgets the lease first
            self._leases.detach(old.lease, key)
        self._events.append(Event(index, DELETE, key, b"", 0, index, 0, 0))
        return True

    # -- snapshots ------------------------------------------------------------------------------

    def capture(self) -> KVCapture:
        """The state as of now, set aside in a few milliseconds per million keys.

        Keys (with their metadata), values and results are immutable, so only containers are
        copied: the key dict and the lease table now, and each session's results only when a
        later apply changes them (copy on write).
        """
        self._captures += 1
        return KVCapture(self.last_index, self._revision, self._data.copy(),
                         self._leases.entries(),
                         [(client, state.floor, state.results)
                          for client, state in self._sessions.items()])

    def restore(self, source: SupportsRead) -> None:
        """Replace the whole state with the snapshot in ``source`` (see ``KVCapture``).

        Raises ValueError naming what is wrong if the snapshot is malformed or does not fit this
        machine's limits; the state is then left as it was (the new one is built aside). The
        watch history then starts at the snapshot's revision.
        """
        self.prepare_restore(source)()

    def prepare_restore(self, source: SupportsRead) -> Callable[[], None]:
        """``restore`` in two steps: read and check the snapshot now (slow: any thread), and
        return the swap that installs it (instant). The server runs the swap on the event
        loop, where applies, reads and the watch hub run, so none of them sees the state
        change in the middle of a step. Raises ValueError as ``restore`` does."""
        state = SnapshotReader(source, max_key_bytes=self.max_key_bytes,
                               max_sessions=self.max_sessions,
                               session_window=self.session_window,
                               max_leases=self.max_leases).read()

        def swap() -> None:
            history = History(self.history_limit, floor=state.revision,
                              max_bytes=self.history_bytes)
            # One statement, with no call in it: even a caller off the event loop leaves
            # readers seeing the old state or the new one (CPython switches threads only at
            # calls and backward jumps).
            (self._sorted, self._data, self._leases, self._sessions, self.last_index,
             self._revision, self._history) = (None, state.data, state.leases, state.sessions,
                                               state.last_index, state.revision, history)
            for listener in list(self.on_restore):
                try:
                    listener()
                except Exception:
                    logger.exception("a KV restore listener failed at revision %d",
                                     state.revision)

        return swap

    # -- queries --------------------------------------------------------------------------------

    @property
    def revision(self) -> int:
        """The log index of the last entry that changed a key (0: none yet)."""
        return self._revision

    def get(self, key: str) -> bytes | None:
        kv = self._data.get(key)
        return None if kv is None else kv.value

    def get_entry(self, key: str) -> KeyValue | None:
        """``key``'s value and metadata, or None if it does not exist."""
        return self._data.get(key)

    def list(self, prefix: str = "", limit: int | None = None) -> builtins.list[tuple[str, bytes]]:
        """Keys starting with ``prefix``, in code point order, with values; at most ``limit``."""
        kvs, _ = self.range(prefix, limit=limit)
        return [(kv.key, kv.value) for kv in kvs]

    def range(self, prefix: str = "", *, start_after: str = "", limit: int | None = None
              ) -> tuple[builtins.list[KeyValue], bool]:
        """Keys starting with ``prefix`` and after ``start_after``, in code point order, at most
        ``limit`` of them; and whether more follow (to page on from the last key returned)."""
        data, keys = self._data, self._sorted
        if keys is None or self._sorted_of is not data:
            keys = sorted(data)
            self._sorted, self._sorted_of = keys, data
        start = bisect.bisect_left(keys, prefix)
        if start_after:
            start = max(start, bisect.bisect_right(keys, start_after))
        out: builtins.list[KeyValue] = []
        for i in range(start, len(keys)):
            key = keys[i]
            if not key.startswith(prefix):
                break
            if limit is not None and len(out) >= limit:
                return out, True
            out.append(data[key])
        return out, False

    def _keys_under(self, prefix: str) -> builtins.list[str]:
        kvs, _ = self.range(prefix)
        return [kv.key for kv in kvs]

    def lease(self, lease_id: int) -> LeaseInfo | None:
        return self._leases.get(lease_id)

    def leases(self) -> builtins.list[LeaseInfo]:
        """Every lease, in grant order."""
        return self._leases.infos()

    def lease_entries(self) -> builtins.list[tuple[int, int, int]]:
        """(id, granted TTL, grant index) of every lease, in grant order: ``leases`` without
        the keys (a grant index of 0: unknown, restored from an older snapshot)."""
        return self._leases.entries()

    def events_since(self, revision: int, prefix: str = "") -> builtins.list[Event]:
        """Every change from ``revision`` on to a key under ``prefix``, in revision order.

        Raises Compacted when ``revision`` is older than the history kept.
        """
        return self._history.since(revision, prefix, self._revision)

    @property
    def oldest_available_revision(self) -> int:
        """The oldest revision ``events_since`` still answers for."""
        return self._history.oldest_available

    def __len__(self) -> int:
        return len(self._data)

    @property
    def session_count(self) -> int:
        return len(self._sessions)


__all__ = [
    "DEFAULT_HISTORY_BYTES",
    "DEFAULT_HISTORY_LIMIT",
    "DEFAULT_MAX_KEY_BYTES",
    "DEFAULT_MAX_LEASES",
    "DEFAULT_MAX_SESSIONS",
    "DEFAULT_SESSION_WINDOW",
    "DUPLICATE_KEY",
    "KEY_TOO_LARGE",
    "LEASE_EXISTS",
    "LEASE_NOT_FOUND",
    "MALFORMED",
    "MAX_CLIENT_ID_LEN",
    "OP_CAS",
    "OP_DELETE",
    "OP_PUT",
    "SNAPSHOT_FORMAT",
    "SNAPSHOT_VERSION",
    "STALE_SEQ",
    "TOO_MANY_LEASES",
    "TXN_TOO_LARGE",
    "Cas",
    "CommandError",
    "Compacted",
    "Compare",
    "Delete",
    "DeleteRange",
    "Event",
    "EventListener",
    "KVCapture",
    "KVStateMachine",
    "KeyValue",
    "LeaseGrant",
    "LeaseInfo",
    "LeaseRevoke",
    "Op",
    "Put",
    "Result",
    "Session",
    "Txn",
    "TxnDelete",
    "TxnGet",
    "TxnPut",
    "TxnResponse",
    "decode",
    "encode",
]

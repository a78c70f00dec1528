"""The KV state machine's snapshot format: ``KVCapture`` streams a captured state as msgpack,
``SnapshotReader`` decodes and validates one (version 3, or the older versions 2 and 1) into
a new state without touching the machine's.

Version 3 is a sequence of msgpack objects, never one blob, so a large state streams::

    {"format": "raftly-kv", "version": 3, "last_index": int, "revision": int,
     "keys": n, "leases": l, "sessions": m}
    [id, ttl, grant_index]                            l times, in grant order
    {key: [value, create_revision, mod_revision, version, lease], ...}
                                   maps of at most 1024 keys or about 1 MiB: n keys in all
    [client, floor, [result, ...]]                    m times, least recent first

where a result is ``[seq, index, ok, error, message, revision, count, lease, ttl, responses]``
and a txn response ``[kind, ok, kv]``, ``kv`` nil or ``[key, value, create_revision,
mod_revision, version, lease]``. A lease's keys are the keys naming it.

Version 2 is version 3 with leases of ``[id, ttl]``: restored, their grant index is 0
(unknown; an expiry revoke naming a grant index then matches them whatever it names).

Version 1 (before revisions and leases) has no "revision" or "leases" in its header, maps of
``{key: value}`` and results of ``[seq, index, ok, error, message]``. Restored, its keys get
version 1 and the snapshot's last index as create and mod revision (the newest they can be),
which is also the store's revision.

A reader checks ``format`` and ``version`` first, so a later version may change the rest. Maps
and sessions keep the machine's order, so equal states give equal bytes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Final

import msgpack  # type: ignore[import-untyped]

from raftly.core.state_machine import SupportsRead, SupportsWrite
from raftly.kv.commands import MAX_CLIENT_ID_LEN, MAX_INT, MAX_LEASE_TTL, int_in
from raftly.kv.leases import LeaseTable
from raftly.kv.records import (
    ERROR_CODES,
    TXN_DELETE_KIND,
    TXN_GET_KIND,
    TXN_PUT_KIND,
    KeyValue,
    Result,
    TxnResponse,
)
from raftly.kv.sessions import ClientState

SNAPSHOT_FORMAT: Final = "raftly-kv"
SNAPSHOT_VERSION: Final = 3
_HEADER_FIELDS: Final = {
    1: frozenset({"format", "version", "last_index", "keys", "sessions"}),
    2: frozenset({"format", "version", "last_index", "revision", "keys", "leases", "sessions"}),
}
_HEADER_FIELDS[3] = _HEADER_FIELDS[2]
_CHUNK_KEYS: Final = 1024
_CHUNK_BYTES: Final = 1 << 20
# Values have no size limit in the machine, so neither can one decoded object; the unpacker only
# allocates as data actually arrives.
_MAX_OBJECT_BYTES: Final = (1 << 31) - 1
_TXN_KINDS: Final = frozenset({TXN_PUT_KIND, TXN_DELETE_KIND, TXN_GET_KIND})


@dataclass(frozen=True, slots=True)
class KVCapture:
    """A KVStateMachine's state set aside by ``capture``; ``persist`` streams it (version 3)."""

    last_index: int
    revision: int
    data: dict[str, KeyValue]
    leases: list[tuple[int, int, int]]
    """(id, ttl, grant index) in grant order."""
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
               "last_index": self.last_index, "revision": self.revision,
               "keys": len(self.data), "leases": len(self.leases),
               "sessions": len(self.sessions)}
        for lease_id, ttl, granted in self.leases:
            yield [lease_id, ttl, granted]
        for chunk in _chunks(self.data):
            yield {kv.key: [kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease]
                   for kv in chunk}
        for client, floor, results in self.sessions:
            yield [client, floor, [_encode_result(seq, r) for seq, r in results.items()]]


def _encode_result(seq: int, r: Result) -> list[object]:
    return [seq, r.index, r.ok, r.error, r.message, r.revision, r.count, r.lease, r.ttl,
            [[t.kind, t.ok, _encode_kv(t.kv)] for t in r.responses]]


def _encode_kv(kv: KeyValue | None) -> list[object] | None:
    if kv is None:
        return None
    return [kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease]


def _chunks(data: dict[str, KeyValue]) -> Iterator[list[KeyValue]]:
    """``data`` in lists of at most _CHUNK_KEYS keys and _CHUNK_BYTES of values (unless one
    value is more)."""
    values = iter(data.values())
    while chunk := list(islice(values, _CHUNK_KEYS)):
        part: list[KeyValue] = []
        size = 0
        for kv in chunk:
            if part and size + len(kv.value) > _CHUNK_BYTES:
                yield part
                part, size = [], 0
            part.append(kv)
            size += len(kv.value)
        yield part


def _malformed(what: str) -> ValueError:
    return ValueError(f"malformed KV snapshot: {what}")


@dataclass(slots=True)
class RestoredState:
    """A snapshot's state, decoded and validated, for the machine to take over whole."""

    data: dict[str, KeyValue]
    leases: LeaseTable
    sessions: OrderedDict[str, ClientState]
    last_index: int
    revision: int


CHECKED: Final = KeyValue("", b"", 1, 1, 1)
"""The value of every key read with ``keep_values=False``."""


class SnapshotReader:
    """Decodes and validates one snapshot stream into a new state, against a machine's limits
    (which must be equal on every node)."""

    def __init__(self, source: SupportsRead, *, max_key_bytes: int, max_sessions: int,
                 session_window: int, max_leases: int) -> None:
        self._unpacker = msgpack.Unpacker(
            source, raw=False, strict_map_key=True, use_list=True,
            read_size=_CHUNK_BYTES, max_buffer_size=_MAX_OBJECT_BYTES)
        self._max_key_bytes = max_key_bytes
        self._max_sessions = max_sessions
        self._session_window = session_window
        self._max_leases = max_leases
        self._keep = True

    def read(self, *, keep_values: bool = True) -> RestoredState:
        """The decoded state. ``keep_values=False`` (checking a backup) runs every check but
        keeps only the key names (to find duplicates) and the counts: each key's value in
        ``data`` is then the shared placeholder ``CHECKED``, so a check needs memory for the
        names, not the values."""
        self._keep = keep_values
        header = self._next("the header")
        if not isinstance(header, dict) or header.get("format") != SNAPSHOT_FORMAT:
            raise _malformed(f"it does not start with a {SNAPSHOT_FORMAT!r} header")
        version = header.get("version")
        if type(version) is not int or version not in _HEADER_FIELDS:
            raise _malformed(f"version {version!r} is not supported (only 1 to 3)")
        fields = _HEADER_FIELDS[version]
        if header.keys() != fields:
            raise _malformed(f"the header has fields {sorted(map(str, header))}, "
                             f"not {sorted(fields)}")
        last_index = _count(header["last_index"], "last_index")
        n_keys = _count(header["keys"], "the key count")
        n_sessions = _count(header["sessions"], "the session count")
        if n_sessions > self._max_sessions:
            raise _malformed(f"{n_sessions} sessions, more than this machine's max_sessions "
                             f"{self._max_sessions} (limits must be equal on every node)")
        leases = LeaseTable()
        if version == 1:
            if n_keys and not last_index:
                raise _malformed("keys with last_index 0 (a key needs an applied entry)")
            revision = last_index
            data = self._read_data_v1(n_keys, last_index)
        else:
            revision = _count(header["revision"], "the revision")
            if revision > last_index:
                raise _malformed(f"revision {revision} is past last_index {last_index}")
            n_leases = _count(header["leases"], "the lease count")
            if n_leases > self._max_leases:
                raise _malformed(f"{n_leases} leases, more than this machine's max_leases "
                                 f"{self._max_leases} (limits must be equal on every node)")
            for _ in range(n_leases):
                self._read_lease(leases, last_index, with_grant=version >= 3)
            data = self._read_data_v2(n_keys, revision, leases)
        sessions: OrderedDict[str, ClientState] = OrderedDict()
        for _ in range(n_sessions):
            client, state = self._read_session(last_index, version)
            if client in sessions:
                raise _malformed(f"client {client!r} has two sessions")
            sessions[client] = state
        if self._unpacker.read_bytes(1):
            raise _malformed("data after the last session")
        return RestoredState(data, leases, sessions, last_index, revision)

    def _next(self, what: str) -> object:
        try:
            return self._unpacker.unpack()
        except msgpack.OutOfData:
            raise _malformed(f"truncated: {what} is missing") from None
        except (msgpack.UnpackException, ValueError) as exc:
            # FormatError, StackError, BufferFull, bad UTF-8, non-str map keys: all garbage.
            raise _malformed(f"{what} is not valid msgpack ({type(exc).__name__}: {exc})"
                             ) from None

    def _read_lease(self, leases: LeaseTable, last_index: int, *, with_grant: bool) -> None:
        entry = self._next("a lease")
        if not isinstance(entry, list) or len(entry) != (3 if with_grant else 2):
            raise _malformed("a lease is not " + ("[id, ttl, grant_index]" if with_grant
                                                  else "[id, ttl]"))
        lease_id, ttl = entry[:2]
        if type(lease_id) is not int or not 1 <= lease_id <= MAX_INT:
            raise _malformed(f"lease id {lease_id!r} is not an int from 1 to 2**63-1")
        if type(ttl) is not int or not 1 <= ttl <= MAX_LEASE_TTL:
            raise _malformed(f"lease {lease_id}: ttl {ttl!r} is not an int from 1 to "
                             f"{MAX_LEASE_TTL}")
        granted = _int(entry[2], 0, last_index, f"lease {lease_id}: grant index") \
            if with_grant else 0
        if lease_id in leases:
            raise _malformed(f"lease {lease_id} appears twice")
        leases.grant(lease_id, ttl, granted)

    def _read_chunks(self, n_keys: int) -> Iterator[dict[str, object]]:
        """The key maps up to ``n_keys`` keys, each with valid keys (values unchecked)."""
        seen = 0
        while seen < n_keys:
            chunk = self._next(f"keys from #{seen}")
            if not isinstance(chunk, dict) or not chunk:
                raise _malformed(f"keys from #{seen}: expected a non-empty map")
            # Whole-chunk checks run in C: a million keys must restore in about a second.
            if set(map(type, chunk)) != {str} or "" in chunk:
                raise _malformed(f"keys from #{seen}: a key is not a non-empty str")
            # A code point is at most 4 bytes of UTF-8: encode only when that could matter.
            if max(map(len, chunk)) * 4 > self._max_key_bytes:
                for key in chunk:
                    if len(key.encode("utf-8")) > self._max_key_bytes:
                        raise _malformed(f"key {key[:40]!r}... is longer than this machine's "
                                         f"max_key_bytes {self._max_key_bytes}")
            yield chunk
            seen += len(chunk)
        if seen != n_keys:
            raise _malformed(f"{seen} keys where the header says {n_keys}")

    def _read_data_v1(self, n_keys: int, last_index: int) -> dict[str, KeyValue]:
        data: dict[str, KeyValue] = {}
        for chunk in self._read_chunks(n_keys):
            if set(map(type, chunk.values())) != {bytes}:
                raise _malformed(f"keys from #{len(data)}: a value is not bytes")
            for key, value in chunk.items():
                assert isinstance(value, bytes)
                data[key] = KeyValue(key, value, last_index, last_index, 1) if self._keep \
                    else CHECKED
        return _no_duplicates(data, n_keys)

    def _read_data_v2(self, n_keys: int, revision: int, leases: LeaseTable
                      ) -> dict[str, KeyValue]:
        data: dict[str, KeyValue] = {}
        for chunk in self._read_chunks(n_keys):
            for key, entry in chunk.items():
                # The checks of _key_value inline (it then names what is wrong): a million
                # keys must restore in a few seconds.
                if type(entry) is list and len(entry) == 5:
                    value, create, mod, version, lease = entry
                if (type(entry) is list and len(entry) == 5 and type(value) is bytes
                        and type(create) is int and type(mod) is int and type(version) is int
                        and type(lease) is int and 1 <= create <= mod <= revision
                        and 1 <= version <= MAX_INT and 0 <= lease <= MAX_INT):
                    kv = KeyValue(key, value, create, mod, version, lease)
                else:
                    kv = _key_value(key, entry, revision, f"key {key[:40]!r}")
                if kv.lease:
                    if kv.lease not in leases:
                        raise _malformed(f"key {key[:40]!r} names lease {kv.lease}, which is "
                                         f"not in the snapshot")
                    leases.attach(kv.lease, key)
                data[key] = kv if self._keep else CHECKED
        return _no_duplicates(data, n_keys)

    def _read_session(self, last_index: int, version: int) -> tuple[str, ClientState]:
        entry = self._next("a session")
        if not isinstance(entry, list) or len(entry) != 3:
            raise _malformed("a session is not [client, floor, results]")
        client, floor, results = entry
        if not isinstance(client, str) or not 1 <= len(client) <= MAX_CLIENT_ID_LEN:
            raise _malformed(f"client id {client!r} is not a str of 1 to {MAX_CLIENT_ID_LEN} "
                             f"characters")
        where = f"session of client {client!r}"
        # The floor can pass the largest seq by one when that seq leaves the window.
        if type(floor) is not int or not 0 <= floor <= MAX_INT + 1:
            raise _malformed(f"{where}: floor {floor!r} is not an int from 0 to 2**63")
        if not isinstance(results, list) or len(results) > self._session_window:
            raise _malformed(f"{where}: results are not a list of at most this machine's "
                             f"session_window {self._session_window}")
        state = ClientState(floor)
        for item in results:
            seq, result = _session_result(item, floor, last_index, version, where)
            if seq in state.results:
                raise _malformed(f"{where}: seq {seq} has two results")
            state.results[seq] = result
        return client, state


def _no_duplicates(data: dict[str, KeyValue], n_keys: int) -> dict[str, KeyValue]:
    if len(data) != n_keys:
        raise _malformed(f"{n_keys - len(data)} keys appear twice")
    return data


def _count(value: object, what: str) -> int:
    if type(value) is not int or value < 0:
        raise _malformed(f"{what} {value!r} is not an int >= 0")
    return value


def _int(value: object, low: int, high: int, what: str) -> int:
    if not int_in(value, low, high):
        raise _malformed(f"{what} {value!r} is not an int from {low} to {high}")
    assert isinstance(value, int)
    return value


def _key_value(key: object, entry: object, revision: int, where: str) -> KeyValue:
    """A key's ``[value, create_revision, mod_revision, version, lease]``, checked."""
    if not isinstance(entry, list) or len(entry) != 5 or not isinstance(entry[0], bytes):
        raise _malformed(f"{where} is not [bytes value, create_revision, mod_revision, "
                         f"version, lease]")
    if not isinstance(key, str) or not key:
        raise _malformed(f"{where}: the key is not a non-empty str")
    value, create, mod, version, lease = entry
    create = _int(create, 1, revision, f"{where}: create_revision")
    mod = _int(mod, create, revision, f"{where}: mod_revision")
    version = _int(version, 1, MAX_INT, f"{where}: version")
    lease = _int(lease, 0, MAX_INT, f"{where}: lease")
    return KeyValue(key, value, create, mod, version, lease)


def _session_result(item: object, floor: int, last_index: int, version: int, where: str
                    ) -> tuple[int, Result]:
    size = 5 if version == 1 else 10
    if not isinstance(item, list) or len(item) != size:
        raise _malformed(f"{where}: a result is not [seq, index, ok, error, message"
                         + ("]" if version == 1 else ", revision, count, lease, ttl, responses]"))
    seq, index, ok, error, message = item[:5]
    if type(seq) is not int or not floor <= seq <= MAX_INT:
        raise _malformed(f"{where}: seq {seq!r} is not an int from its floor {floor} to 2**63-1")
    if type(index) is not int or not 1 <= index <= last_index:
        raise _malformed(f"{where}: seq {seq} has index {index!r}, not an int from 1 to "
                         f"last_index {last_index}")
    if not isinstance(ok, bool) or not isinstance(message, str):
        raise _malformed(f"{where}: seq {seq} has a non-bool ok or a non-str message")
    if error is not None and (not isinstance(error, str) or error not in ERROR_CODES or ok):
        raise _malformed(f"{where}: seq {seq} has error {error!r} (with ok={ok})")
    if version == 1:
        return seq, Result(index, ok, error, message)
    where = f"{where}: seq {seq}"
    revision = _int(item[5], 0, index, f"{where}: revision")
    count = _int(item[6], 0, MAX_INT, f"{where}: count")
    lease = _int(item[7], 0, MAX_INT, f"{where}: lease")
    ttl = _int(item[8], 0, MAX_LEASE_TTL, f"{where}: ttl")
    responses = item[9]
    if not isinstance(responses, list):
        raise _malformed(f"{where}: responses are not a list")
    return seq, Result(index, ok, error, message, revision, count, lease, ttl,
                       tuple(_txn_response(r, revision, where) for r in responses))


def _txn_response(item: object, revision: int, where: str) -> TxnResponse:
    if not isinstance(item, list) or len(item) != 3:
        raise _malformed(f"{where}: a txn response is not [kind, ok, kv]")
    kind, ok, kv = item
    if kind not in _TXN_KINDS or not isinstance(ok, bool):
        raise _malformed(f"{where}: a txn response has kind {kind!r} and ok {ok!r}")
    if kv is None:
        return TxnResponse(kind, ok)
    if kind != TXN_GET_KIND or not isinstance(kv, list) or len(kv) != 6:
        raise _malformed(f"{where}: a txn response's kv is not nil or (for a get) [key, value, "
                         f"create_revision, mod_revision, version, lease]")
    return TxnResponse(kind, ok, _key_value(kv[0], kv[1:], revision, f"{where}: a txn get"))


__all__ = ["SNAPSHOT_FORMAT", "SNAPSHOT_VERSION", "KVCapture", "RestoredState",
           "SnapshotReader"]

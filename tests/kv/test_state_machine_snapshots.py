"""KVStateMachine snapshots: round trips, exactly-once across a restore, capture isolation,
streaming, determinism against one-by-one application, and malformed snapshots refused."""

from __future__ import annotations

import io

import msgpack  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kv_helpers import Applier

from raftly.core.state_machine import supports_snapshots
from raftly.kv.kv_snapshot import CHECKED, SnapshotReader
from raftly.kv.leases import LeaseInfo
from raftly.kv.state_machine import (
    KEY_TOO_LARGE,
    LEASE_NOT_FOUND,
    OP_PUT,
    STALE_SEQ,
    Cas,
    Compare,
    Delete,
    DeleteRange,
    KeyValue,
    KVStateMachine,
    LeaseGrant,
    LeaseRevoke,
    Put,
    Result,
    Session,
    Txn,
    TxnDelete,
    TxnGet,
    TxnPut,
    encode,
)


def snapshot_of(sm: KVStateMachine) -> bytes:
    sink = io.BytesIO()
    sm.capture().persist(sink)
    return sink.getvalue()


def restored(snapshot: bytes, **limits: int) -> KVStateMachine:
    sm = KVStateMachine(**limits)
    sm.restore(io.BytesIO(snapshot))
    return sm


def populated() -> Applier:
    """A machine with keys, a deleted key, a key-too-large result and sessions with acks."""
    a = Applier(KVStateMachine(max_key_bytes=8, max_sessions=3, session_window=4))
    a(Put("a", b"1"), Session("c1", 1))
    a(Put("b", b"\x00" * 50), Session("c2", 1))
    a(Put("toolong-key", b"x"), Session("c2", 2))
    a(Put("gone", b"x"))
    a(Delete("gone"), Session("c1", 2, ack=2))
    a(Cas("a", b"1", b"2"), Session("ключ", 7, ack=5))
    a(b"\xc1")  # malformed: applied as an error, still advances the index
    return a


def test_machine_has_the_snapshot_hooks() -> None:
    assert supports_snapshots(KVStateMachine())


def test_round_trip_restores_keys_sessions_and_last_index() -> None:
    a = populated()
    snapshot = snapshot_of(a.sm)
    b = restored(snapshot, max_key_bytes=8, max_sessions=3, session_window=4)
    assert b.list() == a.sm.list() == [("a", b"2"), ("b", b"\x00" * 50)]
    assert b.last_index == a.sm.last_index == 7
    assert b.session_count == 3
    assert snapshot_of(b) == snapshot, "a restored machine snapshots to the same bytes"
    # Both answer the same from here on, including the cached key-too-large result.
    for sm in (a.sm, b):
        assert sm.apply(8, encode(Put("toolong-key", b"x"), Session("c2", 2))) == Result(
            3, False, KEY_TOO_LARGE, "key longer than 8 bytes", revision=2)
        sm.apply(9, encode(Put("k", b"v"), Session("new", 1)))  # evicts "c1", least recent
        assert sm.apply(10, encode(Put("gone", b""), Session("c1", 3, retry=True))).error == (
            STALE_SEQ)
    assert snapshot_of(a.sm) == snapshot_of(b)


def test_empty_machine_round_trips() -> None:
    b = restored(snapshot_of(KVStateMachine()))
    assert len(b) == 0 and b.last_index == 0 and b.session_count == 0


def test_restore_replaces_the_whole_previous_state() -> None:
    b = populated().sm
    b.restore(io.BytesIO(snapshot_of(KVStateMachine())))
    assert b.list() == [] and b.last_index == 0 and b.session_count == 0
    assert b.get("a") is None


def test_retry_after_restore_is_answered_from_the_session_table_not_reapplied() -> None:
    a = Applier()
    first = a(Cas("k", b"", b"x"), Session("c", 1))  # fails: k is missing
    a(Put("k", b""))  # a re-application of seq 1 would now swap
    put = a(Put("n", b"1"), Session("c", 2))
    a(Put("n", b"2"))
    b = Applier(restored(snapshot_of(a.sm)))
    b.index = a.index
    assert b(Cas("k", b"", b"x"), Session("c", 1, retry=True)) == first
    assert b(Put("n", b"1"), Session("c", 2, retry=True)) == put
    assert b.sm.get("k") == b"" and b.sm.get("n") == b"2"


def test_session_floor_and_eviction_order_survive_a_restore() -> None:
    a = Applier(KVStateMachine(max_sessions=2, session_window=2))
    a(Put("k", b"1"), Session("old", 1))
    a(Put("k", b"2"), Session("young", 1))
    a(Put("k", b"3"), Session("old", 2))  # "young" is now the least recently applied
    a(Put("k", b"4"), Session("old", 3))  # seq 1 leaves old's window of 2
    b = Applier(restored(snapshot_of(a.sm), max_sessions=2, session_window=2))
    b.index = a.index
    b(Put("x", b""), Session("new", 1))  # evicts "young", not "old"
    assert b(Put("k", b"2"), Session("young", 1, retry=True)).error == STALE_SEQ
    assert b(Put("k", b"1"), Session("old", 1)).error == STALE_SEQ
    assert b(Put("k", b"4"), Session("old", 3)).index == 4
    assert b.sm.get("k") == b"4"


def test_applies_after_capture_do_not_leak_into_the_persisted_stream() -> None:
    a = populated()
    expected = snapshot_of(a.sm)
    capture = a.sm.capture()
    a(Put("a", b"changed"), Session("c1", 3))  # adds to an existing session's results
    a(Put("fresh", b"v"), Session("c3", 1))  # a new session, evicting one
    a(Delete("b"), Session("ключ", 9, ack=9))  # raises a floor, forgets results
    a(Put("more", b"v"))
    sink = io.BytesIO()
    capture.persist(sink)
    assert sink.getvalue() == expected


def test_each_of_several_outstanding_captures_holds_its_own_point_in_time() -> None:
    a = Applier(KVStateMachine(session_window=2))
    points = []
    for seq in range(1, 6):  # each apply changes client c's results (and evicts from seq 3)
        points.append((a.sm.capture(), snapshot_of(a.sm)))
        a(Put("k", bytes([seq])), Session("c", seq))
        if seq % 2:
            points.append((a.sm.capture(), snapshot_of(a.sm)))  # two captures, no apply between
    for capture, expected in points:
        sink = io.BytesIO()
        capture.persist(sink)
        assert sink.getvalue() == expected


def test_two_machines_restoring_one_snapshot_reach_the_same_state() -> None:
    snapshot = snapshot_of(populated().sm)
    limits = {"max_key_bytes": 8, "max_sessions": 3, "session_window": 4}
    b, c = restored(snapshot, **limits), restored(snapshot, **limits)
    assert snapshot_of(b) == snapshot_of(c) == snapshot


class RecordingSink:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.writes.append(data)
        return len(data)


def test_persist_streams_in_bounded_writes_and_maps() -> None:
    a = Applier()
    for i in range(30_000):
        a(Put(f"key-{i:08d}", bytes(100)))
    for i in range(3):
        a(Put(f"big-{i}", bytes(700_000)))  # large values go in smaller maps
    sink = RecordingSink()
    a.sm.capture().persist(sink)
    assert len(sink.writes) >= 3
    assert max(map(len, sink.writes)) < 3 << 20, "writes of about 1 MiB, not the whole state"
    objects = list(msgpack.Unpacker(io.BytesIO(b"".join(sink.writes)), raw=False))
    maps = objects[1:]
    assert all(len(m) <= 1024 for m in maps)
    assert all(len(m) == 1 or sum(map(len, m.values())) <= 1 << 20 for m in maps)
    b = restored(b"".join(sink.writes))
    assert b.list() == a.sm.list()


class ShortReads:
    """A source returning at most a few bytes per read, as sockets and pipes may."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self._buf.read(7 if n < 0 else min(n, 7))


def test_restore_handles_short_reads() -> None:
    a = populated()
    b = KVStateMachine(max_key_bytes=8, max_sessions=3, session_window=4)
    b.restore(ShortReads(snapshot_of(a.sm)))
    assert snapshot_of(b) == snapshot_of(a.sm)


# -- determinism: restore == applying the prefix one by one ------------------------------------

KV_OPS = st.one_of(
    st.builds(Put, st.sampled_from(["a", "b", "long-key"]), st.binary(max_size=2)),
    st.builds(Delete, st.sampled_from(["a", "b"])),
    st.builds(Cas, st.sampled_from(["a", "b"]), st.binary(max_size=1), st.binary(max_size=1)),
)
SESSIONS = st.builds(lambda client, seq, ack, retry: Session(client, seq, min(ack, seq), retry),
                     st.sampled_from(["w", "x", "y", "z"]), st.integers(1, 8), st.integers(0, 8),
                     st.sampled_from([False, False, True]))
COMMANDS = st.one_of(
    # Sessions twice over: their table (eviction order, floors, windows) is the intricate state.
    st.builds(encode, KV_OPS, SESSIONS),
    st.builds(encode, KV_OPS, SESSIONS),
    st.builds(encode, KV_OPS),
    st.binary(max_size=4),  # mostly malformed
)
LIMITS = {"max_key_bytes": 4, "max_sessions": 3, "session_window": 3, "max_leases": 3}


@given(st.lists(COMMANDS, max_size=40), st.lists(COMMANDS, max_size=20),
       st.lists(COMMANDS, max_size=20))
@settings(max_examples=500, deadline=None)
def test_restored_machine_answers_like_one_that_applied_the_prefix(
        prefix: list[bytes], after_capture: list[bytes], suffix: list[bytes]) -> None:
    live, reference = KVStateMachine(**LIMITS), KVStateMachine(**LIMITS)
    for index, command in enumerate(prefix, 1):
        live.apply(index, command)
        reference.apply(index, command)
    capture = live.capture()
    for index, command in enumerate(after_capture, len(prefix) + 1):
        live.apply(index, command)  # must not leak into the capture
    sink = io.BytesIO()
    capture.persist(sink)
    fresh = restored(sink.getvalue(), **LIMITS)
    assert snapshot_of(fresh) == snapshot_of(reference) == sink.getvalue()
    for index, command in enumerate(suffix, len(prefix) + 1):
        assert fresh.apply(index, command) == reference.apply(index, command)
    assert fresh.list() == reference.list()
    assert snapshot_of(fresh) == snapshot_of(reference)


# -- malformed snapshots -----------------------------------------------------------------------


def pack(*objects: object) -> bytes:
    return b"".join(msgpack.packb(o, use_bin_type=True) for o in objects)


def header(last_index: int = 5, keys: int = 0, sessions: int = 0, **changes: object) -> dict:
    fields: dict[str, object] = {"format": "raftly-kv", "version": 1, "last_index": last_index,
                                 "keys": keys, "sessions": sessions}
    fields.update(changes)
    return fields


def session(client: object = "c", floor: object = 0, *results: object) -> list[object]:
    return [client, floor, list(results)]


GOOD_RESULT = [1, 3, True, None, ""]

MALFORMED_SNAPSHOTS = {
    "empty": (b"", "truncated: the header"),
    "garbage": (b"\xc1", "not valid msgpack"),
    "header not a map": (pack([1]), "does not start with a 'raftly-kv' header"),
    "other format": (pack(header(format="etcd")), "'raftly-kv' header"),
    "newer version": (pack(header(version=4)), "version 4 is not supported"),
    "bool version": (pack(header(version=True)), "version True is not supported"),
    "extra header field": (pack(header(extra=1)), "the header has fields"),
    "bytes header field": (pack({**header(), b"keys": 1}), "the header has fields"),
    "missing header field": (pack({"format": "raftly-kv", "version": 1}), "header has fields"),
    "negative last index": (pack(header(last_index=-1)), "last_index -1"),
    "str key count": (pack(header(keys="2")), "key count '2'"),
    "too many sessions": (pack(header(sessions=4)), "more than this machine's max_sessions 3"),
    "missing keys": (pack(header(keys=2), {"a": b"1"}), "truncated: keys from #1"),
    "more keys than said": (pack(header(keys=1), {"a": b"1", "b": b""}), "2 keys where"),
    "duplicate key": (pack(header(keys=2), {"a": b"1"}, {"a": b"2"}), "1 keys appear twice"),
    "keys not a map": (pack(header(keys=1), [["a", b"1"]]), "expected a non-empty map"),
    "empty map": (pack(header(keys=1), {}), "expected a non-empty map"),
    "bytes key": (pack(header(keys=1), {b"a": b"1"}), "a key is not a non-empty str"),
    "empty key": (pack(header(keys=1), {"": b"1"}), "a key is not a non-empty str"),
    "int map key": (pack(header(keys=1)) + b"\x81\x01\xc4\x00", "not valid msgpack"),
    "bad utf-8 key": (pack(header(keys=1)) + b"\x81\xa2\xff\xfe\xc4\x00", "not valid msgpack"),
    "str value": (pack(header(keys=1), {"a": "1"}), "a value is not bytes"),
    "ext value": (pack(header(keys=1), {"a": msgpack.ExtType(1, b"x")}), "a value is not bytes"),
    "key too long": (pack(header(keys=1), {"k" * 5: b""}), "max_key_bytes 4"),
    "key too long in utf-8": (pack(header(keys=1), {"ключ": b""}), "max_key_bytes 4"),
    "missing session": (pack(header(sessions=1)), "truncated: a session"),
    "session not a list": (pack(header(sessions=1), {"c": 0}), "not [client, floor, results]"),
    "short session": (pack(header(sessions=1), ["c", 0]), "not [client, floor, results]"),
    "int client": (pack(header(sessions=1), session(7)), "client id 7"),
    "empty client": (pack(header(sessions=1), session("")), "client id ''"),
    "long client": (pack(header(sessions=1), session("c" * 129)), "1 to 128 characters"),
    "negative floor": (pack(header(sessions=1), session("c", -1)), "floor -1"),
    "bool floor": (pack(header(sessions=1), session("c", False)), "floor False"),
    "huge floor": (pack(header(sessions=1), session("c", (1 << 63) + 1)), "0 to 2**63"),
    "results not a list": (pack(header(sessions=1), ["c", 0, {}]), "results are not a list"),
    "window overflow": (pack(header(sessions=1), session("c", 0, *[[s, 1, True, None, ""]
                                                                    for s in (1, 2, 3, 4)])),
                        "session_window 3"),
    "short result": (pack(header(sessions=1), session("c", 0, [1, 3, True])),
                     "a result is not [seq, index, ok, error, message]"),
    "seq below floor": (pack(header(sessions=1), session("c", 2, GOOD_RESULT)), "seq 1 is not"),
    "bool seq": (pack(header(sessions=1), session("c", 0, [True, 3, True, None, ""])),
                 "seq True"),
    "index zero": (pack(header(sessions=1), session("c", 0, [1, 0, True, None, ""])),
                   "has index 0"),
    "index past last": (pack(header(sessions=1), session("c", 0, [1, 6, True, None, ""])),
                        "has index 6, not an int from 1 to last_index 5"),
    "int ok": (pack(header(sessions=1), session("c", 0, [1, 3, 1, None, ""])), "non-bool ok"),
    "bytes message": (pack(header(sessions=1), session("c", 0, [1, 3, True, None, b""])),
                      "non-str message"),
    "unknown error": (pack(header(sessions=1), session("c", 0, [1, 3, False, "boom", ""])),
                      "error 'boom'"),
    "error yet ok": (pack(header(sessions=1), session("c", 0, [1, 3, True, STALE_SEQ, ""])),
                     "with ok=True"),
    "duplicate seq": (pack(header(sessions=1), session("c", 0, GOOD_RESULT, GOOD_RESULT)),
                      "seq 1 has two results"),
    "duplicate client": (pack(header(sessions=2), session("c"), session("c")),
                         "client 'c' has two sessions"),
    "trailing object": (pack(header(), session()), "data after the last session"),
    "trailing garbage": (pack(header()) + b"\xc1", "data after the last session"),
    "trailing partial": (pack(header()) + b"\x92", "data after the last session"),
}


@pytest.mark.parametrize("name", list(MALFORMED_SNAPSHOTS))
def test_malformed_snapshot_is_refused_and_changes_nothing(name: str) -> None:
    raw, message = MALFORMED_SNAPSHOTS[name]
    a = Applier(KVStateMachine(**LIMITS))
    a(Put("keep", b"me"), Session("c", 1))
    before = snapshot_of(a.sm)
    with pytest.raises(ValueError, match=r"^malformed KV snapshot: ") as info:
        a.sm.restore(io.BytesIO(raw))
    assert message in str(info.value)
    assert snapshot_of(a.sm) == before and a.sm.get("keep") == b"me"


def test_the_malformed_cases_differ_from_a_valid_snapshot_only_in_the_flaw() -> None:
    """The cases above are refused for their flaw: the same shapes, made valid, restore."""
    good = pack(header(keys=2, sessions=3), {"a": b"1"}, {"ab": b""},
                session("c", 1, GOOD_RESULT),
                session("d" * 128, 1 << 63),
                session("e", 0, [(1 << 63) - 1, 5, False, KEY_TOO_LARGE, "m"]))
    sm = restored(good, **LIMITS)
    assert sm.list() == [("a", b"1"), ("ab", b"")] and sm.session_count == 3


def test_every_truncation_of_a_snapshot_is_refused() -> None:
    snapshot = snapshot_of(populated().sm)
    for cut in range(len(snapshot)):
        sm = KVStateMachine(max_key_bytes=8, max_sessions=3, session_window=4)
        with pytest.raises(ValueError, match="malformed KV snapshot"):
            sm.restore(io.BytesIO(snapshot[:cut]))
        assert sm.last_index == 0 and len(sm) == 0


@given(st.data())
@settings(max_examples=500)
def test_a_corrupted_snapshot_is_refused_or_restores_a_valid_state(data: st.DataObject) -> None:
    snapshot = bytearray(snapshot_of(populated().sm))
    for _ in range(data.draw(st.integers(1, 3))):
        snapshot[data.draw(st.integers(0, len(snapshot) - 1))] = data.draw(st.integers(0, 255))
    sm = KVStateMachine(max_key_bytes=8, max_sessions=3, session_window=4)
    try:
        sm.restore(io.BytesIO(bytes(snapshot)))
    except ValueError as exc:
        assert str(exc).startswith("malformed KV snapshot: ")
        assert sm.last_index == 0 and len(sm) == 0
        return
    # Accepted (a flipped value byte is still a valid state): it round-trips like any state.
    assert snapshot_of(restored(snapshot_of(sm), max_key_bytes=8, max_sessions=3,
                                session_window=4)) == snapshot_of(sm)


@given(st.binary(max_size=64))
@settings(max_examples=300)
def test_random_bytes_restore_raises_only_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        KVStateMachine().restore(io.BytesIO(raw))


# -- version 2: metadata, leases, revision, rich session results -------------------------------


def with_leases_and_txns() -> Applier:
    """A machine whose state uses everything version 2 adds."""
    a = Applier(KVStateMachine(**LIMITS))
    a(LeaseGrant(30, 7), Session("w", 1))
    a(Put("a", b"1", lease=7), Session("w", 2))
    a(Put("b", b"2"))
    a(Put("b", b"3"))
    a(LeaseGrant(5))  # id 5: its index
    a(Put("c", b"", lease=5))
    a(Txn((Compare("b", "version", "=", 2),), (TxnPut("d", b"4", 7), TxnGet("b"), TxnDelete("c"),
                                                TxnGet("c"))), Session("x", 1))
    a(DeleteRange("zz"), Session("y", 1))
    a(LeaseGrant(9, 100))
    return a


def test_v2_round_trip_keeps_metadata_leases_revision_and_txn_results() -> None:
    a = with_leases_and_txns()
    snapshot = snapshot_of(a.sm)
    b = restored(snapshot, **LIMITS)
    assert snapshot_of(b) == snapshot
    assert b.revision == a.sm.revision == 7 and b.last_index == 9
    assert b.leases() == a.sm.leases() == [LeaseInfo(7, 30, ("a", "d")), LeaseInfo(5, 5, ()),
                                           LeaseInfo(100, 9, ())]
    assert b.range() == a.sm.range()
    assert b.get_entry("b") == KeyValue("b", b"3", 3, 4, 2)
    txn = Txn((Compare("b", "version", "=", 2),), (TxnPut("d", b"4", 7), TxnGet("b"),
                                                   TxnDelete("c"), TxnGet("c")))
    b_result = b.apply(10, encode(txn, Session("x", 1, retry=True)))
    assert b_result.responses[1].kv == KeyValue("b", b"3", 3, 4, 2)
    assert b_result == a.sm.apply(10, encode(txn, Session("x", 1, retry=True)))
    # Both go on alike: a revoke deletes the restored attachments.
    for sm in (a.sm, b):
        assert sm.apply(11, encode(LeaseRevoke(7, expired=True))).count == 2
    assert snapshot_of(a.sm) == snapshot_of(b)


def v1_snapshot() -> bytes:
    """What a version 1 machine (before revisions and leases) wrote."""
    return pack({"format": "raftly-kv", "version": 1, "last_index": 6, "keys": 2,
                 "sessions": 1},
                {"a": b"1", "b": b"2"},
                ["c", 1, [[1, 3, True, None, ""], [2, 5, False, KEY_TOO_LARGE, "too long"]]])


def test_a_version_1_snapshot_restores_with_metadata_as_of_its_last_index() -> None:
    b = Applier(restored(v1_snapshot(), **LIMITS))
    b.index = 6
    assert b.sm.revision == 6 and b.sm.last_index == 6
    assert b.sm.get_entry("a") == KeyValue("a", b"1", 6, 6, 1)
    assert b.sm.leases() == [] and b.sm.session_count == 1
    # Its results come back to retries (without the revision they never recorded) ...
    assert b(Put("a", b"again"), Session("c", 1, retry=True)) == Result(3, True)
    assert b(Put("b", b"again"), Session("c", 2)) == Result(5, False, KEY_TOO_LARGE, "too long")
    # ... and commands in the version 1 layout apply on top.
    old_put = msgpack.packb([OP_PUT, "c", 3, 0, False, "a", b"new"], use_bin_type=True)
    assert b(old_put) == Result(9, True, revision=9)
    assert b.sm.get_entry("a") == KeyValue("a", b"new", 6, 9, 2)
    again = restored(snapshot_of(b.sm), **LIMITS)
    assert snapshot_of(again) == snapshot_of(b.sm), "and it snapshots as version 2"


def header2(last_index: int = 5, revision: int = 4, keys: int = 0, leases: int = 0,
            sessions: int = 0, **changes: object) -> dict:
    fields: dict[str, object] = {"format": "raftly-kv", "version": 2, "last_index": last_index,
                                 "revision": revision, "keys": keys, "leases": leases,
                                 "sessions": sessions}
    fields.update(changes)
    return fields


def result2(*, seq: int = 1, index: int = 3, ok: bool = True, error: object = None,
            revision: object = 3, count: object = 0, lease: object = 0, ttl: object = 0,
            responses: object = ()) -> list[object]:
    assert isinstance(responses, tuple | list)
    return [seq, index, ok, error, "", revision, count, lease, ttl, list(responses)]


GOOD_KV = [b"v", 2, 3, 2, 0]
GOOD_GET = ["get", True, ["k", b"v", 1, 2, 1, 0]]

MALFORMED_V2 = {
    "v1 fields in v2": (pack(header(version=2)), "the header has fields"),
    "revision past last index": (pack(header2(revision=6)), "revision 6 is past last_index 5"),
    "negative revision": (pack(header2(revision=-1)), "the revision -1"),
    "too many leases": (pack(header2(leases=4)), "more than this machine's max_leases 3"),
    "missing lease": (pack(header2(leases=1)), "truncated: a lease"),
    "lease not a list": (pack(header2(leases=1), {"id": 1}), "a lease is not [id, ttl]"),
    "lease id zero": (pack(header2(leases=1), [0, 5]), "lease id 0"),
    "lease id bool": (pack(header2(leases=1), [True, 5]), "lease id True"),
    "lease ttl zero": (pack(header2(leases=1), [1, 0]), "ttl 0"),
    "lease ttl too long": (pack(header2(leases=1), [1, 9_000_000_001]), "ttl 9000000001"),
    "duplicate lease": (pack(header2(leases=2), [1, 5], [1, 6]), "lease 1 appears twice"),
    "v1 value in v2": (pack(header2(keys=1), {"k": b"v"}), "is not [bytes value"),
    "short key entry": (pack(header2(keys=1), {"k": [b"v", 1, 1, 1]}), "is not [bytes value"),
    "str value": (pack(header2(keys=1), {"k": ["v", 1, 1, 1, 0]}), "is not [bytes value"),
    "create zero": (pack(header2(keys=1), {"k": [b"v", 0, 1, 1, 0]}), "create_revision 0"),
    "create past revision": (pack(header2(keys=1), {"k": [b"v", 5, 5, 1, 0]}),
                             "create_revision 5 is not an int from 1 to 4"),
    "mod before create": (pack(header2(keys=1), {"k": [b"v", 3, 2, 1, 0]}), "mod_revision 2"),
    "mod past revision": (pack(header2(keys=1), {"k": [b"v", 1, 5, 1, 0]}), "mod_revision 5"),
    "version zero": (pack(header2(keys=1), {"k": [b"v", 1, 1, 0, 0]}), "version 0"),
    "bool version": (pack(header2(keys=1), {"k": [b"v", 1, 1, True, 0]}), "version True"),
    "negative lease": (pack(header2(keys=1), {"k": [b"v", 1, 1, 1, -1]}), "lease -1"),
    "unknown lease": (pack(header2(keys=1), {"k": [b"v", 1, 1, 1, 9]}),
                      "names lease 9, which is not in the snapshot"),
    "key too long": (pack(header2(keys=1), {"kkkkk": GOOD_KV}), "max_key_bytes 4"),
    "duplicate key": (pack(header2(keys=2), {"a": GOOD_KV}, {"a": GOOD_KV}), "appear twice"),
    "v1 result in v2": (pack(header2(sessions=1), session("c", 0, GOOD_RESULT)),
                        "a result is not [seq, index, ok, error, message, revision"),
    "result revision past index": (pack(header2(sessions=1), session("c", 0, result2(revision=4))),
                                   "revision 4"),
    "negative count": (pack(header2(sessions=1), session("c", 0, result2(count=-1))), "count -1"),
    "str lease": (pack(header2(sessions=1), session("c", 0, result2(lease="1"))), "lease '1'"),
    "ttl too long": (pack(header2(sessions=1), session("c", 0, result2(ttl=1 << 40))), "ttl"),
    "unknown v2 error": (pack(header2(sessions=1), session("c", 0, result2(ok=False,
                                                                             error="nope"))),
                         "error 'nope'"),
    "responses not a list": (pack(header2(sessions=1),
                                  session("c", 0, [1, 3, True, None, "", 3, 0, 0, 0, {}])),
                             "responses are not a list"),
    "short response": (pack(header2(sessions=1), session("c", 0, result2(responses=[["get"]]))),
                       "not [kind, ok, kv]"),
    "unknown kind": (pack(header2(sessions=1),
                          session("c", 0, result2(responses=[["range", True, None]]))),
                     "kind 'range'"),
    "int ok response": (pack(header2(sessions=1),
                             session("c", 0, result2(responses=[["put", 1, None]]))), "ok 1"),
    "kv on a put": (pack(header2(sessions=1), session("c", 0, result2(
        responses=[["put", True, GOOD_GET[2]]]))), "kv is not nil or (for a get)"),
    "short get kv": (pack(header2(sessions=1), session("c", 0, result2(
        responses=[["get", True, ["k", b"v", 1, 2, 1]]]))), "kv is not nil"),
    "get kv newer than result": (pack(header2(sessions=1), session("c", 0, result2(
        revision=1, responses=[GOOD_GET]))), "mod_revision 2"),
    "get kv empty key": (pack(header2(sessions=1), session("c", 0, result2(
        responses=[["get", True, ["", b"v", 1, 2, 1, 0]]]))), "the key is not a non-empty str"),
}


@pytest.mark.parametrize("name", list(MALFORMED_V2))
def test_malformed_v2_snapshot_is_refused_and_changes_nothing(name: str) -> None:
    raw, message = MALFORMED_V2[name]
    a = with_leases_and_txns()
    before = snapshot_of(a.sm)
    with pytest.raises(ValueError, match=r"^malformed KV snapshot: ") as info:
        a.sm.restore(io.BytesIO(raw))
    assert message in str(info.value)
    assert snapshot_of(a.sm) == before and a.sm.revision == 7 and len(a.sm.leases()) == 3


def test_the_malformed_v2_cases_differ_from_a_valid_snapshot_only_in_the_flaw() -> None:
    good = pack(header2(keys=2, leases=2, sessions=2), [1, 5], [9_000_000_000, 1],
                {"a": GOOD_KV, "k": [b"", 1, 4, 3, 9_000_000_000]},
                session("c", 0, result2(responses=[GOOD_GET, ["delete", False, None]])),
                session("d", 0, result2(ok=False, error=LEASE_NOT_FOUND, revision=0)))
    sm = restored(good, **LIMITS)
    assert sm.revision == 4 and sm.range()[0][1] == KeyValue("k", b"", 1, 4, 3, 9_000_000_000)
    assert sm.leases() == [LeaseInfo(1, 5, ()), LeaseInfo(9_000_000_000, 1, ("k",))]
    # It snapshots as version 3, its leases' grant indexes unknown (0), and restores alike.
    again = snapshot_of(sm)
    rest = list(msgpack.Unpacker(io.BytesIO(good), raw=False))[3:]  # keys and sessions
    assert again == pack(header2(keys=2, leases=2, sessions=2, version=3), [1, 5, 0],
                         [9_000_000_000, 1, 0], *rest)
    assert snapshot_of(restored(again, **LIMITS)) == again


def test_version_3_keeps_each_lease_grant_index_and_checks_it() -> None:
    a = Applier()
    a(Put("k", b""))
    a(LeaseGrant(10, 7))  # index 2
    b = Applier(restored(snapshot_of(a.sm), **LIMITS))
    assert snapshot_of(b.sm) == snapshot_of(a.sm)
    b.index = 2
    # The index tells an expiry revoke of this grant from one of an earlier grant of id 7.
    assert b(LeaseRevoke(7, expired=True, grant=1)).error == LEASE_NOT_FOUND
    assert b(LeaseRevoke(7, expired=True, grant=2)).ok
    for bad, message in (([7, 10, 3], "grant index 3"), ([7, 10], "[id, ttl, grant_index]"),
                         ([7, 10, -1], "grant index -1")):
        raw = pack(header2(last_index=2, revision=1, leases=1, version=3), bad)
        with pytest.raises(ValueError, match=r"^malformed KV snapshot: ") as info:
            restored(raw, **LIMITS)
        assert message in str(info.value)


def test_every_truncation_of_a_v2_snapshot_is_refused() -> None:
    snapshot = snapshot_of(with_leases_and_txns().sm)
    for cut in range(len(snapshot)):
        sm = KVStateMachine(**LIMITS)
        with pytest.raises(ValueError, match="malformed KV snapshot"):
            sm.restore(io.BytesIO(snapshot[:cut]))
        assert sm.last_index == 0 and len(sm) == 0 and sm.leases() == [] and sm.revision == 0


@given(st.data())
@settings(max_examples=300, deadline=None)
def test_a_corrupted_v2_snapshot_is_refused_or_restores_a_consistent_state(
        data: st.DataObject) -> None:
    snapshot = bytearray(snapshot_of(with_leases_and_txns().sm))
    for _ in range(data.draw(st.integers(1, 3))):
        snapshot[data.draw(st.integers(0, len(snapshot) - 1))] = data.draw(st.integers(0, 255))
    sm = KVStateMachine(**LIMITS)
    try:
        sm.restore(io.BytesIO(bytes(snapshot)))
    except ValueError as exc:
        assert str(exc).startswith("malformed KV snapshot: ")
        assert sm.last_index == 0 and len(sm) == 0 and sm.leases() == []
        return
    assert_consistent(sm)
    assert snapshot_of(restored(snapshot_of(sm), **LIMITS)) == snapshot_of(sm)


def assert_consistent(sm: KVStateMachine) -> None:
    """Every key's metadata fits the store's revision, and leases list exactly their keys."""
    kvs, _ = sm.range()
    for kv in kvs:
        assert 1 <= kv.create_revision <= kv.mod_revision <= sm.revision <= sm.last_index
        assert kv.version >= 1
    attached = {lease.id: set(lease.keys) for lease in sm.leases()}
    assert attached == {lease_id: {kv.key for kv in kvs if kv.lease == lease_id}
                        for lease_id in attached}
    assert all(kv.lease == 0 or kv.lease in attached for kv in kvs)


# -- determinism of every op: two machines, one of them restored mid-way -----------------------

KEYS = st.sampled_from(["a", "a/1", "a/2", "b"])
LEASE_IDS = st.sampled_from([0, 1, 2])
VALUES = st.sampled_from([b"", b"x", b"yz"])
TXN_OPS = st.one_of(st.builds(TxnPut, KEYS, VALUES, LEASE_IDS), st.builds(TxnDelete, KEYS),
                    st.builds(TxnGet, KEYS))
COMPARES = st.one_of(
    st.builds(Compare, KEYS, st.just("value"), st.sampled_from(["=", "!=", "<", ">"]), VALUES),
    st.builds(Compare, KEYS, st.sampled_from(["version", "mod_revision", "create_revision"]),
              st.sampled_from(["=", "!=", "<", ">"]), st.integers(0, 12)),
    st.builds(Compare, KEYS, st.just("exists"), st.sampled_from(["=", "!="]), st.booleans()),
)


def unique_writes(ops: list[TxnPut | TxnDelete | TxnGet]) -> tuple[TxnPut | TxnDelete | TxnGet,
                                                                   ...]:
    seen: set[str] = set()
    out = []
    for op in ops:
        if not isinstance(op, TxnGet):
            if op.key in seen:
                continue
            seen.add(op.key)
        out.append(op)
    return tuple(out)


ALL_OPS = st.one_of(
    st.builds(Put, KEYS | st.just("long-key"), VALUES, LEASE_IDS),
    st.builds(Put, KEYS, VALUES, LEASE_IDS),
    st.builds(Delete, KEYS),
    st.builds(Cas, KEYS, VALUES, VALUES),
    st.builds(DeleteRange, st.sampled_from(["", "a", "a/", "b", "zz", "toolong"])),
    st.builds(Txn, st.lists(COMPARES, max_size=2).map(tuple),
              st.lists(TXN_OPS, max_size=4).map(unique_writes),
              st.lists(TXN_OPS, max_size=4).map(unique_writes)),
    st.builds(LeaseGrant, st.integers(1, 60), LEASE_IDS),
    st.builds(LeaseGrant, st.integers(1, 60), st.sampled_from([1, 2])),
    st.builds(LeaseRevoke, st.integers(1, 3), st.booleans()),
)
# In ten: one malformed, three with a session, six without.
ALL_COMMANDS = st.integers(0, 9).flatmap(
    lambda n: st.binary(max_size=3) if n == 0 else st.builds(encode, ALL_OPS, SESSIONS) if n < 4
    else st.builds(encode, ALL_OPS))


@given(st.lists(ALL_COMMANDS, min_size=5, max_size=40),
       st.lists(ALL_COMMANDS, min_size=5, max_size=40))
@settings(max_examples=400, deadline=None)
def test_every_op_gives_the_same_state_results_and_events_on_a_restored_machine(
        prefix: list[bytes], suffix: list[bytes]) -> None:
    limits = {**LIMITS, "max_key_bytes": 5, "history_limit": 1000}
    live, other = KVStateMachine(**limits), KVStateMachine(**limits)
    events: dict[int, list[object]] = {id(live): [], id(other): []}
    for sm in (live, other):
        sm.on_events.append(events[id(sm)].extend)
    for index, command in enumerate(prefix, 1):
        assert live.apply(index, command) == other.apply(index, command)
        assert_consistent(live)
    fresh = restored(snapshot_of(other), **limits)
    events[id(fresh)] = []
    fresh.on_events.append(events[id(fresh)].extend)
    start, before = live.revision + 1, len(events[id(other)])
    for index, command in enumerate(suffix, len(prefix) + 1):
        result = live.apply(index, command)
        assert fresh.apply(index, command) == result == other.apply(index, command)
        if result.index == index:  # not a retry's first result, from before
            assert result.revision == live.revision
        assert_consistent(fresh)
    assert events[id(fresh)] == events[id(other)][before:]
    assert events[id(live)] == events[id(other)]
    assert fresh.events_since(start) == live.events_since(start) == events[id(fresh)]
    assert snapshot_of(fresh) == snapshot_of(live) == snapshot_of(other)
    assert fresh.range() == live.range() and fresh.leases() == live.leases()


@pytest.mark.parametrize("name", [*(f"v1 {n}" for n in MALFORMED_SNAPSHOTS),
                                  *(f"v2 {n}" for n in MALFORMED_V2)])
def test_a_check_that_keeps_no_values_refuses_every_malformed_snapshot_too(name: str) -> None:
    """``read(keep_values=False)`` (what checking a backup uses) runs the same checks."""
    cases = MALFORMED_SNAPSHOTS if name.startswith("v1") else MALFORMED_V2
    raw, message = cases[name[3:]]
    with pytest.raises(ValueError, match=r"^malformed KV snapshot: ") as info:
        SnapshotReader(io.BytesIO(raw), **LIMITS).read(keep_values=False)
    assert message in str(info.value)


def test_a_check_that_keeps_no_values_counts_what_a_full_read_holds() -> None:
    a = with_leases_and_txns()
    raw = snapshot_of(a.sm)
    full = SnapshotReader(io.BytesIO(raw), **LIMITS).read()
    checked = SnapshotReader(io.BytesIO(raw), **LIMITS).read(keep_values=False)
    assert list(checked.data) == list(full.data) and len(full.data) > 0
    assert all(kv is CHECKED for kv in checked.data.values())  # no value is kept
    assert (checked.revision, checked.last_index, len(checked.leases), len(checked.sessions)) \
        == (full.revision, full.last_index, len(full.leases), len(full.sessions))

"""KVStateMachine: operations, CAS, exactly-once sessions, malformed commands, determinism."""

from __future__ import annotations

import msgpack  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kv_helpers import Applier

from raftly.kv.state_machine import (
    KEY_TOO_LARGE,
    MALFORMED,
    OP_PUT,
    STALE_SEQ,
    Cas,
    CommandError,
    Delete,
    DeleteRange,
    KeyValue,
    KVStateMachine,
    Put,
    Result,
    Session,
    decode,
    encode,
)


def test_put_get_delete() -> None:
    a = Applier()
    assert a(Put("k", b"v")) == Result(1, True, revision=1)
    assert a.sm.get("k") == b"v"
    assert a(Put("k", b"w")).ok
    assert a.sm.get("k") == b"w"
    assert a(Delete("k")) == Result(3, True, revision=3)
    assert a.sm.get("k") is None
    assert a(Delete("k")) == Result(4, False, revision=3), "no change, no new revision"
    assert len(a.sm) == 0


def test_cas() -> None:
    a = Applier()
    assert not a(Cas("k", b"", b"x")).ok, "a missing key never matches, not even b''"
    assert a.sm.get("k") is None
    a(Put("k", b""))
    assert a(Cas("k", b"", b"x")).ok
    assert a.sm.get("k") == b"x"
    assert not a(Cas("k", b"y", b"z")).ok
    assert a.sm.get("k") == b"x"


def test_list_prefix_order_and_limit() -> None:
    a = Applier()
    for key in ["b/2", "a", "b/1", "b", "c", "b/3"]:
        a(Put(key, key.encode()))
    assert [k for k, _ in a.sm.list("b/")] == ["b/1", "b/2", "b/3"]
    assert a.sm.list("b/", 2) == [("b/1", b"b/1"), ("b/2", b"b/2")]
    assert [k for k, _ in a.sm.list()] == ["a", "b", "b/1", "b/2", "b/3", "c"]
    a(Delete("b/2"))
    assert [k for k, _ in a.sm.list("b")] == ["b", "b/1", "b/3"]
    assert a.sm.list("zz") == []


def test_key_size_limit() -> None:
    a = Applier(KVStateMachine(max_key_bytes=8))
    assert a(Put("é" * 4, b"")).ok  # 8 bytes in UTF-8
    result = a(Put("é" * 5, b""))
    assert result.error == KEY_TOO_LARGE and not result.ok
    assert a.sm.get("é" * 5) is None


def test_exactly_once_retry_returns_first_result() -> None:
    a = Applier()
    s = Session("c1", 1)
    first = a(Cas("k", b"", b"x"), s)
    a(Put("k", b""))
    # A retry of seq 1 would now swap; it must get the first (failed) result back instead.
    assert a(Cas("k", b"", b"x"), s) is first
    assert a.sm.get("k") == b""
    put = a(Put("n", b"1"), Session("c1", 2))
    a(Put("n", b"2"))
    assert a(Put("n", b"1"), Session("c1", 2)) is put
    assert a.sm.get("n") == b"2"


def test_out_of_order_seqs_within_window_apply() -> None:
    a = Applier()
    assert a(Put("b", b"2"), Session("c", 2)).ok
    assert a(Put("a", b"1"), Session("c", 1)).ok  # concurrent writes may commit out of order
    assert a.sm.get("a") == b"1"


def test_ack_forgets_and_stale_seq_is_an_unknown_outcome() -> None:
    a = Applier()
    a(Put("a", b"1"), Session("c", 1))
    a(Put("b", b"2"), Session("c", 3, ack=3))  # promises never to retry 1 or 2
    stale = a(Put("a", b"again"), Session("c", 1))
    assert stale.error == STALE_SEQ and not stale.ok
    assert a.sm.get("a") == b"1"
    assert a(Put("z", b""), Session("c", 2)).error == STALE_SEQ


def test_session_window_bounds_results_per_client() -> None:
    a = Applier(KVStateMachine(session_window=3))
    for seq in range(1, 6):
        a(Put(f"k{seq}", b""), Session("c", seq))
    assert a(Put("k1", b"x"), Session("c", 1)).error == STALE_SEQ
    assert a(Put("k5", b"x"), Session("c", 5)).index == 5  # still cached
    assert a.sm.get("k5") == b""


def test_sessions_evict_least_recently_applied_client() -> None:
    a = Applier(KVStateMachine(max_sessions=2))
    a(Put("k", b"1"), Session("old", 1))
    a(Put("k", b"2"), Session("mid", 1))
    a(Put("k", b"3"), Session("old", 2))  # "old" is now the most recently applied
    a(Put("k", b"4"), Session("new", 1))  # evicts "mid"
    assert a.sm.session_count == 2
    a(Put("k", b"5"))
    assert a(Put("k", b"3"), Session("old", 2)).index == 3  # remembered
    assert a.sm.get("k") == b"5"
    # "mid" was forgotten: a resend marked as a retry is refused as an unknown outcome ...
    refused = a(Put("k", b"2"), Session("mid", 1, retry=True))
    assert refused.error == STALE_SEQ and not refused.ok
    assert a.sm.get("k") == b"5"
    # ... while a write it never sent before starts a new session and applies.
    assert a(Put("k", b"6"), Session("mid", 2)).ok
    assert a.sm.get("k") == b"6"


@pytest.mark.parametrize("raw", [
    b"",
    b"\xc1",  # never-used msgpack byte
    msgpack.packb({"op": 1}),
    msgpack.packb([OP_PUT, None, None, None]),
    msgpack.packb([OP_PUT, None, None, None, None, "k"]),
    msgpack.packb([OP_PUT, None, None, None, None, "k", "str not bytes"]),
    msgpack.packb([OP_PUT, None, None, None, None, "", b"v"], use_bin_type=True),
    msgpack.packb([OP_PUT, None, None, None, None, b"bytes key", b"v"], use_bin_type=True),
    msgpack.packb([99, None, None, None, None, "k"]),
    msgpack.packb([True, None, None, None, None, "k", b"v"], use_bin_type=True),
    msgpack.packb([2, None, None, None, None, "k", b"extra"], use_bin_type=True),
    msgpack.packb([3, None, None, None, None, "k", b"only one"], use_bin_type=True),
    msgpack.packb([OP_PUT, "c", None, None, False, "k", b"v"], use_bin_type=True),
    msgpack.packb([OP_PUT, "c", 0, 0, False, "k", b"v"], use_bin_type=True),
    msgpack.packb([OP_PUT, "c", True, 0, False, "k", b"v"], use_bin_type=True),
    msgpack.packb([OP_PUT, "c", 2, 3, False, "k", b"v"], use_bin_type=True),
    msgpack.packb([OP_PUT, "c", 1 << 63, 0, False, "k", b"v"], use_bin_type=True),
    msgpack.packb([OP_PUT, "", 1, 0, False, "k", b"v"], use_bin_type=True),
    msgpack.packb([OP_PUT, "x" * 129, 1, 0, False, "k", b"v"], use_bin_type=True),
    msgpack.packb([OP_PUT, "c", 1, 0, "yes", "k", b"v"], use_bin_type=True),  # retry not bool
    msgpack.packb([OP_PUT, None, None, None, True, "k", b"v"], use_bin_type=True),
    b"\x96\x01\xc0\xc0\xc0\xc0\xa1",  # truncated
    b"\xdd\xff\xff\xff\xff",  # array claiming 4 billion items
])
def test_malformed_commands_apply_as_errors(raw: bytes) -> None:
    a = Applier()
    a(Put("k", b"before"))
    result = a(raw)
    assert result.error == MALFORMED and not result.ok and result.message
    assert a.sm.get("k") == b"before" and len(a.sm) == 1
    with pytest.raises(CommandError):
        decode(raw)


@given(st.binary(max_size=64))
@settings(max_examples=300)
def test_random_bytes_never_raise(raw: bytes) -> None:
    result = KVStateMachine().apply(1, raw)
    assert isinstance(result, Result)


def test_encode_rejects_bad_input() -> None:
    with pytest.raises(CommandError):
        encode(Put("", b"v"))
    with pytest.raises(CommandError):
        encode(Put("\ud800", b"v"))
    with pytest.raises(CommandError):
        Session("c", 0)
    with pytest.raises(CommandError):
        Session("c", 1, ack=2)


def test_encode_decode_round_trip() -> None:
    for op in (Put("k", b"\x00v"), Delete("ключ"), Cas("k", b"a", b"b")):
        for session in (None, Session("c", 5, 3)):
            assert decode(encode(op, session)) == (op, session)


# -- random sequences against a dict model, and determinism ------------------------------------

KEYS = st.sampled_from(["a", "b", "c", "a/1", "a/2"])
VALUES = st.binary(max_size=3)
OPS = st.one_of(
    st.builds(Put, KEYS, VALUES),
    st.builds(Delete, KEYS),
    st.builds(Cas, KEYS, VALUES, VALUES),
)


@given(st.lists(st.tuples(OPS, st.booleans(), st.sampled_from(["x", "y"])), max_size=60))
@settings(max_examples=200)
def test_random_ops_match_dict_model_and_replay_identically(
        steps: list[tuple[Put | Delete | Cas, bool, str]]) -> None:
    model: dict[str, bytes] = {}
    a, b = Applier(), Applier()
    seqs = {"x": 0, "y": 0}
    results = []
    for op, retry, client in steps:
        seqs[client] += 1
        session = Session(client, seqs[client], ack=seqs[client])
        if isinstance(op, Put):
            model[op.key] = op.value
            expected_ok = True
        elif isinstance(op, Delete):
            expected_ok = model.pop(op.key, None) is not None
        else:
            expected_ok = model.get(op.key) == op.expected and op.key in model
            if expected_ok:
                model[op.key] = op.new
        result = a(op, session)
        assert result.ok == expected_ok and result.error is None
        results.append(result)
        if retry:  # a retry of the same seq must change nothing and return the same result
            assert a(op, session) == result
        b(op, session)
        if retry:
            b(op, session)
        assert dict(a.sm.list()) == model
    assert dict(b.sm.list()) == model
    assert a.sm.list() == b.sm.list()
    for prefix in ("", "a", "a/"):
        assert a.sm.list(prefix) == sorted((k, v) for k, v in model.items()
                                           if k.startswith(prefix))


# -- revisions, key metadata, prefix reads and deletes -----------------------------------------


def test_revision_is_the_index_of_the_last_change_and_keys_carry_their_metadata() -> None:
    a = Applier()
    assert a(Put("k", b"1")).revision == 1
    assert a.sm.get_entry("k") == KeyValue("k", b"1", 1, 1, 1)
    assert not a(Cas("k", b"nope", b"x")).ok
    assert a.sm.revision == 1, "a command that changes nothing keeps the revision"
    assert a(Cas("k", b"1", b"2")).revision == 3
    assert a(Put("k", b"3")).revision == 4
    assert a.sm.get_entry("k") == KeyValue("k", b"3", 1, 4, 3)
    a(Delete("k"))
    assert a.sm.get_entry("k") is None and a.sm.revision == 5
    a(b"\xc1")  # malformed
    assert a(Put("k", b"again")).revision == 7
    assert a.sm.get_entry("k") == KeyValue("k", b"again", 7, 7, 1), "recreated at version 1"


def test_delete_range_removes_every_key_under_the_prefix_in_one_revision() -> None:
    a = Applier()
    for key in ["a", "a/1", "a/2", "a/2/x", "b"]:
        a(Put(key, b""))
    result = a(DeleteRange("a/"))
    assert result == Result(6, True, revision=6, count=3)
    assert [k for k, _ in a.sm.list()] == ["a", "b"]
    assert [(e.revision, e.type, e.key) for e in a.sm.events_since(6)] == [
        (6, "delete", "a/1"), (6, "delete", "a/2"), (6, "delete", "a/2/x")]
    assert a(DeleteRange("zz")) == Result(7, False, revision=6, count=0)
    assert a(DeleteRange("")).count == 2 and len(a.sm) == 0


def test_delete_range_prefix_is_held_to_the_key_size_limit() -> None:
    a = Applier(KVStateMachine(max_key_bytes=4))
    a(Put("abcd", b""))
    assert a(DeleteRange("abcde")).error == KEY_TOO_LARGE
    assert a.sm.get("abcd") == b""


def test_range_pages_through_a_prefix() -> None:
    a = Applier()
    for key in ["p/1", "p/2", "p/3", "p/4", "q", "o"]:
        a(Put(key, key.encode()))
    page, more = a.sm.range("p/", limit=2)
    assert [kv.key for kv in page] == ["p/1", "p/2"] and more
    page, more = a.sm.range("p/", start_after=page[-1].key, limit=2)
    assert [kv.key for kv in page] == ["p/3", "p/4"] and not more, "exactly the last page"
    assert a.sm.range("p/", start_after="p/4", limit=2) == ([], False)
    page, more = a.sm.range("", start_after="a", limit=10)
    assert [kv.key for kv in page] == ["o", "p/1", "p/2", "p/3", "p/4", "q"] and not more
    assert a.sm.range("p/", start_after="0", limit=1)[0][0].key == "p/1"
    assert page[1] == KeyValue("p/1", b"p/1", 1, 1, 1)


MODEL_OPS = st.one_of(
    st.builds(Put, KEYS, VALUES),
    st.builds(Delete, KEYS),
    st.builds(Cas, KEYS, st.sampled_from([b"", b"x"]), VALUES),
    st.builds(DeleteRange, st.sampled_from(["", "a", "a/", "c"])),
)


@given(st.lists(MODEL_OPS, max_size=60))
@settings(max_examples=200)
def test_revisions_and_metadata_match_a_model(ops: list[Put | Delete | Cas | DeleteRange]
                                              ) -> None:
    """A model of (value, create, mod, version) per key, and the revision of the last change."""
    model: dict[str, tuple[bytes, int, int, int]] = {}
    revision = 0
    a = Applier()
    for index, op in enumerate(ops, 1):
        before = dict(model)
        if isinstance(op, Put) or (isinstance(op, Cas) and op.key in model
                                   and model[op.key][0] == op.expected):
            value = op.value if isinstance(op, Put) else op.new
            old = model.get(op.key)
            model[op.key] = (value, index, index, 1) if old is None else (
                value, old[1], index, old[3] + 1)
        elif isinstance(op, Delete):
            model.pop(op.key, None)
        elif isinstance(op, DeleteRange):
            model = {k: v for k, v in model.items() if not k.startswith(op.prefix)}
        # Every write changes the key's mod revision, so a change always shows in the model.
        revision = index if model != before else revision
        assert a(op).revision == revision == a.sm.revision
        assert {kv.key: (kv.value, kv.create_revision, kv.mod_revision, kv.version)
                for kv in a.sm.range()[0]} == model

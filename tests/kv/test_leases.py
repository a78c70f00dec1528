"""Leases as replicated data: grant (ids, duplicates, the cap), attaching keys by put, moving a
key between leases, and revoke deleting every attached key in one revision."""

from __future__ import annotations

from kv_helpers import Applier

from raftly.kv.leases import LeaseInfo
from raftly.kv.records import LEASE_EXISTS, LEASE_NOT_FOUND, TOO_MANY_LEASES
from raftly.kv.state_machine import (
    Cas,
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
    TxnPut,
)


def test_grant_takes_the_proposed_id_or_the_entry_index() -> None:
    a = Applier()
    a(Put("k", b""))
    assert a(LeaseGrant(30)) == Result(2, True, revision=1, lease=2, ttl=30)
    assert a(LeaseGrant(5, 100)) == Result(3, True, revision=1, lease=100, ttl=5)
    assert a.sm.revision == 1, "a grant changes no key"
    assert a.sm.leases() == [LeaseInfo(2, 30, ()), LeaseInfo(100, 5, ())]
    assert a.sm.lease(100) == LeaseInfo(100, 5, ()) and a.sm.lease(7) is None


def test_a_duplicate_id_is_refused_and_an_index_taken_by_a_client_moves_to_the_next_free(
) -> None:
    a = Applier()
    a(LeaseGrant(10, 2))
    a(LeaseGrant(10, 3))
    # Index 2 is the id a client picked itself: a grant without an id must not fail for it.
    assert a(LeaseGrant(99)) == Result(3, True, lease=4, ttl=99)
    assert a(LeaseGrant(99, 2)).error == LEASE_EXISTS
    assert a.sm.leases() == [LeaseInfo(2, 10, ()), LeaseInfo(3, 10, ()), LeaseInfo(4, 99, ())]


def test_an_expiry_revoke_of_an_earlier_grant_leaves_the_id_granted_again_alone() -> None:
    a = Applier()
    a(LeaseGrant(10, 7))  # index 1
    a(Put("old", b"", lease=7))
    # The leader proposed LeaseRevoke(7, expired, grant=1); before it commits, the client
    # revokes lease 7 and grants it again (index 4), with a new key.
    a(LeaseRevoke(7))
    a(LeaseGrant(10, 7))
    a(Put("new", b"", lease=7))
    stale = a(LeaseRevoke(7, expired=True, grant=1))
    assert stale.error == LEASE_NOT_FOUND and not stale.ok
    assert a.sm.lease(7) == LeaseInfo(7, 10, ("new",))
    assert a(LeaseRevoke(7, expired=True, grant=4)).ok and a.sm.get("new") is None


def test_the_lease_table_is_capped() -> None:
    a = Applier(KVStateMachine(max_leases=2))
    assert a(LeaseGrant(1)).ok and a(LeaseGrant(1)).ok
    assert a(LeaseGrant(1)).error == TOO_MANY_LEASES
    a(LeaseRevoke(1))
    assert a(LeaseGrant(1)).ok, "a revoke frees a place"


def test_put_attaches_and_a_put_with_another_lease_moves_the_key() -> None:
    a = Applier()
    a(LeaseGrant(10, 1))
    a(LeaseGrant(10, 2))
    a(Put("k", b"1", lease=1))
    a(Put("j", b"1", lease=1))
    assert a.sm.lease(1) == LeaseInfo(1, 10, ("j", "k"))
    assert a.sm.get_entry("k") == KeyValue("k", b"1", 3, 3, 1, lease=1)
    a(Put("k", b"2", lease=2))
    assert a.sm.lease(1) == LeaseInfo(1, 10, ("j",)) and a.sm.lease(2) == LeaseInfo(2, 10, ("k",))
    a(Put("j", b"2"))  # no lease: detached
    assert a.sm.lease(1) == LeaseInfo(1, 10, ()) and a.sm.get_entry("j").lease == 0  # type: ignore[union-attr]
    assert a(Cas("k", b"2", b"3")).ok
    assert a.sm.get_entry("k").lease == 2, "a cas keeps the key's lease"  # type: ignore[union-attr]
    a(Delete("k"))
    assert a.sm.lease(2) == LeaseInfo(2, 10, ()), "a deleted key leaves its lease"


def test_put_naming_an_unknown_lease_is_refused_and_changes_nothing() -> None:
    a = Applier()
    a(Put("k", b"old"))
    result = a(Put("k", b"new", lease=9))
    assert result == Result(2, False, LEASE_NOT_FOUND, "lease 9 does not exist", revision=1)
    assert a.sm.get_entry("k") == KeyValue("k", b"old", 1, 1, 1)


def test_revoke_deletes_every_attached_key_in_one_revision() -> None:
    a = Applier()
    a(LeaseGrant(10, 7))
    a(LeaseGrant(10, 8))
    for key in ("lock/b", "lock/a", "cfg"):
        a(Put(key, b"x", lease=7))
    a(Put("other", b"", lease=8))
    a(Put("free", b""))
    result = a(LeaseRevoke(7, expired=True))
    assert result == Result(8, True, revision=8, count=3, lease=7)
    assert [k for k, _ in a.sm.list()] == ["free", "other"]
    assert [(e.revision, e.type, e.key) for e in a.sm.events_since(8)] == [
        (8, "delete", "cfg"), (8, "delete", "lock/a"), (8, "delete", "lock/b")]
    assert a.sm.leases() == [LeaseInfo(8, 10, ("other",))]
    assert a(LeaseRevoke(7)).error == LEASE_NOT_FOUND
    assert a(Put("k", b"", lease=7)).error == LEASE_NOT_FOUND


def test_revoking_a_lease_without_keys_keeps_the_revision() -> None:
    a = Applier()
    a(Put("k", b""))
    a(LeaseGrant(10, 5))
    assert a(LeaseRevoke(5)) == Result(3, True, revision=1, count=0, lease=5)


def test_keys_deleted_otherwise_are_not_deleted_again_by_the_revoke() -> None:
    a = Applier()
    a(LeaseGrant(10, 5))
    a(Put("a/1", b"", lease=5))
    a(Put("a/2", b"", lease=5))
    a(Put("b", b"", lease=5))
    a(DeleteRange("a/"))
    a(Txn(success=(TxnPut("b", b"moved"),)))
    assert a.sm.lease(5) == LeaseInfo(5, 10, ())
    assert a(LeaseRevoke(5)).count == 0 and a.sm.get("b") == b"moved"


def test_lease_commands_are_exactly_once() -> None:
    a = Applier()
    first = a(LeaseGrant(10), Session("c", 1))
    a(Put("k", b"", lease=first.lease), Session("c", 2))
    assert a(LeaseGrant(10), Session("c", 1, retry=True)) is first
    revoked = a(LeaseRevoke(first.lease), Session("c", 3))
    assert revoked.ok and revoked.count == 1
    assert a(LeaseRevoke(first.lease), Session("c", 3, retry=True)) is revoked
    assert a.sm.leases() == []

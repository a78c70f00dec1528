"""The watch history: events of every change, their order, the bound that drops whole old
revisions, Compacted for older requests, the on_events subscribers, and the history after a
restore."""

from __future__ import annotations

import io

import pytest
from kv_helpers import Applier

from raftly.kv.history import Compacted, Event, History
from raftly.kv.state_machine import (
    Cas,
    Delete,
    DeleteRange,
    KVStateMachine,
    LeaseGrant,
    LeaseRevoke,
    Put,
    Session,
)


def test_every_change_is_an_event_in_revision_order() -> None:
    a = Applier()
    a(LeaseGrant(10, 9))
    a(Put("k", b"1", lease=9))
    a(Put("k", b"2"))
    a(Cas("k", b"x", b"y"))  # fails: no event
    a(Delete("nothing"))  # no event
    a(Delete("k"))
    assert a.sm.events_since(1) == [
        Event(2, "put", "k", b"1", 2, 2, 1, 9),
        Event(3, "put", "k", b"2", 2, 3, 2, 0),
        Event(6, "delete", "k", b"", 0, 6, 0, 0),
    ]
    assert a.sm.events_since(3) == a.sm.events_since(1)[1:]
    assert a.sm.events_since(7) == [] and a.sm.events_since(100) == []


def test_events_since_filters_by_prefix() -> None:
    a = Applier()
    for key in ("cfg/a", "other", "cfg/b", "cfg"):
        a(Put(key, b""))
    assert [e.key for e in a.sm.events_since(1, "cfg/")] == ["cfg/a", "cfg/b"]
    assert [e.key for e in a.sm.events_since(1, "cfg")] == ["cfg/a", "cfg/b", "cfg"]


def test_the_bound_drops_whole_old_revisions_and_older_requests_are_compacted() -> None:
    a = Applier(KVStateMachine(history_limit=4))
    a(Put("a", b""))  # revision 1
    a(Put("b", b""))  # 2
    a(Put("c", b""))  # 3
    assert [e.revision for e in a.sm.events_since(1)] == [1, 2, 3]
    a(DeleteRange(""))  # revision 4: three events; 6 > 4, so revisions 1 and 2 leave
    assert a.sm.oldest_available_revision == 3
    assert [e.revision for e in a.sm.events_since(3)] == [3, 4, 4, 4]
    with pytest.raises(Compacted) as info:
        a.sm.events_since(2)
    assert (info.value.oldest_available, info.value.current) == (3, 4)
    a(Put("d", b""))  # revision 5: revision 3 leaves; the floor is the newest dropped revision
    assert a.sm.oldest_available_revision == 4
    with pytest.raises(Compacted):
        a.sm.events_since(3)
    assert [e.key for e in a.sm.events_since(4)] == ["a", "b", "c", "d"]


def test_a_revision_larger_than_the_limit_stays_whole_while_it_is_the_newest() -> None:
    h = History(limit=2)
    h.add([Event(1, "put", "a", b"", 1, 1, 1)])
    h.add([Event(2, "delete", k, b"", 0, 2, 0) for k in "abc"])
    # Revision 1 leaves; revision 2, alone past the bound, stays: a watcher resuming at 2
    # would otherwise be told "compacted" every time.
    assert len(h) == 3 and h.oldest_available == 2
    with pytest.raises(Compacted):
        h.since(1, "", 2)
    assert [e.key for e in h.since(2, "", 2)] == ["a", "b", "c"]
    h.add([Event(3, "put", "d", b"", 3, 3, 1)])  # no longer the newest: it leaves whole
    assert len(h) == 1 and h.oldest_available == 3


def test_the_byte_bound_drops_whole_old_revisions_too() -> None:
    h = History(limit=1000, max_bytes=25)
    for revision in range(1, 4):
        h.add([Event(revision, "put", f"k{revision}", b"x" * 9, revision, revision, 1)])
    # Each event weighs 11 bytes (key and value): the third passes 25, so revision 1 leaves.
    assert len(h) == 2 and h.oldest_available == 2
    h.add([Event(4, "put", "big", b"x" * 100, 4, 4, 1)])  # alone past the bound: kept
    assert len(h) == 1 and h.oldest_available == 4
    with pytest.raises(Compacted):
        h.since(3, "", 4)


def test_the_state_machine_bounds_its_history_by_bytes() -> None:
    a = Applier(KVStateMachine(history_bytes=3000))
    for i in range(10):
        a(Put(f"k{i}", b"v" * 1000))
    assert a.sm.oldest_available_revision == 9  # 2 of ~1002 bytes fit, not 3
    assert [e.key for e in a.sm.events_since(9)] == ["k8", "k9"]


def test_on_events_gets_the_events_of_each_apply_that_changed_keys() -> None:
    a = Applier()
    seen: list[list[Event]] = []
    a.sm.on_events.append(seen.append)
    a(Put("a", b""))
    a(Put("b", b""))
    a(Delete("zz"))  # no change, no call
    a(LeaseGrant(5, 3))
    a(DeleteRange(""))
    a(Put("a", b"", lease=3))
    a(LeaseRevoke(3, expired=True))
    assert [[(e.revision, e.type, e.key) for e in batch] for batch in seen] == [
        [(1, "put", "a")], [(2, "put", "b")], [(5, "delete", "a"), (5, "delete", "b")],
        [(6, "put", "a")], [(7, "delete", "a")]]
    assert [e for batch in seen for e in batch] == a.sm.events_since(1)


def test_a_retried_write_produces_no_second_event() -> None:
    a = Applier()
    seen: list[list[Event]] = []
    a.sm.on_events.append(seen.append)
    a(Put("k", b""), Session("c", 1))
    a(Put("k", b""), Session("c", 1, retry=True))
    assert len(seen) == 1 and len(a.sm.events_since(1)) == 1


def test_a_failing_listener_neither_breaks_apply_nor_starves_the_others() -> None:
    a = Applier()
    seen: list[list[Event]] = []

    def broken(events: list[Event]) -> None:
        raise RuntimeError("subscriber bug")

    a.sm.on_events.extend([broken, seen.append])
    assert a(Put("k", b"")).ok
    assert len(seen) == 1 and a.sm.get("k") == b""


def test_after_a_restore_the_history_starts_at_the_snapshot_revision() -> None:
    a = Applier()
    a(Put("a", b""))
    a(Put("b", b""))
    a(LeaseGrant(5, 1))  # index 3; the revision stays 2
    sink = io.BytesIO()
    a.sm.capture().persist(sink)
    b = Applier(KVStateMachine())
    b.sm.restore(io.BytesIO(sink.getvalue()))
    b.index = a.index
    assert b.sm.revision == 2 and b.sm.oldest_available_revision == 3
    with pytest.raises(Compacted) as info:
        b.sm.events_since(2)
    assert (info.value.oldest_available, info.value.current) == (3, 2)
    assert b.sm.events_since(3) == []
    b(Put("c", b""))
    assert [e.key for e in b.sm.events_since(3)] == ["c"]


def test_listeners_see_the_state_the_events_describe() -> None:
    a = Applier()
    checked: list[int] = []

    def check(events: list[Event]) -> None:
        assert a.sm.revision == events[0].revision
        assert a.sm.events_since(events[0].revision) == events
        for event in events:
            kv = a.sm.get_entry(event.key)
            assert (kv is None) == (event.type == "delete")
        checked.append(events[0].revision)

    a.sm.on_events.append(check)
    a(Put("a", b""))
    a(Put("b", b""))
    a(DeleteRange(""))
    assert checked == [1, 2, 3]


def test_a_subscriber_can_tell_a_restore_skipped_changes() -> None:
    a = Applier()
    a(Put("a", b""))
    seen: list[int] = []
    a.sm.on_events.append(lambda events: seen.append(events[-1].revision))
    a(Put("b", b""))
    assert a.sm.oldest_available_revision <= seen[-1] + 1, "nothing missed"
    other = Applier()
    for _ in range(5):
        other(Put("c", b""))
    sink = io.BytesIO()
    other.sm.capture().persist(sink)
    a.sm.restore(io.BytesIO(sink.getvalue()))
    assert a.sm.oldest_available_revision > seen[-1] + 1, "revisions 3 to 5 were never seen"

"""The decisions of the lock and election recipes, without a cluster: who holds, whom a waiter
watches, when a contender has lost its place, and when an observer's leader changes."""

from __future__ import annotations

import pytest

from raftly.kv.client_coord import Entry, WatchEvent
from raftly.kv.recipes import LockLostError, _Observer, _predecessor, _queue_prefix


def _entry(key: str, create: int, value: bytes = b"") -> Entry:
    return Entry(key, value, create, create, 1, 1)


QUEUE = [_entry("l/a/3", 7), _entry("l/a/1", 4), _entry("l/a/2", 9)]


def test_the_lowest_create_revision_holds_and_each_waiter_watches_the_key_just_before_it(
        ) -> None:
    assert _predecessor(QUEUE, "l/a/1") is None
    assert _predecessor(QUEUE, "l/a/3") == "l/a/1"
    assert _predecessor(QUEUE, "l/a/2") == "l/a/3"  # not the holder: no herd on release


def test_a_contender_whose_key_is_gone_has_lost_its_place() -> None:
    with pytest.raises(LockLostError):
        _predecessor(QUEUE, "l/a/9")


def test_names_with_a_slash_or_empty_are_refused() -> None:
    assert _queue_prefix("locks/", "jobs") == "locks/jobs/"
    for bad in ("", "a/b"):
        with pytest.raises(ValueError):
            _queue_prefix("locks/", bad)


def test_an_observer_reports_a_change_of_leader_only() -> None:
    observer = _Observer([_entry("e/w/2", 5, b"w2"), _entry("e/w/1", 3, b"w1")])
    assert observer.value() == b"w1"
    queued = WatchEvent("put", 8, "e/w/3", b"w3", 8, 8, 1, 3)
    assert not observer.changed(queued)  # a new contender at the back changes nothing
    assert observer.changed(WatchEvent("delete", 9, "e/w/1"))
    assert observer.value() == b"w2"
    assert observer.changed(WatchEvent("put", 10, "e/w/2", b"w2 again", 5, 10, 2, 2))
    assert observer.value() == b"w2 again"  # a proclamation of the same leader is news too
    observer.changed(WatchEvent("delete", 11, "e/w/2"))
    assert observer.changed(WatchEvent("delete", 12, "e/w/3"))
    assert observer.value() is None

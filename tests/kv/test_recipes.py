"""The decisions of the lock and election recipes, without a cluster: who holds, whom a waiter
watches, when a contender has lost its place (a key gone, or a TTL without a successful
keepalive by its own clock), when an observer's leader changes, and that a queue longer than
a page is read to its end."""

from __future__ import annotations

import asyncio
import types

import pytest

from raftly.kv import recipes
from raftly.kv.client_coord import Entry, Page, WatchEvent
from raftly.kv.recipes import (
    AsyncElection,
    Election,
    LockLostError,
    _Observer,
    _predecessor,
    _Queue,
    _queue_prefix,
)


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


def test_lost_turns_true_a_ttl_after_the_send_of_the_last_successful_keepalive_and_stays(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(recipes, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    queue = _Queue("a", 3, "locks/", b"")
    assert not queue.lost  # nothing granted yet: nothing to lose
    queue._enter(7, 3, sent=100.0)  # the grant was sent at 100
    clock[0] = 102.9
    assert not queue.lost
    queue._renewed(101.0)  # a keepalive sent at 101 succeeded: the lease lasts until 104
    clock[0] = 103.9
    assert not queue.lost
    clock[0] = 104.0  # cut off since: the leader may have expired it by now
    assert queue.lost
    queue._renewed(103.5)  # a late answer does not bring a lost lock back
    clock[0] = 104.1
    assert queue.lost
    queue._enter(8, 3, sent=104.1)  # a new acquire starts afresh
    assert not queue.lost


class _PagedNode:
    """A stub client's ``range``: pages of ``limit`` keys in key order, the n-th page read at
    ``revisions[n]``; ``calls`` records (start_after, limit) of each read."""

    def __init__(self, entries: list[Entry], revisions: list[int]) -> None:
        self.entries = entries
        self.revisions = revisions
        self.calls: list[tuple[str | None, int]] = []

    def range(self, prefix: str, *, limit: int, start_after: str | None = None) -> Page:
        self.calls.append((start_after, limit))
        keys = sorted((e for e in self.entries if e.key.startswith(prefix)
                       and (start_after is None or e.key > start_after)), key=lambda e: e.key)
        return Page(keys[:limit], len(keys) > limit, self.revisions[len(self.calls) - 1])


class _AsyncPagedNode(_PagedNode):
    async def range(self, prefix: str, *, limit: int,  # type: ignore[override]
                    start_after: str | None = None) -> Page:
        return super().range(prefix, limit=limit, start_after=start_after)


# Key order (by lease id) is not creation order: the holder's key comes last.
LONG_QUEUE = [_entry("e/w/1", 9, b"w1"), _entry("e/w/2", 8, b"w2"), _entry("e/w/3", 7, b"w3"),
              _entry("e/w/4", 6, b"w4"), _entry("e/w/5", 2, b"leader")]


def test_a_queue_longer_than_a_page_is_read_to_its_end_and_the_holder_found_on_the_last(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recipes, "QUEUE_PAGE", 2)
    node = _PagedNode(LONG_QUEUE, [20, 21, 22])
    leader = Election(node, "w", prefix="e/").leader()  # type: ignore[arg-type]
    assert leader is not None and leader.value == b"leader"
    assert node.calls == [(None, 2), ("e/w/2", 2), ("e/w/4", 2)]


def test_a_paged_queue_read_reports_its_lowest_revision_for_the_watch_that_follows(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recipes, "QUEUE_PAGE", 2)
    node = _PagedNode(LONG_QUEUE, [31, 30, 32])
    kvs, revision = recipes._read_queue(node, "e/w/")  # type: ignore[arg-type]
    assert (len(kvs), revision) == (5, 30)


def test_the_async_election_reads_a_long_queue_to_its_end_too(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recipes, "QUEUE_PAGE", 2)
    node = _AsyncPagedNode(LONG_QUEUE, [20, 21, 22])
    leader = asyncio.run(AsyncElection(node, "w", prefix="e/").leader())  # type: ignore[arg-type]
    assert leader is not None and leader.value == b"leader"
    assert len(node.calls) == 3

"""The watch hub against a state machine fed directly: each revision exactly once from the
watch's start (backlog, then live), prefixes, the slow-watcher cut-off, cancellation when a
snapshot restore skipped revisions, the watch cap and Compacted."""

from __future__ import annotations

import asyncio
import io

import pytest
from kv_helpers import Applier, run

from raftly.kv.history import Compacted, Event
from raftly.kv.state_machine import Delete, DeleteRange, KVStateMachine, Put
from raftly.kv.watch_hub import Cancelled, TooManyWatches, Watcher, WatchHub


async def drain(watcher: Watcher) -> list[Event | Cancelled]:
    """Everything the watcher has to send now (events flattened, then its end, if any)."""
    out: list[Event | Cancelled] = []
    while True:
        item = await watcher.next(0.01)
        if item is None:
            return out
        if isinstance(item, Cancelled):
            return [*out, item]
        out += item


def test_a_watcher_gets_every_revision_from_its_start_once_backlog_then_live() -> None:
    async def main() -> None:
        a = Applier()
        hub = WatchHub(a.sm)
        a(Put("p/1", b"a"))
        a(Put("q", b"other"))
        a(Put("p/2", b"b"))
        watcher = hub.watch("p/", 1)
        assert watcher.next_revision == 4
        a(Put("p/3", b"c"))
        a(DeleteRange("p/"))
        events = await drain(watcher)
        assert all(isinstance(e, Event) for e in events)
        assert [(e.revision, e.type, e.key) for e in events  # type: ignore[union-attr]
                ] == [(1, "put", "p/1"), (3, "put", "p/2"), (4, "put", "p/3"),
                      (5, "delete", "p/1"), (5, "delete", "p/2"), (5, "delete", "p/3")]
        assert watcher.idle
        # A watch from "now" starts with the next revision.
        later = hub.watch("", None)
        a(Delete("q"))
        assert [e.revision for e in await drain(later)] == [6]  # type: ignore[union-attr]

    run(main())


def test_a_watch_from_before_the_history_is_compacted_and_one_from_the_future_waits() -> None:
    async def main() -> None:
        a = Applier(KVStateMachine(history_limit=2))
        hub = WatchHub(a.sm)
        for i in range(5):
            a(Put(f"k{i}", b"v"))
        with pytest.raises(Compacted) as gone:
            hub.watch("", 2)
        assert (gone.value.oldest_available, gone.value.current) == (4, 5)
        future = hub.watch("", 8)
        for i in range(4):
            a(Put("f", str(i).encode()))
        assert [e.revision for e in await drain(future)] == [8, 9]  # type: ignore[union-attr]

    run(main())


def test_a_slow_watcher_is_cancelled_with_the_revision_to_resume_from() -> None:
    async def main() -> None:
        a = Applier()
        hub = WatchHub(a.sm, max_events=3)
        watcher = hub.watch("", None)
        a(Put("k", b"1"))
        assert [e.revision for e in await drain(watcher)] == [1]  # type: ignore[union-attr]
        for i in range(5):  # nobody sends: the queue passes 3 events
            a(Put("k", str(i).encode()))
        assert await drain(watcher) == [Cancelled(watcher.cancelled.reason,  # type: ignore[union-attr]
                                                  2)]
        assert "slow watcher" in watcher.cancelled.reason  # type: ignore[union-attr]
        # Resuming there misses nothing and repeats nothing.
        resumed = hub.watch("", 2)
        assert [e.revision for e in await drain(resumed)] == [2, 3, 4, 5, 6]  # type: ignore[union-attr]

    run(main())


def test_a_byte_bound_cuts_off_a_watcher_too() -> None:
    async def main() -> None:
        a = Applier()
        hub = WatchHub(a.sm, max_bytes=10_000)
        watcher = hub.watch("", None)
        for _ in range(3):
            a(Put("k", b"x" * 4000))
        assert watcher.cancelled is not None and watcher.cancelled.next_revision == 1

    run(main())


def restore_to(a: Applier, revision: int) -> None:
    """Restore ``a``'s machine from the snapshot of another one at ``revision``."""
    source = Applier()
    for i in range(revision):
        source(Put(f"k{i}", b"v"))
    sink = io.BytesIO()
    source.sm.capture().persist(sink)
    a.sm.restore(io.BytesIO(sink.getvalue()))
    a.index = revision


def test_a_restore_that_skipped_revisions_cancels_the_watchers_that_needed_them() -> None:
    async def main() -> None:
        a = Applier()
        hub = WatchHub(a.sm)
        a(Put("k0", b"v"))
        behind = hub.watch("", 2)  # needs revisions 2.. which the restore skips
        ahead = hub.watch("", 9)  # starts after the snapshot's revision: unaffected
        restore_to(a, 6)  # the swap tells the hub at once: nothing to poll
        end = await drain(behind)
        assert len(end) == 1 and isinstance(end[0], Cancelled)
        assert "snapshot restore" in end[0].reason and end[0].next_revision == 2
        assert ahead.cancelled is None
        for i in range(3):
            a(Put("k", str(i).encode()))
        assert [e.revision for e in await drain(ahead)] == [9]  # type: ignore[union-attr]

    run(main())


def test_a_restore_is_noticed_at_the_next_apply_too() -> None:
    async def main() -> None:
        a = Applier()
        hub = WatchHub(a.sm)
        watcher = hub.watch("", None)
        restore_to(a, 4)
        a(Put("late", b"v"))  # revision 5: the hub sees the floor moved to 4 first
        end = await drain(watcher)
        assert len(end) == 1 and isinstance(end[0], Cancelled) and end[0].next_revision == 1

    run(main())


def test_the_watch_cap_refuses_more_and_a_closed_watch_frees_its_place() -> None:
    async def main() -> None:
        hub = WatchHub(KVStateMachine(), max_watches=2)
        first = hub.watch("", None)
        hub.watch("", None)
        with pytest.raises(TooManyWatches):
            hub.watch("", None)
        first.close()
        hub.watch("", None)
        assert len(hub) == 2
        hub.close()

    run(main())


def test_next_returns_none_when_idle_for_the_timeout() -> None:
    async def main() -> None:
        hub = WatchHub(KVStateMachine())
        watcher = hub.watch("", None)
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert await watcher.next(0.05) is None
        assert loop.time() - start >= 0.04

    run(main())


def test_one_revision_past_the_bounds_is_not_a_slow_watcher() -> None:
    async def main() -> None:
        a = Applier()
        hub = WatchHub(a.sm, max_events=3, max_bytes=10_000)
        watcher = hub.watch("", None)
        for i in range(10):
            a(Put(f"big/{i}", b"x" * 2000))
            assert [e.revision for e in await drain(watcher)] == [i + 1]  # type: ignore[union-attr]
        a(DeleteRange("big/"))  # 10 events in one revision: more than either bound alone
        assert watcher.cancelled is None
        assert [e.key for e in await drain(watcher)] == [f"big/{i}" for i in range(10)]  # type: ignore[union-attr]
        assert hub.queued_bytes == 0

    run(main())


def test_past_the_global_budget_the_biggest_backlog_is_cut_off() -> None:
    async def main() -> None:
        a = Applier()
        # Each watcher may hold 100 kB, but all of them together only ~10 kB.
        hub = WatchHub(a.sm, max_bytes=100_000, max_total_bytes=10_000)
        small = hub.watch("s/", None)
        big = hub.watch("", None)
        a(Put("s/1", b"x" * 1000))
        a(Put("b/1", b"x" * 3000))
        a(Put("b/2", b"x" * 3000))
        assert small.cancelled is None and big.cancelled is None
        a(Put("b/3", b"x" * 3000))  # over the budget: the biggest backlog goes
        assert big.cancelled is not None and "slow watcher" in big.cancelled.reason
        assert big.cancelled.next_revision == 1
        assert small.cancelled is None
        assert hub.queued_bytes < 10_000
        assert [e.key for e in await drain(small)] == ["s/1"]  # type: ignore[union-attr]
        big.close()
        small.close()
        assert hub.queued_bytes == 0

    run(main())

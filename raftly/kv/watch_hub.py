"""The watch hub of one node: every open watch, fed the events its state machine applies.

A ``Watcher`` is registered and handed its backlog (``events_since``) in one synchronous step
on the event loop, where applies also run, so no revision falls between the two: it then gets
every applied revision from its ``from_revision`` on, each exactly once (a revision below its
next one is skipped), in order. Its events wait in a queue until the stream sends them; a
watcher whose queue passes ``max_events`` or ``max_bytes`` is cut off (a slow watcher: its
queue is dropped and it ends with a ``Cancelled`` saying where to resume), never buffered
without bound; so are the biggest backlogs when all the queues together pass
``max_total_bytes``. A single revision is never a backlog: a watcher is cut off only for
several revisions waiting.

A snapshot restore replaces the state without events. The machine tells the hub right after
its swap (``on_restore``, on the event loop), and the hub cancels every watcher that needed a
revision the restore skipped: it ends, after the events it had, with the revision to resume
from (which a reconnect will find compacted, or served by a node that has it).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass

from raftly.kv.history import Event, event_bytes
from raftly.kv.state_machine import KVStateMachine

logger = logging.getLogger("raftly.kv.watch_hub")

EVENT_OVERHEAD = 128
"""Bytes counted per queued event beyond its key and value (its JSON line's other fields)."""


class TooManyWatches(Exception):
    """The node serves its ``max_watches`` already."""


@dataclass(frozen=True, slots=True)
class Cancelled:
    """A watch's end: why, and the first revision the watcher has not been sent."""

    reason: str
    next_revision: int


class Watcher:
    """One watch: the events under ``prefix`` from ``next_revision`` on, queued until sent."""

    __slots__ = ("_backlog", "_bytes", "_events", "_hub", "_queue", "_wake", "cancelled",
                 "next_revision", "prefix")

    def __init__(self, hub: WatchHub, prefix: str, next_revision: int,
                 backlog: list[Event]) -> None:
        self._hub = hub
        self.prefix = prefix
        self.next_revision = next_revision
        """The first revision not yet offered to this watcher."""
        self._queue: deque[list[Event]] = deque()
        """Unsent events, one list per revision (a revision is sent whole or not at all)."""
        self._events = 0
        self._bytes = 0
        self._wake = asyncio.Event()
        self.cancelled: Cancelled | None = None
        # The backlog comes from the history, which holds it anyway: it is not counted against
        # the queue's bounds (a watch starting far back is not a slow watcher).
        self._backlog: deque[list[Event]] = deque(_by_revision(backlog))

    def offer(self, revision: int, events: list[Event]) -> None:
        """The events of applied revision ``revision`` (all keys; those under the prefix are
        queued)."""
        if self.cancelled is not None or revision < self.next_revision:
            return
        self.next_revision = revision + 1
        mine = [e for e in events if e.key.startswith(self.prefix)]
        if not mine:
            return
        self._queue.append(mine)
        self._count(len(mine), _weight(mine))
        hub = self._hub
        # One revision alone is never "slow" (the client cannot take less than a revision):
        # only a backlog of several is.
        if len(self._queue) > 1 and (self._events > hub.max_events
                                     or self._bytes > hub.max_bytes):
            self.cut_off(f"more than {hub.max_events} events or {hub.max_bytes} bytes waited "
                         "to be sent")
        self._wake.set()

    def cut_off(self, why: str) -> None:
        """Drop the queue and end as a slow watcher, resuming at its first unsent revision."""
        resume = self._queue[0][0].revision
        self._queue.clear()
        self._count(-self._events, -self._bytes)
        self.cancel(f"slow watcher: {why}; reconnect with from_revision = next_revision", resume)

    def _count(self, events: int, size: int) -> None:
        self._events += events
        self._bytes += size
        self._hub.queued_bytes += size

    def cancel(self, reason: str, next_revision: int | None = None) -> None:
        """End the watch once its queued events are sent (``next_revision``: where the client
        resumes; default the first revision not offered)."""
        if self.cancelled is None:
            self.cancelled = Cancelled(reason, next_revision if next_revision is not None
                                       else self.next_revision)
            self._wake.set()

    async def next(self, timeout: float) -> list[Event] | Cancelled | None:
        """The next revision's events, the end of the watch, or None after ``timeout`` seconds
        with nothing to send (time for a progress line)."""
        while True:
            if self._backlog:
                return self._backlog.popleft()
            if self._queue:
                batch = self._queue.popleft()
                self._count(-len(batch), -_weight(batch))
                return batch
            if self.cancelled is not None:
                return self.cancelled
            self._wake.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                return None

    @property
    def idle(self) -> bool:
        """Nothing waits to be sent: it has everything up to the store's revision."""
        return not self._backlog and not self._queue and self.cancelled is None

    def close(self) -> None:
        """Unregister (the stream ended) and let go of the queue."""
        self._queue.clear()
        self._count(-self._events, -self._bytes)
        self._hub._watchers.discard(self)


class WatchHub:
    """Registers watchers and hands them each applied revision (``kv.on_events``)."""

    def __init__(self, kv: KVStateMachine, *, max_watches: int = 1000,
                 max_events: int = 10_000, max_bytes: int = 16 << 20,
                 max_total_bytes: int = 256 << 20) -> None:
        self.kv = kv
        self.max_watches = max_watches
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.max_total_bytes = max_total_bytes
        """The budget of all the watchers' queues together: past it, the biggest backlogs
        are cut off (``max_watches`` x ``max_bytes`` alone could be gigabytes)."""
        self.queued_bytes = 0
        self._watchers: set[Watcher] = set()
        self._seen = kv.revision
        """The last revision the hub has handed out (or the store had when it started)."""
        kv.on_events.append(self._on_events)
        kv.on_restore.append(self._on_restore)

    def __len__(self) -> int:
        return len(self._watchers)

    def watch(self, prefix: str, from_revision: int | None) -> Watcher:
        """A new watcher of ``prefix`` from ``from_revision`` (default: the next revision).

        Raises Compacted when the history no longer reaches back to ``from_revision``, and
        TooManyWatches at the cap.
        """
        if len(self._watchers) >= self.max_watches:
            raise TooManyWatches(f"this node serves {self.max_watches} watches, the most "
                                 "allowed (--max-watches)")
        kv = self.kv
        current = kv.revision  # read once: every step below agrees on it
        start = current + 1 if from_revision is None else from_revision
        # Raises Compacted when the history starts after ``start``.
        backlog = kv.events_since(start, prefix) if start <= current else []
        # Revisions up to the store's are in the backlog (or had nothing under the prefix).
        watcher = Watcher(self, prefix, max(start, current + 1), backlog)
        self._watchers.add(watcher)
        return watcher

    def _on_events(self, events: list[Event]) -> None:
        revision = events[0].revision
        self._seen = revision
        for watcher in list(self._watchers):
            watcher.offer(revision, events)
        if self.queued_bytes > self.max_total_bytes:
            self._over_budget()

    def _over_budget(self) -> None:
        # The biggest backlogs of several revisions go first; one revision alone stays.
        backlogged = sorted((w for w in self._watchers if len(w._queue) > 1),
                            key=lambda w: w._bytes, reverse=True)
        for watcher in backlogged:
            if self.queued_bytes <= self.max_total_bytes:
                return
            watcher.cut_off(f"the watches of this node had more than {self.max_total_bytes} "
                            "bytes waiting to be sent, this one's the most")

    def _on_restore(self) -> None:
        """Cancel the watchers that needed a revision the restore just skipped."""
        floor = self.kv.revision
        if floor <= self._seen:
            return
        # Revisions self._seen+1 .. floor were applied by the restore, without events.
        logger.info("a snapshot restore skipped revisions %d..%d; cancelling the watchers "
                    "that needed them", self._seen + 1, floor)
        for watcher in list(self._watchers):
            if watcher.next_revision <= floor:
                watcher.cancel(f"a snapshot restore on this node skipped revisions "
                               f"{self._seen + 1} to {floor}; reconnect (to this or "
                               "another node) with from_revision = next_revision")
        self._seen = floor

    def close(self) -> None:
        """End every watch (the node stops)."""
        for watcher in list(self._watchers):
            watcher.cancel("the node is shutting down; reconnect (to another node) with "
                           "from_revision = next_revision")
        if self._on_events in self.kv.on_events:
            self.kv.on_events.remove(self._on_events)
        if self._on_restore in self.kv.on_restore:
            self.kv.on_restore.remove(self._on_restore)


def _weight(events: list[Event]) -> int:
    return sum(event_bytes(e) + EVENT_OVERHEAD for e in events)


def _by_revision(events: list[Event]) -> list[list[Event]]:
    out: list[list[Event]] = []
    for event in events:
        if out and out[-1][0].revision == event.revision:
            out[-1].append(event)
        else:
            out.append([event])
    return out


__all__ = ["Cancelled", "TooManyWatches", "WatchHub", "Watcher"]

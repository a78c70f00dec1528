"""The KV state machine's watch history: the ``Event`` of every change, a bounded window of the
latest ones, and ``Compacted`` for a request older than that window.

A watcher catches up from ``History.since`` and then follows the events each apply hands to its
subscribers; the window only bounds how far back a (re)connecting watcher may start.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final

PUT: Final = "put"
DELETE: Final = "delete"


@dataclass(frozen=True, slots=True)
class Event:
    """One key changed at ``revision``: its state after a put, or its deletion (``type``
    DELETE, with an empty value and zero create revision, version and lease)."""

    revision: int
    type: str
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


def event_bytes(event: Event) -> int:
    """What an event weighs against byte bounds: its key and value."""
    return len(event.key) + len(event.value)


class Compacted(Exception):
    """Events from the asked revision are gone: only ``oldest_available`` on are kept."""

    def __init__(self, oldest_available: int, current: int) -> None:
        super().__init__(f"revisions before {oldest_available} are compacted "
                         f"(current revision {current})")
        self.oldest_available = oldest_available
        self.current = current


class History:
    """The events of every revision after ``floor``: at most ``limit`` of them and
    ``max_bytes`` of their keys and values, except that the newest revision always stays.

    When it grows past a bound, the oldest revisions leave whole (the floor rises to the
    newest revision dropped), so a revision in the window always has all of its events; the
    newest one is kept even alone past a bound, or a watcher resuming at it would be told
    "compacted" every time.
    """

    __slots__ = ("_bytes", "_events", "floor", "limit", "max_bytes")

    def __init__(self, limit: int, floor: int = 0, max_bytes: int = 64 << 20) -> None:
        if limit < 1 or max_bytes < 1:
            raise ValueError("the history bounds must be positive")
        self.limit = limit
        self.max_bytes = max_bytes
        self.floor = floor
        self._events: deque[Event] = deque()
        self._bytes = 0

    def add(self, events: list[Event]) -> None:
        """Append the events of one revision (newer than any before)."""
        if not events:
            return
        events_ = self._events
        events_.extend(events)
        self._bytes += sum(event_bytes(e) for e in events)
        newest = events[-1].revision
        while ((len(events_) > self.limit or self._bytes > self.max_bytes)
               and events_[0].revision != newest):
            self.floor = events_[0].revision
            while events_[0].revision == self.floor:
                self._bytes -= event_bytes(events_.popleft())

    @property
    def oldest_available(self) -> int:
        return self.floor + 1

    def since(self, revision: int, prefix: str, current: int) -> list[Event]:
        """Every event at ``revision`` or later of a key under ``prefix``, oldest first.

        Raises Compacted if events of ``revision`` may have been dropped. ``current`` is the
        store's revision, for the exception.
        """
        if revision <= self.floor:
            raise Compacted(self.oldest_available, current)
        out: list[Event] = []
        # Walk back from the newest: a catching-up watcher asks for the recent tail.
        for event in reversed(self._events):
            if event.revision < revision:
                break
            if event.key.startswith(prefix):
                out.append(event)
        out.reverse()
        return out

    def __len__(self) -> int:
        return len(self._events)


__all__ = ["DELETE", "PUT", "Compacted", "Event", "History", "event_bytes"]

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


class Compacted(Exception):
    """Events from the asked revision are gone: only ``oldest_available`` on are kept."""

    def __init__(self, oldest_available: int, current: int) -> None:
        super().__init__(f"revisions before {oldest_available} are compacted "
                         f"(current revision {current})")
        self.oldest_available = oldest_available
        self.current = current


class History:
    """The events of every revision after ``floor``, at most ``limit`` of them.

    When it grows past ``limit``, the oldest revisions leave whole (the floor rises to the
    newest revision dropped), so a revision in the window always has all of its events.
    """

    __slots__ = ("_events", "floor", "limit")

    def __init__(self, limit: int, floor: int = 0) -> None:
        if limit < 1:
            raise ValueError("the history limit must be positive")
        self.limit = limit
        self.floor = floor
        self._events: deque[Event] = deque()

    def add(self, events: list[Event]) -> None:
        """Append the events of one revision (newer than any before)."""
        self._events.extend(events)
        if len(self._events) > self.limit:
            events_ = self._events
            while len(events_) > self.limit:
                self.floor = events_.popleft().revision
            while events_ and events_[0].revision == self.floor:
                events_.popleft()

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


__all__ = ["DELETE", "PUT", "Compacted", "Event", "History"]

"""Structured log events: a stable name and fields on a log line, and the JSON line format.

A log call that is an event an operator acts on (a role change, an election, a membership
change, a snapshot, a refused peer) names it and gives its fields through ``extra``::

    logger.info("node %s is %s in term %d", ..., extra=event("role_changed", role="leader"))

The text format prints the message exactly as before and ignores the event. ``JsonFormatter``
writes one JSON object per line: ``time`` (ISO 8601 UTC), ``level``, ``node``, ``logger``,
``event`` (the event's name, or ``"log"`` for a plain line), ``message``, then the event's fields
(and ``traceback`` when the record carries an exception). Standard library only: the core and
the server import it.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

PLAIN = "log"
"""The ``event`` of a line that is no structured event."""

RESERVED = frozenset({"time", "level", "node", "logger", "event", "message", "traceback"})
"""Keys of every JSON line: an event's fields may not use them."""

_NAME = "raftly_event"
_FIELDS = "raftly_fields"


def event(name: str, **fields: Any) -> dict[str, Any]:
    """The ``extra`` of a log call that is the event ``name`` (snake_case) with ``fields``.

    Raises ValueError for a field that would overwrite a key of the line itself: names are
    literals at the call sites, so the first run of a wrong one fails rather than losing data.
    """
    clash = RESERVED.intersection(fields)
    if clash:
        raise ValueError(f"event {name}: fields {sorted(clash)} are reserved")
    return {_NAME: name, _FIELDS: fields}


def event_of(record: logging.LogRecord) -> tuple[str, dict[str, Any]]:
    """The event name and fields of ``record`` (``"log"`` and none for a plain line)."""
    return getattr(record, _NAME, PLAIN), getattr(record, _FIELDS, {})


def role_transition(old_role: str, new_role: str, old_term: int, new_term: int) -> str:
    """The event of a change of role or term, by role values (``"follower"``, ...): an election
    started (a candidate, or a leader at once, in a new term), won, lost, a pre-vote started,
    or another role change (a leader learned, a step down)."""
    campaigning = ("pre-candidate", "candidate")
    if new_role == "leader" and old_role != "leader":
        return "election_won"
    if new_role == "candidate" and new_term != old_term:
        return "election_started"
    if new_role == "pre-candidate" and old_role != "pre-candidate":
        return "pre_vote_started"
    if old_role in campaigning and new_role == "follower":
        return "election_lost"
    return "role_changed"


def role_event(old_role: Any, old_term: int, role: Any, term: int, leader: Any,
               reason: str | None = None) -> dict[str, Any]:
    """The ``extra`` of a role/term/leader change line (roles as ``Role`` or its value; a
    ``None`` old role: the node's first state); ``reason``: why (the core's ``role_reason``)."""
    before = getattr(old_role, "value", old_role)
    after = getattr(role, "value", role)
    name = ("role_changed" if before is None
            else role_transition(str(before), str(after), old_term, term))
    return event(name, role=after, term=term, leader=leader, previous_role=before,
                 previous_term=old_term, reason=reason)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, tagged with the node's name (None when unknown)."""

    def __init__(self, node: str | None = None) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        name, fields = event_of(record)
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
                    .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "node": self.node,
            "logger": record.name,
            "event": name,
            "message": record.getMessage(),
            **fields,
        }
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        # default=str: sets, enums and paths in fields become text rather than breaking the line.
        return json.dumps(line, default=str, ensure_ascii=False)


__all__ = ["PLAIN", "RESERVED", "JsonFormatter", "event", "event_of", "role_event",
           "role_transition"]

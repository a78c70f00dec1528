"""What every route module of the KV HTTP API shares: the ``Reply`` a handler raises to answer
with a JSON error, the checked query parameters of a request, and integer parsing.

Kept apart from raftly.kv.http so the route modules (leases, transactions, watch) can use them
without importing the API class that imports them.
"""

from __future__ import annotations

from aiohttp import web


class Reply(Exception):
    """Raised inside a handler to answer with a JSON error at once."""

    def __init__(self, status: int, message: str, **extra: object) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra
        self.headers: dict[str, str] = {}
        self.close = False
        """Close the connection once answered (a request body that never arrived)."""


PARAMS = web.RequestKey("raftly.query", dict[str, str])
"""Where the query middleware leaves a request's checked parameters."""


def params(request: web.Request) -> dict[str, str]:
    """The request's query parameters, as the query middleware checked them."""
    return request[PARAMS]


def parse_int(text: str) -> int:
    """A non-negative decimal integer; ValueError otherwise."""
    # int() accepts " 7", "+7" and "7_0"; only plain digits are a number here.
    if not text.isascii() or not text.isdigit():
        raise ValueError(f"not a non-negative integer: {text!r}")
    return int(text)


def int_param(request: web.Request, name: str, low: int, high: int,
              default: int | None = None) -> int | None:
    """Query parameter ``name`` as an int from ``low`` to ``high`` (400 naming it otherwise);
    ``default`` when absent."""
    text = params(request).get(name)
    if text is None:
        return default
    try:
        value = parse_int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise Reply(400, f"{name} must be an integer from {low} to {high}", parameter=name)
    return value


__all__ = ["PARAMS", "Reply", "int_param", "params", "parse_int"]

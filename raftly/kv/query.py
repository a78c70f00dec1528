"""Strict parsing of a request's query string: which parameters an endpoint takes, and how.

The HTTP API refuses what it does not understand rather than guessing: a typo (``?expct=``)
silently ignored would turn a compare-and-set into an unconditional write. So a query string is
accepted only when every parameter is one the endpoint takes, appears once, has an ``=``, and is
well-formed percent-encoded UTF-8 (``+`` is a space, as in HTML forms and ``urlencode``).

Pure functions, no aiohttp: the server maps a ``QueryError`` to a 400 naming the parameter.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from urllib.parse import unquote_to_bytes

__all__ = ["QueryError", "parse_query"]

_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
"""A ``%`` that does not start a two-hex-digit escape."""


class QueryError(ValueError):
    """A query string the endpoint refuses; ``parameter`` names the culprit."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


def _decode(text: str) -> str | None:
    """Percent-decode ``text`` (``+`` is a space); None when it is not valid UTF-8 escapes."""
    if _ESCAPE.search(text):
        return None
    try:
        return unquote_to_bytes(text.replace("+", " ")).decode("utf-8")
    except UnicodeDecodeError:
        return None


def parse_query(query_string: str, allowed: Collection[str]) -> dict[str, str]:
    """The parameters of ``query_string`` (without the ``?``), each decoded; raises QueryError.

    Empty pieces (``a=1&&b=2``, a trailing ``&``) are skipped: they carry no parameter.
    """
    params: dict[str, str] = {}
    for piece in query_string.split("&"):
        if not piece:
            continue
        raw_name, eq, raw_value = piece.partition("=")
        name = _decode(raw_name)
        if name is None:
            raise QueryError(raw_name, f"query parameter name {raw_name!r} is not valid "
                                       "percent-encoded UTF-8")
        if name not in allowed:
            takes = ", ".join(sorted(allowed)) if allowed else "no query parameters"
            raise QueryError(name, f"unknown query parameter {name!r} (this endpoint takes "
                                   f"{takes})")
        if not eq:
            raise QueryError(name, f"query parameter {name!r} has no value (write {name}=VALUE)")
        if name in params:
            raise QueryError(name, f"query parameter {name!r} is given more than once")
        value = _decode(raw_value)
        if value is None:
            raise QueryError(name, f"query parameter {name!r} is not valid percent-encoded "
                                   "UTF-8 (percent-encode each byte as %HH)")
        params[name] = value
    return params

"""API authorization: bearer tokens with roles, read from an auth file (TOML).

::

    [[tokens]]
    token = "a long random string"
    role = "write"          # "read", "write" (includes read) or "admin" (includes write)
    name = "deployer"       # optional; what the log says instead of the token

Tokens are kept only as SHA-256 digests and compared in constant time against every known
digest (``hmac.compare_digest``), so neither the comparison's time nor a memory dump tells a
token; they are never logged.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import tomllib
from dataclasses import dataclass
from pathlib import Path

MIN_TOKEN_LENGTH = 16
"""Shorter tokens are refused: guessable tokens would make the auth file decorative."""


class AuthFileError(ValueError):
    """The auth file is missing, not TOML, or not a valid list of tokens."""


class Role(enum.IntEnum):
    """What a token may do; each role includes those below it."""

    READ = 1
    WRITE = 2
    ADMIN = 3


@dataclass(frozen=True, slots=True)
class TokenEntry:
    digest: bytes
    role: Role
    name: str


@dataclass(frozen=True, slots=True)
class Identity:
    """Who made a request, as far as its token says."""

    name: str
    role: Role


class Unauthorized(Exception):
    """No token, or a token that is not in the auth file (HTTP 401)."""


class Forbidden(Exception):
    """A known token whose role is too low for the request (HTTP 403)."""


class Authorizer:
    """Checks ``Authorization`` header values against the tokens of an auth file."""

    def __init__(self, entries: list[TokenEntry]) -> None:
        self._entries = entries

    @classmethod
    def from_file(cls, path: str | Path) -> Authorizer:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise AuthFileError(f"{path}: no such auth file") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise AuthFileError(f"{path}: not a readable TOML file: {exc}") from None
        return cls(parse_tokens(data, str(path)))

    def identify(self, authorization: str | None) -> Identity:
        """The identity behind an ``Authorization`` header value; ``Unauthorized`` if none."""
        if not authorization:
            raise Unauthorized("this API needs a token: send 'Authorization: Bearer TOKEN'")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("the Authorization header must be 'Bearer TOKEN'")
        digest = _digest(token.strip())
        found: TokenEntry | None = None
        for entry in self._entries:  # no early exit: the time does not depend on which matched
            if hmac.compare_digest(entry.digest, digest):
                found = entry
        if found is None:
            raise Unauthorized("unknown token")
        return Identity(found.name, found.role)

    def check(self, authorization: str | None, needed: Role) -> Identity:
        """The identity, if its role is at least ``needed``; else ``Unauthorized``/``Forbidden``."""
        who = self.identify(authorization)
        if who.role < needed:
            raise Forbidden(f"token {who.name!r} has the {who.role.name.lower()} role; this "
                            f"request needs {needed.name.lower()}")
        return who


def parse_tokens(data: dict[str, object], source: str = "auth file") -> list[TokenEntry]:
    tokens = data.get("tokens")
    unknown = set(data) - {"tokens"}
    if unknown:
        raise AuthFileError(f"{source}: unknown key {sorted(unknown)[0]!r} (only [[tokens]])")
    if not isinstance(tokens, list) or not tokens:
        raise AuthFileError(f"{source}: no [[tokens]] entries")
    entries: list[TokenEntry] = []
    seen: set[bytes] = set()
    for n, item in enumerate(tokens, 1):
        where = f"{source}: token #{n}"
        if not isinstance(item, dict):
            raise AuthFileError(f"{where}: not a table")
        extra = set(item) - {"token", "role", "name"}
        if extra:
            raise AuthFileError(f"{where}: unknown key {sorted(extra)[0]!r}")
        token, role, name = item.get("token"), item.get("role"), item.get("name", f"#{n}")
        if not isinstance(token, str) or len(token) < MIN_TOKEN_LENGTH or token != token.strip():
            raise AuthFileError(f"{where}: 'token' must be a string of at least "
                                f"{MIN_TOKEN_LENGTH} characters without surrounding spaces")
        if role not in ("read", "write", "admin"):
            raise AuthFileError(f"{where}: 'role' must be \"read\", \"write\" or \"admin\"")
        if not isinstance(name, str) or not name:
            raise AuthFileError(f"{where}: 'name' must be a non-empty string")
        digest = _digest(token)
        if digest in seen:
            raise AuthFileError(f"{where}: the same token is listed twice")
        seen.add(digest)
        entries.append(TokenEntry(digest, Role[role.upper()], name))
    return entries


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()

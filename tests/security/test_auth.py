"""The auth file and ``Authorizer``: every refusal of a bad file, roles that include the lower
ones, unknown or malformed tokens, and the constant-time comparison against every token."""

from __future__ import annotations

import hmac
from pathlib import Path

import pytest

from raftly.security import auth
from raftly.security.auth import (
    MIN_TOKEN_LENGTH,
    AuthFileError,
    Authorizer,
    Forbidden,
    Identity,
    Role,
    Unauthorized,
)

READER = "r" * 20
WRITER = "w" * 20
ADMIN = "a" * 24

GOOD = f"""
[[tokens]]
token = "{READER}"
role = "read"
name = "dashboard"

[[tokens]]
token = "{WRITER}"
role = "write"

[[tokens]]
token = "{ADMIN}"
role = "admin"
name = "ops"
"""


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "auth.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


@pytest.fixture
def authorizer(tmp_path: Path) -> Authorizer:
    return Authorizer.from_file(write(tmp_path, GOOD))


def test_roles_are_ordered_read_below_write_below_admin() -> None:
    assert Role.READ < Role.WRITE < Role.ADMIN


def test_each_token_has_its_role_and_name(authorizer: Authorizer) -> None:
    assert authorizer.identify(f"Bearer {READER}") == Identity("dashboard", Role.READ)
    # Without a name an entry is called by its position, never by its token.
    assert authorizer.identify(f"Bearer {WRITER}") == Identity("#2", Role.WRITE)
    assert authorizer.identify(f"bearer {ADMIN}") == Identity("ops", Role.ADMIN)


@pytest.mark.parametrize(("token", "allowed"), [
    (READER, {Role.READ}),
    (WRITER, {Role.READ, Role.WRITE}),
    (ADMIN, {Role.READ, Role.WRITE, Role.ADMIN}),
])
def test_a_role_includes_the_roles_below_it(authorizer: Authorizer, token: str,
                                            allowed: set[Role]) -> None:
    for needed in Role:
        if needed in allowed:
            assert authorizer.check(f"Bearer {token}", needed).role >= needed
        else:
            with pytest.raises(Forbidden, match=f"needs {needed.name.lower()}"):
                authorizer.check(f"Bearer {token}", needed)


@pytest.mark.parametrize(("header", "message"), [
    (None, "needs a token"),
    ("", "needs a token"),
    ("Bearer", "must be 'Bearer TOKEN'"),
    ("Bearer    ", "must be 'Bearer TOKEN'"),
    (f"Basic {READER}", "must be 'Bearer TOKEN'"),
    (READER, "must be 'Bearer TOKEN'"),
    ("Bearer " + "x" * 20, "unknown token"),
    (f"Bearer {READER}x", "unknown token"),
])
def test_missing_malformed_or_unknown_tokens_are_unauthorized(authorizer: Authorizer,
                                                              header: str | None,
                                                              message: str) -> None:
    with pytest.raises(Unauthorized, match=message):
        authorizer.check(header, Role.READ)


def test_refusals_never_quote_the_token(authorizer: Authorizer) -> None:
    wrong = "Bearer " + "s3cret" * 4
    with pytest.raises(Unauthorized) as unknown:
        authorizer.check(wrong, Role.READ)
    with pytest.raises(Forbidden) as low:
        authorizer.check(f"Bearer {READER}", Role.ADMIN)
    assert "s3cret" not in str(unknown.value)
    assert READER not in str(low.value) and "dashboard" in str(low.value)


def test_every_known_token_is_compared_in_constant_time(authorizer: Authorizer,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    compare = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    # The first token matches, yet all three are compared: the time says nothing of which.
    assert authorizer.identify(f"Bearer {READER}").role is Role.READ
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(Unauthorized):
        authorizer.identify("Bearer " + "z" * 20)
    assert len(calls) == 3
    # Digests are compared, never the tokens themselves.
    assert all(len(a) == len(b) == 32 for a, b in calls)


def test_tokens_are_kept_only_as_digests(authorizer: Authorizer) -> None:
    kept = repr(authorizer._entries)
    assert READER not in kept and WRITER not in kept and ADMIN not in kept


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(AuthFileError, match="no such auth file"):
        Authorizer.from_file(tmp_path / "absent.toml")


@pytest.mark.parametrize(("text", "message"), [
    (b"\xff\xfe not utf-8", "not a readable TOML file"),
    ("[[tokens]\n", "not a readable TOML file"),
    ("", r"no \[\[tokens\]\] entries"),
    ("tokens = []", r"no \[\[tokens\]\] entries"),
    ('tokens = "abc"', r"no \[\[tokens\]\] entries"),
    (f'users = 1\n[[tokens]]\ntoken = "{READER}"\nrole = "read"',
     r"unknown key 'users' \(only \[\[tokens\]\]\)"),
    ('tokens = ["x"]', "token #1: not a table"),
    (f'[[tokens]]\ntoken = "{READER}"\nrole = "read"\nscope = "all"', "token #1: unknown key "
     "'scope'"),
    ('[[tokens]]\nrole = "read"', f"token #1: 'token' must be a string of at least "
                                  f"{MIN_TOKEN_LENGTH} characters"),
    ('[[tokens]]\ntoken = 12345678901234567890\nrole = "read"', "'token' must be a string"),
    ('[[tokens]]\ntoken = "short"\nrole = "read"', "'token' must be a string"),
    (f'[[tokens]]\ntoken = " {READER}"\nrole = "read"', "without surrounding spaces"),
    (f'[[tokens]]\ntoken = "{READER}"', "token #1: 'role' must be \"read\", \"write\" or "
                                        "\"admin\""),
    (f'[[tokens]]\ntoken = "{READER}"\nrole = "root"', "'role' must be"),
    (f'[[tokens]]\ntoken = "{READER}"\nrole = "READ"', "'role' must be"),
    (f'[[tokens]]\ntoken = "{READER}"\nrole = "read"\nname = ""', "token #1: 'name' must be a "
                                                                  "non-empty string"),
    (f'[[tokens]]\ntoken = "{READER}"\nrole = "read"\nname = 7', "'name' must be"),
    (f'[[tokens]]\ntoken = "{READER}"\nrole = "read"\n[[tokens]]\ntoken = "{READER}"\n'
     'role = "admin"', "token #2: the same token is listed twice"),
])
def test_bad_auth_files_are_refused_with_what_is_wrong(tmp_path: Path, text: str | bytes,
                                                       message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(AuthFileError, match=message) as refused:
        Authorizer.from_file(path)
    assert str(path) in str(refused.value)
    assert READER not in str(refused.value), "a refusal never echoes a token"

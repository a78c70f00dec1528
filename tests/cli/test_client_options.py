"""The client options of ``raftly kv/status/member/leader``: ``--cacert``, ``--cert``/``--key``
and ``--token`` from the command line or the environment, https endpoints, and where they are
refused."""

from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path

import pytest

from raftly.cli import build_parser, main
from raftly.cli.common import UsageError, client_options, parse_endpoints, refusal


def _options(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def _run(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(argv))
    return code, err.getvalue()


def test_tls_options_and_token_come_from_flags_before_or_after_the_command(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RAFTLY_CACERT", "RAFTLY_CERT", "RAFTLY_KEY", "RAFTLY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    args = _options(["--cacert", "ca.crt", "kv", "put", "k", "v", "--cert", "c.crt",
                     "--key", "c.key", "--token", "t0k"])
    options = client_options(args)
    assert (options.cacert, options.cert, options.key, options.token) == (
        "ca.crt", "c.crt", "c.key", "t0k")
    assert args.key == "k", "--key must not replace the KEY of `kv put`"


def test_the_environment_fills_in_what_the_flags_do_not_say(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAFTLY_CACERT", "env-ca.crt")
    monkeypatch.setenv("RAFTLY_CERT", "env.crt")
    monkeypatch.setenv("RAFTLY_KEY", "env.key")
    monkeypatch.setenv("RAFTLY_TOKEN", "env-token")
    options = client_options(_options(["status", "--token", "flag-token"]))
    assert (options.cacert, options.cert, options.key, options.token) == (
        "env-ca.crt", "env.crt", "env.key", "flag-token")
    monkeypatch.setenv("RAFTLY_TOKEN", "")  # set but empty: no token
    assert client_options(_options(["status"])).token is None


def test_https_endpoints_are_addresses_and_other_schemes_are_not() -> None:
    assert parse_endpoints("https://10.0.0.1:8001,8002") == ["https://10.0.0.1:8001",
                                                             "10.0.0.1:8002"]
    with pytest.raises(UsageError, match="is not an address"):
        parse_endpoints("ftp://10.0.0.1:8001")


def test_client_options_are_refused_on_commands_that_are_not_clients() -> None:
    code, err = _run("--cacert", "ca.crt", "cluster", "up")
    assert code == 2
    assert "--cacert is an option of `raftly kv`" in err
    code, err = _run("--key", "k.key", "cluster", "up")
    assert code == 2 and "--key is an option" in err


def test_unusable_tls_files_are_one_line_errors(tmp_path: Path) -> None:
    code, err = _run("kv", "get", "k", "--endpoints", "127.0.0.1:1",
                     "--cacert", str(tmp_path / "missing.crt"))
    assert code == 1 and err.count("\n") == 1
    assert "TLS:" in err and "no such CA certificate file" in err
    code, err = _run("member", "list", "--endpoints", "127.0.0.1:1",
                     "--cert", str(tmp_path / "c.crt"))
    assert code == 1 and "both --cert and --key" in err and err.count("\n") == 1


def test_401_and_403_say_what_to_do() -> None:
    assert "--token or $RAFTLY_TOKEN" in refusal(401, "no token")
    assert refusal(403, "too low").startswith("forbidden (403): too low")
    assert refusal(409, "in flight") == "refused (409): in flight"


def test_the_command_after_a_double_dash_is_split_off_only_for_lock_and_election() -> None:
    from raftly.cli.coord import split_command

    assert split_command(["lock", "--ttl", "5", "x", "--", "sh", "-c", "exit 3"]) == (
        ["lock", "--ttl", "5", "x"], ["sh", "-c", "exit 3"])
    assert split_command(["election", "campaign", "e", "v", "--", "a", "--", "b"]) == (
        ["election", "campaign", "e", "v"], ["a", "--", "b"])
    assert split_command(["kv", "put", "--", "-k", "v"]) == (["kv", "put", "--", "-k", "v"],
                                                              None)
    assert split_command(["lock", "x"]) == (["lock", "x"], None)
    assert split_command(["kv", "put", "lock", "--", "v"]) == (["kv", "put", "lock", "--", "v"],
                                                               None)
    assert split_command(["--endpoints", "h:1", "lock", "x", "--", "c"]) == (
        ["--endpoints", "h:1", "lock", "x"], ["c"])

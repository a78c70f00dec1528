"""``raftly serve``'s security flags: bad mixes are usage errors (exit 2) before anything starts,
a bad auth file is one clear error line (exit 1), and good flags reach ``serve()`` as TlsFiles,
an Authorizer, the token (``$RAFTLY_TOKEN`` by default) and the connection cap."""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path
from typing import Any

import pytest

from raftly import eventloop
from raftly.cli import main
from raftly.kv import service
from raftly.security.auth import Authorizer, Role
from raftly.security.tls import TlsFiles

TOKEN = "admin-token-0123456789"


def raftly(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(argv))
    return code, err.getvalue()


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """What ``serve()`` was called with (instead of starting a node)."""
    seen: dict[str, Any] = {}

    async def fake_serve(*args: Any, **kwargs: Any) -> None:
        seen.update(kwargs)

    monkeypatch.setattr(service, "serve", fake_serve)
    monkeypatch.delenv("RAFTLY_TOKEN", raising=False)
    return seen


def base(tmp_path: Path) -> list[str]:
    return ["serve", "--cluster", str(tmp_path / "cluster.toml"), "--id", "n1",
            "--data-dir", str(tmp_path / "n1")]


@pytest.mark.parametrize(("flags", "message"), [
    (["--tls-dir", "d", "--tls-cert", "c"], "give --tls-dir, or --tls-cert --tls-key --tls-ca"),
    (["--tls-cert", "c", "--tls-key", "k"], "--tls-cert, --tls-key and --tls-ca go together"),
    (["--tls-ca", "ca"], "go together"),
    (["--client-cert-auth"], "--client-cert-auth needs TLS"),
])
def test_bad_tls_flag_mixes_are_usage_errors(served: dict[str, Any], tmp_path: Path,
                                              flags: list[str], message: str) -> None:
    code, err = raftly(*base(tmp_path), *flags)
    assert code == 2 and message in err, err
    assert not served, "nothing started"


def test_tls_dir_needs_the_node_name(served: dict[str, Any], tmp_path: Path) -> None:
    code, err = raftly("serve", "--data-dir", str(tmp_path), "--tls-dir", str(tmp_path))
    assert code == 2 and "--tls-dir needs --id NAME" in err, err


def test_max_connections_must_be_positive(served: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exited, contextlib.redirect_stderr(io.StringIO()):
        main([*base(tmp_path), "--max-connections", "0"])
    assert exited.value.code == 2


@pytest.mark.parametrize(("text", "message"), [
    (None, "no such auth file"),
    ('[[tokens]]\ntoken = "short"\nrole = "read"', "'token' must be a string of at least"),
    (f'[[tokens]]\ntoken = "{TOKEN}"\nrole = "root"', "'role' must be"),
])
def test_a_bad_auth_file_is_one_clear_error(served: dict[str, Any], tmp_path: Path,
                                            text: str | None, message: str) -> None:
    path = tmp_path / "auth.toml"
    if text is not None:
        path.write_text(text)
    code, err = raftly(*base(tmp_path), "--auth-file", str(path))
    assert code == 1 and err.startswith(f"raftly: --auth-file: {path}") and message in err, err
    assert len(err.splitlines()) == 1 and not served


def test_security_flags_reach_serve(served: dict[str, Any], tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    auth = tmp_path / "auth.toml"
    auth.write_text(f'[[tokens]]\ntoken = "{TOKEN}"\nrole = "admin"\n')
    monkeypatch.setenv("RAFTLY_TOKEN", "from-the-environment")
    code, err = raftly(*base(tmp_path), "--tls-dir", str(tmp_path / "tls"),
                       "--client-cert-auth", "--auth-file", str(auth),
                       "--max-connections", "7")
    assert code == 0, err
    assert served["tls"] == TlsFiles.from_dir(tmp_path / "tls", "n1")
    assert served["client_cert_auth"] is True and served["max_connections"] == 7
    assert served["token"] == "from-the-environment"
    authorizer = served["auth"]
    assert isinstance(authorizer, Authorizer)
    assert authorizer.check(f"Bearer {TOKEN}", Role.ADMIN).role is Role.ADMIN

    served.clear()
    code, err = raftly(*base(tmp_path), "--tls-cert", "c.crt", "--tls-key", "c.key",
                       "--tls-ca", "ca.crt", "--token", "given")
    assert code == 0, err
    assert served["tls"] == TlsFiles(Path("c.crt"), Path("c.key"), Path("ca.crt"))
    assert served["token"] == "given" and served["auth"] is None


def test_without_security_flags_serve_runs_open_and_plain(served: dict[str, Any],
                                                          tmp_path: Path) -> None:
    code, err = raftly(*base(tmp_path))
    assert code == 0, err
    assert served["tls"] is None and served["auth"] is None and served["token"] is None
    assert served["client_cert_auth"] is False and served["max_connections"] == 1024
    assert served["max_watches"] == 1000


def test_max_watches_reaches_serve_and_must_be_positive(served: dict[str, Any],
                                                         tmp_path: Path) -> None:
    code, err = raftly(*base(tmp_path), "--max-watches", "3")
    assert code == 0 and served["max_watches"] == 3, err
    with pytest.raises(SystemExit) as exited, contextlib.redirect_stderr(io.StringIO()):
        main([*base(tmp_path), "--max-watches", "0"])
    assert exited.value.code == 2


def test_missing_tls_files_are_one_clear_error(tmp_path: Path) -> None:
    cluster = tmp_path / "cluster.toml"
    cluster.write_text('[nodes.n1]\nraft = "127.0.0.1:0"\napi = "127.0.0.1:0"\n')
    code, err = raftly("serve", "--cluster", str(cluster), "--id", "n1", "--data-dir",
                       str(tmp_path / "n1"), "--fsync", "never", "--tls-dir",
                       str(tmp_path / "none"))
    last = err.splitlines()[-1]
    assert code == 1 and last.startswith("raftly: ") and "no such CA certificate file" in last
    assert "Traceback" not in err


@pytest.fixture
def loop_seen(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The event loop ``serve()`` ran on, for each start (instead of starting a node)."""
    seen: list[str] = []

    async def fake_serve(*args: Any, **kwargs: Any) -> None:
        seen.append(eventloop.running_loop_name())

    monkeypatch.setattr(service, "serve", fake_serve)
    return seen


def test_event_loop_asyncio_runs_the_node_on_asyncios_own_loop(loop_seen: list[str],
                                                                tmp_path: Path) -> None:
    assert raftly(*base(tmp_path), "--event-loop", "asyncio")[0] == 0
    assert loop_seen == ["asyncio"]


@pytest.mark.skipif(not eventloop.uvloop_available(), reason="uvloop is not installed")
def test_event_loop_uvloop_and_auto_run_the_node_on_uvloop_when_installed(
        loop_seen: list[str], tmp_path: Path) -> None:
    assert raftly(*base(tmp_path), "--event-loop", "uvloop")[0] == 0
    assert raftly(*base(tmp_path), "--event-loop", "auto")[0] == 0
    assert raftly(*base(tmp_path))[0] == 0  # the default: asyncio (measured no slower)
    assert loop_seen == ["uvloop", "uvloop", "asyncio"]


def test_event_loop_uvloop_without_uvloop_is_a_usage_error_and_auto_falls_back(
        loop_seen: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    monkeypatch.setattr(eventloop, "uvloop_available", lambda: False)
    code, err = raftly(*base(tmp_path), "--event-loop", "uvloop")
    assert code == 2 and "uvloop is not installed" in err, err
    assert loop_seen == [], "nothing started"
    assert raftly(*base(tmp_path), "--event-loop", "auto")[0] == 0
    assert loop_seen == ["asyncio"]


def test_a_tls_node_never_runs_on_uvloop(loop_seen: list[str], tmp_path: Path) -> None:
    # uvloop reads a connection before start_tls can take it over (the handshake then hangs).
    tls = ("--tls-dir", str(tmp_path / "tls"))
    code, err = raftly(*base(tmp_path), *tls, "--event-loop", "uvloop")
    assert code == 2 and "--event-loop uvloop cannot serve TLS" in err, err
    assert loop_seen == [], "nothing started"
    assert raftly(*base(tmp_path), *tls, "--event-loop", "auto")[0] == 0
    assert loop_seen == ["asyncio"]

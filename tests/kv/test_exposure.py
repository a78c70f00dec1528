"""The warning for a node that listens beyond this host without TLS or without an auth file, and
that ``serve`` logs it (one WARNING line) before the node starts."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from kv_helpers import FAST, run

from raftly.kv import exposure
from raftly.kv.cluster_file import Address, NodeSpec
from raftly.kv.exposure import exposure_warning, is_loopback
from raftly.kv.service import serve
from raftly.security.auth import Authorizer, parse_tokens


def node(raft_host: str, api_host: str) -> NodeSpec:
    return NodeSpec("n1", 1, Address(raft_host, 7001), Address(api_host, 8001))


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.8.0.1", True), ("::1", True), ("localhost", True),
    ("LocalHost", True), ("0.0.0.0", False), ("::", False), ("10.0.0.5", False),
    ("db1.example.com", False),
])
def test_only_loopback_addresses_count_as_local(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_loopback_needs_no_warning_even_plain_and_open() -> None:
    assert exposure_warning(node("127.0.0.1", "localhost"), tls=False, auth=False) is None


def test_an_exposed_node_is_warned_about_what_it_lacks() -> None:
    exposed = node("127.0.0.1", "0.0.0.0")
    plain_open = exposure_warning(exposed, tls=False, auth=False)
    assert plain_open is not None and "api 0.0.0.0:8001" in plain_open
    assert "raft 127.0.0.1" not in plain_open
    assert "--tls-dir" in plain_open and "--auth-file" in plain_open
    no_auth = exposure_warning(exposed, tls=True, auth=False)
    assert no_auth is not None and "--auth-file" in no_auth and "--tls-dir" not in no_auth
    no_tls = exposure_warning(node("10.0.0.5", "127.0.0.1"), tls=False, auth=True)
    assert no_tls is not None and "raft 10.0.0.5:7001" in no_tls and "--tls-dir" in no_tls
    assert "--auth-file" not in no_tls
    assert exposure_warning(exposed, tls=True, auth=True) is None


def test_serve_logs_the_warning_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     caplog: pytest.LogCaptureFixture) -> None:
    # The node binds 127.0.0.1 only; it is made to look exposed.
    monkeypatch.setattr(exposure, "is_loopback", lambda host: False)
    cluster = tmp_path / "cluster.toml"
    cluster.write_text('[nodes.n1]\nraft = "127.0.0.1:0"\napi = "127.0.0.1:0"\n')
    auth = Authorizer(parse_tokens({"tokens": [{"token": "t" * 20, "role": "admin"}]}))
    caplog.set_level(logging.WARNING, "raftly.kv")

    async def main(**options: object) -> None:
        stop = asyncio.Event()
        stop.set()  # start, then stop at once
        await serve(cluster, "n1", tmp_path / "n1", config=FAST, fsync="never", stop=stop,
                    **options)  # type: ignore[arg-type]

    run(main())
    warnings = [r for r in caplog.records if "non-loopback" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert "--auth-file" in warnings[0].getMessage()
    caplog.clear()
    run(main(auth=auth))
    warnings = [r for r in caplog.records if "non-loopback" in r.getMessage()]
    assert len(warnings) == 1 and "--tls-dir" in warnings[0].getMessage()
    assert "--auth-file" not in warnings[0].getMessage()

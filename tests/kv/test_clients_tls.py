"""Client and AsyncClient over HTTPS with tokens, against small aiohttp HTTPS servers on
127.0.0.1 (no Raft): the scheme rules, the bearer header on every request, 401/403 as
RequestError, redirects that keep https and never go down to http, and TLS failures that fail
at once instead of being retried until the timeout."""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from raftly.kv.client import (
    AsyncClient,
    Client,
    HandshakeError,
    OutcomeUnknownError,
    RequestError,
    UnavailableError,
)
from raftly.kv.client_core import ClientCore, base_url, redirect_url
from raftly.security.certs import init_certs, issue, new_authority, write_pair
from raftly.security.tls import TlsError, TlsFiles, api_server_context

TOKEN = "s3cret-token"


@dataclass
class FakeNode:
    """A tiny stand-in for a node's KV API: it stores values, checks the token, can redirect
    every request elsewhere, and records what it was sent."""

    token: str | None = TOKEN
    redirect_to: str | None = None
    seen: list[tuple[str, str, str | None]] = field(default_factory=list)
    """(method, path, Authorization header) of every request."""
    data: dict[str, bytes] = field(default_factory=dict)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.method, request.path_qs, request.headers.get("Authorization")))
        if self.token is not None:
            given = request.headers.get("Authorization")
            if given not in (f"Bearer {self.token}", "Bearer reader"):
                return web.json_response({"error": "a valid token is needed", "code":
                                          "unauthorized"}, status=401,
                                         headers={"WWW-Authenticate": "Bearer"})
            if given == "Bearer reader" and request.method != "GET":
                return web.json_response({"error": "this token may only read", "code":
                                          "forbidden"}, status=403)
        if self.redirect_to is not None:
            raise web.HTTPTemporaryRedirect(self.redirect_to + request.path_qs)
        key = request.match_info["key"]
        if request.method == "PUT":
            self.data[key] = await request.read()
            return web.json_response({"index": len(self.data)})
        if key not in self.data:
            return web.json_response({"error": "not found"}, status=404)
        return web.Response(body=self.data[key])


class Server:
    """An aiohttp server on 127.0.0.1 in a thread of its own (the blocking client blocks)."""

    def __init__(self, node: FakeNode, context: ssl.SSLContext | None) -> None:
        self.node = node
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._run, args=(context,), daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "test server did not start"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def _run(self, context: ssl.SSLContext | None) -> None:
        self.tls = context is not None
        self._loop.run_until_complete(self._serve(context))

    async def _serve(self, context: ssl.SSLContext | None) -> None:
        app = web.Application()
        app.router.add_route("*", "/v1/kv/{key}", self.node.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        self.port = runner.addresses[0][1]
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def close(self) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("certs") / "certs"
    init_certs(folder, ["n1"])
    return folder


@pytest.fixture
def serve(certs: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(node: FakeNode | None = None, *, tls: bool = True,
              require_client_cert: bool = False) -> Server:
        context = (api_server_context(TlsFiles.from_dir(certs, "n1"),
                                      require_client_cert=require_client_cert)
                   if tls else None)
        server = Server(node or FakeNode(), context)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


# -- the pure rules ---------------------------------------------------------------------------


def test_bare_endpoints_take_https_when_tls_is_configured_else_http() -> None:
    assert ClientCore(["127.0.0.1:1"], 1, 1, None).endpoints == ["http://127.0.0.1:1"]
    assert ClientCore(["127.0.0.1:1"], 1, 1, None, tls=True).endpoints == ["https://127.0.0.1:1"]
    explicit = ClientCore(["https://127.0.0.1:1", "127.0.0.1:2"], 1, 1, None)
    assert explicit.endpoints == ["https://127.0.0.1:1", "http://127.0.0.1:2"]
    # Addresses learned from member lists take the scheme the cluster is reached with.
    explicit.learn([{"api": "127.0.0.1:3"}])
    assert explicit.endpoints[-1] == "https://127.0.0.1:3"
    with pytest.raises(ValueError, match="not an http or https endpoint"):
        base_url("ftp://127.0.0.1:1")


def test_redirects_keep_https_and_never_go_down_to_http() -> None:
    here = "https://127.0.0.1:1/v1/kv/k"
    assert redirect_url(here, "https://127.0.0.1:2/v1/kv/k") == "https://127.0.0.1:2/v1/kv/k"
    assert redirect_url(here, "/v1/kv/k?x=1") == "https://127.0.0.1:1/v1/kv/k?x=1"
    assert redirect_url(here, "http://127.0.0.1:2/v1/kv/k") is None
    assert redirect_url(here, "ftp://127.0.0.1:2/") is None
    assert redirect_url(here, None) is None
    assert redirect_url("http://127.0.0.1:1/", "http://127.0.0.1:2/a") == "http://127.0.0.1:2/a"


def test_the_token_is_on_every_request_and_must_be_one_line() -> None:
    core = ClientCore(["127.0.0.1:1"], 1, 1, None, token="abc")
    from raftly.kv.client_core import get_call, put_call

    assert core.request(get_call("k", False)).headers["Authorization"] == "Bearer abc"
    tries = core.start(put_call("k", b"v"), time.monotonic)
    assert tries.request.headers["Authorization"] == "Bearer abc"
    tries.finish()
    with pytest.raises(ValueError, match="token"):
        ClientCore(["127.0.0.1:1"], 1, 1, None, token="a\r\nX-Evil: 1")


def test_unusable_tls_files_are_refused_when_the_client_is_made(tmp_path: Path) -> None:
    with pytest.raises(TlsError, match="no such CA certificate file"):
        Client(["127.0.0.1:1"], cacert=tmp_path / "missing.crt")
    (tmp_path / "junk.crt").write_text("not a certificate")
    with pytest.raises(TlsError, match="not a usable CA certificate"):
        AsyncClient(["127.0.0.1:1"], cacert=tmp_path / "junk.crt")
    with pytest.raises(TlsError, match="both --cert and --key"):
        Client(["127.0.0.1:1"], cert=tmp_path / "c.crt")


# -- against HTTPS servers --------------------------------------------------------------------


def test_blocking_client_speaks_https_with_the_ca_and_sends_the_token(
        certs: Path, serve: Callable[..., Server]) -> None:
    server = serve()
    with Client([f"127.0.0.1:{server.port}"], cacert=certs / "ca.crt", token=TOKEN,
                timeout=5) as kv:
        assert kv.put("k", b"v") == 1
        assert kv.get("k") == b"v"
        assert kv.get("absent") is None
    assert [auth for _, _, auth in server.node.seen] == [f"Bearer {TOKEN}"] * 3


def test_async_client_speaks_https_with_the_ca_and_sends_the_token(
        certs: Path, serve: Callable[..., Server]) -> None:
    server = serve()

    async def session() -> None:
        async with AsyncClient([f"127.0.0.1:{server.port}"], cacert=certs / "ca.crt",
                               token=TOKEN, timeout=5) as kv:
            assert await kv.put("k", b"v") == 1
            assert await kv.get("k") == b"v"

    asyncio.run(session())
    assert [auth for _, _, auth in server.node.seen] == [f"Bearer {TOKEN}"] * 2


def test_an_explicit_https_endpoint_works_with_a_given_ssl_context(
        certs: Path, serve: Callable[..., Server]) -> None:
    server = serve(FakeNode(token=None))
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    with Client([server.url], ssl_context=context, timeout=5) as kv:
        assert kv.put("k", b"v") == 1


def test_401_and_403_are_request_errors_with_the_server_message(
        certs: Path, serve: Callable[..., Server]) -> None:
    server = serve()
    endpoint = [f"127.0.0.1:{server.port}"]
    with Client(endpoint, cacert=certs / "ca.crt", timeout=5) as kv, \
            pytest.raises(RequestError) as no_token:
        kv.put("k", b"v")
    assert no_token.value.status == 401 and "a valid token is needed" in str(no_token.value)
    with Client(endpoint, cacert=certs / "ca.crt", token="reader", timeout=5) as kv, \
            pytest.raises(RequestError) as low_role:
        kv.put("k", b"v")
    assert low_role.value.status == 403 and "may only read" in str(low_role.value)

    async def async_denied() -> RequestError:
        async with AsyncClient(endpoint, cacert=certs / "ca.crt", token="wrong",
                               timeout=5) as kv:
            with pytest.raises(RequestError) as denied:
                await kv.get("k")
            return denied.value

    assert asyncio.run(async_denied()).status == 401
    # Refusals are answers: each was asked once, not retried until the timeout.
    assert len(server.node.seen) == 3


def test_a_redirect_to_another_https_node_is_followed(
        certs: Path, serve: Callable[..., Server]) -> None:
    leader = serve()
    follower = serve(FakeNode(redirect_to=leader.url))
    with Client([f"127.0.0.1:{follower.port}"], cacert=certs / "ca.crt", token=TOKEN,
                timeout=5) as kv:
        assert kv.put("k", b"v") == 1
    assert leader.node.data == {"k": b"v"}
    assert leader.node.seen[0][2] == f"Bearer {TOKEN}"

    async def via_async() -> bytes | None:
        async with AsyncClient([f"127.0.0.1:{follower.port}"], cacert=certs / "ca.crt",
                               token=TOKEN, timeout=5) as kv:
            return await kv.get("k")

    assert asyncio.run(via_async()) == b"v"


def test_a_redirect_from_https_down_to_http_is_refused(
        certs: Path, serve: Callable[..., Server]) -> None:
    plain = serve(tls=False)
    follower = serve(FakeNode(redirect_to=plain.url))
    with Client([f"127.0.0.1:{follower.port}"], cacert=certs / "ca.crt", token=TOKEN,
                timeout=0.5) as kv, pytest.raises(UnavailableError, match="307"):
        kv.get("k")

    async def via_async() -> None:
        async with AsyncClient([f"127.0.0.1:{follower.port}"], cacert=certs / "ca.crt",
                               token=TOKEN, timeout=0.5) as kv:
            await kv.get("k")

    with pytest.raises(UnavailableError, match="307"):
        asyncio.run(via_async())
    assert plain.node.seen == [], "the token went to a plain-http server"


def _other_ca(tmp_path: Path) -> Path:
    other = new_authority()
    write_pair(tmp_path, "other-ca", other.cert, other.key)
    return tmp_path / "other-ca.crt"


def test_a_certificate_of_another_ca_fails_at_once_not_after_the_timeout(
        tmp_path: Path, serve: Callable[..., Server]) -> None:
    server = serve()
    endpoint = [f"127.0.0.1:{server.port}"]
    start = time.monotonic()
    with Client(endpoint, cacert=_other_ca(tmp_path), timeout=30) as kv, \
            pytest.raises(HandshakeError, match="cannot verify the node's certificate"):
        kv.put("k", b"v")

    async def via_async() -> None:
        async with AsyncClient(endpoint, cacert=tmp_path / "other-ca.crt", timeout=30) as kv:
            await kv.put("k", b"v")

    with pytest.raises(HandshakeError, match="cannot verify"):
        asyncio.run(via_async())
    assert time.monotonic() - start < 10
    assert server.node.seen == []


def test_https_to_a_plain_http_node_says_so_at_once(
        certs: Path, serve: Callable[..., Server]) -> None:
    plain = serve(FakeNode(token=None), tls=False)
    with Client([f"127.0.0.1:{plain.port}"], cacert=certs / "ca.crt", timeout=30) as kv, \
            pytest.raises(HandshakeError, match="does not speak TLS"):
        kv.get("k")

    async def via_async() -> None:
        async with AsyncClient([f"127.0.0.1:{plain.port}"], cacert=certs / "ca.crt",
                               timeout=30) as kv:
            await kv.get("k")

    with pytest.raises(HandshakeError, match="does not speak TLS"):
        asyncio.run(via_async())


def test_a_node_requiring_client_certificates_refuses_a_client_without_one(
        certs: Path, serve: Callable[..., Server]) -> None:
    # With TLS 1.3 the node checks the client's certificate after the handshake and closes
    # the connection: the client cannot tell that from a node going down, so it retries, and
    # its error says what a closed connection usually means here.
    server = serve(FakeNode(token=None), require_client_cert=True)
    endpoint = [f"127.0.0.1:{server.port}"]
    with Client(endpoint, cacert=certs / "ca.crt", timeout=1) as kv, \
            pytest.raises(UnavailableError, match="requires a client certificate"):
        kv.get("k")
    with Client(endpoint, cacert=certs / "ca.crt", cert=certs / "client.crt",
                key=certs / "client.key", timeout=5) as kv:
        assert kv.put("k", b"v") == 1

    async def via_async(timeout: float = 5, **tls: Path) -> bytes | None:
        async with AsyncClient(endpoint, cacert=certs / "ca.crt", timeout=timeout,
                               **tls) as kv:
            return await kv.get("k")

    with pytest.raises(UnavailableError, match="requires a client certificate"):
        asyncio.run(via_async(timeout=1))
    assert asyncio.run(via_async(cert=certs / "client.crt", key=certs / "client.key")) == b"v"


def test_a_write_that_may_have_been_applied_stays_unknown_after_a_handshake_failure() -> None:
    from raftly.kv.client_core import put_call

    core = ClientCore(["127.0.0.1:1", "127.0.0.1:2"], 5, 1, None, tls=True)
    tries = core.start(put_call("k", b"v"), time.monotonic)
    assert tries.hopeless("https://127.0.0.1:1", TimeoutError("lost")) is None
    tries.failed("https://127.0.0.1:1", TimeoutError("lost"), maybe_sent=True)
    bad = ssl.SSLCertVerificationError(1, "bad")
    assert tries.hopeless("https://127.0.0.1:2", bad) is None, "node 1 may still answer"
    tries.failed("https://127.0.0.1:2", bad, maybe_sent=True)
    # Now every endpoint failed TLS: give up, and the write stays of unknown outcome.
    error = tries.hopeless("https://127.0.0.1:1", ssl.SSLCertVerificationError(1, "bad"))
    assert isinstance(error, OutcomeUnknownError)
    assert tries.hopeless("https://127.0.0.1:2", ConnectionResetError()) is None
    tries.finish()


def test_a_handshake_failure_never_makes_a_write_of_unknown_outcome() -> None:
    """A failed TLS handshake carried nothing: after one, the write is still "unavailable"."""
    from raftly.kv.client_core import put_call

    core = ClientCore(["127.0.0.1:1", "127.0.0.1:2"], 5, 1, None, tls=True)
    tries = core.start(put_call("k", b"v"), time.monotonic)
    bad = ssl.SSLCertVerificationError(1, "bad")
    assert tries.hopeless("https://127.0.0.1:1", bad) is None
    tries.failed("https://127.0.0.1:1", bad, maybe_sent=True)
    assert not tries.maybe_applied
    assert isinstance(tries.hopeless("https://127.0.0.1:2", bad), HandshakeError)
    tries.finish()


def test_one_node_with_a_tls_problem_listed_first_does_not_fail_every_call(
        tmp_path: Path, certs: Path, serve: Callable[..., Server]) -> None:
    plain = serve(FakeNode(token=None), tls=False)  # a node left on plain http
    good = serve(FakeNode(token=None))
    endpoints = [f"127.0.0.1:{plain.port}", f"127.0.0.1:{good.port}"]
    with Client(endpoints, cacert=certs / "ca.crt", timeout=30) as kv:
        assert kv.put("k", b"v") == 1
        assert kv.get("k") == b"v"

    async def via_async() -> bytes | None:
        async with AsyncClient(endpoints, cacert=certs / "ca.crt", timeout=30) as kv:
            await kv.put("k", b"w")
            return await kv.get("k")

    assert asyncio.run(via_async()) == b"w"
    assert plain.node.seen == []
    # Every endpoint failing TLS is still an error at once, not after the timeout.
    both = [f"127.0.0.1:{plain.port}", f"127.0.0.1:{good.port}"]
    start = time.monotonic()
    with Client(both, cacert=_other_ca(tmp_path), timeout=30) as kv, \
            pytest.raises(HandshakeError):
        kv.get("k")
    assert time.monotonic() - start < 20


def test_a_token_for_plain_http_off_this_machine_is_warned_about_once_per_host(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    import raftly.kv.client_core as core_module

    monkeypatch.setattr(core_module, "_warned_plaintext", set())
    caplog.set_level(logging.WARNING, "raftly.kv.client")

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if "over plain http" in r.getMessage()]

    ClientCore(["127.0.0.1:1", "localhost:2", "[::1]:3"], 5, 1, None, token="t")
    ClientCore(["10.9.8.7:1"], 5, 1, None)  # no token: nothing to leak
    ClientCore(["https://10.9.8.7:1"], 5, 1, None, token="t")
    assert warnings() == []
    core = ClientCore(["10.9.8.7:1", "http://db.example:2"], 5, 1, None, token=TOKEN)
    ClientCore(["10.9.8.7:1"], 5, 1, None, token=TOKEN)
    assert len(warnings()) == 2
    assert "10.9.8.7:1" in warnings()[0] and "db.example:2" in warnings()[1]
    assert TOKEN not in caplog.text
    core.learn([{"api": "10.9.8.6:1"}])  # a member learned later counts too
    assert len(warnings()) == 3


def test_expired_node_certificates_fail_verification(
        tmp_path: Path, certs: Path) -> None:
    import datetime

    from raftly.security.certs import load_authority

    ca = load_authority(certs)
    now = datetime.datetime.now(datetime.UTC)
    cert, key = issue(ca, "n1", not_before=now - datetime.timedelta(days=10),
                      not_after=now - datetime.timedelta(days=1))
    write_pair(tmp_path, "old", cert, key)
    context = api_server_context(TlsFiles(tmp_path / "old.crt", tmp_path / "old.key",
                                          certs / "ca.crt"))
    server = Server(FakeNode(token=None), context)
    try:
        with Client([f"127.0.0.1:{server.port}"], cacert=certs / "ca.crt", timeout=30) as kv, \
                pytest.raises(HandshakeError, match="expired"):
            kv.get("k")
    finally:
        server.close()

"""Shared helpers of the KV tests: a fast-election config, running a coroutine, raw HTTP calls,
feeding commands to a state machine, an in-process cluster whose APIs want tokens or serve
HTTPS."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from yarl import URL

from raftly.core.config import Config
from raftly.kv.cluster_file import ClusterSpec
from raftly.kv.service import LocalCluster, RunningNode, start_node
from raftly.kv.state_machine import KVStateMachine, Op, Result, Session, encode
from raftly.security.auth import Authorizer, parse_tokens
from raftly.security.tls import TlsFiles
from raftly.storage import MemoryStorage
from raftly.transport import Transport

T = TypeVar("T")

FAST = Config(tick_interval=0.01, heartbeat_interval=0.05, election_timeout=0.3)

READ, WRITE, ADMIN = "read-token-0123456789", "write-token-0123456789", "admin-token-0123456789"
AUTH = Authorizer(parse_tokens({"tokens": [{"token": READ, "role": "read", "name": "reader"},
                                           {"token": WRITE, "role": "write", "name": "writer"},
                                           {"token": ADMIN, "role": "admin", "name": "ops"}]}))
"""An auth file's tokens, one of each role."""


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def run(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    """Run one test's coroutine on a fresh loop, failing (not hanging) after ``timeout``."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def call(session: aiohttp.ClientSession, method: str, url: str | URL, *,
               data: bytes | None = None,
               headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    """(status, decoded body: JSON if JSON else bytes, headers); never follows redirects."""
    async with session.request(method, url, data=data, headers=headers,
                               allow_redirects=False) as resp:
        raw = await resp.read()
        body: Any = json.loads(raw) if resp.content_type == "application/json" else raw
        return resp.status, body, resp.headers


class SecureCluster(LocalCluster):
    """A ``LocalCluster`` (TCP, in memory) whose APIs check tokens with ``auth`` and, with
    ``tls_dir`` (``raftly certs init`` layout), serve HTTPS; the peer port stays as it is."""

    def __init__(self, size: int = 3, *, auth: Authorizer | None = None,
                 tls_dir: Path | None = None, client_cert_auth: bool = False,
                 **options: Any) -> None:
        super().__init__(size, **options)
        self.auth = auth
        self.tls_dir = tls_dir
        self.client_cert_auth = client_cert_auth

    async def start_node(self, cluster: ClusterSpec, name: str, transport: Transport, *,
                         bootstrap: bool = True) -> RunningNode:
        tls = TlsFiles.from_dir(self.tls_dir, name) if self.tls_dir is not None else None
        return await start_node(cluster, name, storage=MemoryStorage(), transport=transport,
                                config=self.config, limits=self.limits, bootstrap=bootstrap,
                                tls=tls, client_cert_auth=self.client_cert_auth, auth=self.auth)


def followers(cluster: LocalCluster, leader: RunningNode) -> list[RunningNode]:
    return [n for n in cluster.nodes if n is not leader]


class Applier:
    """Feeds commands to a machine with increasing log indexes."""

    def __init__(self, sm: KVStateMachine | None = None) -> None:
        self.sm = sm if sm is not None else KVStateMachine()
        self.index = 0

    def __call__(self, command: bytes | Op, session: Session | None = None
                 ) -> Result:
        self.index += 1
        raw = command if isinstance(command, bytes) else encode(command, session)
        return self.sm.apply(self.index, raw)


async def fake_nodes(handlers: list[Callable[[web.Request], Any]], path: str = "/{path:.*}"
                     ) -> AsyncIterator[list[str]]:
    """One HTTP server on 127.0.0.1 per handler (answering GET ``path``), for ``async for urls
    in fake_nodes(...)``: yields their ``host:port`` once, then stops them."""
    runners = []
    urls = []
    for handler in handlers:
        app = web.Application()
        app.router.add_get(path, handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        urls.append(f"127.0.0.1:{port}")
    try:
        yield urls
    finally:
        for runner in runners:
            await runner.cleanup()

"""Shared helpers of the KV tests: a fast-election config, running a coroutine, raw HTTP calls,
feeding commands to a state machine."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from typing import Any, TypeVar

import aiohttp
from yarl import URL

from raftly.core.config import Config
from raftly.kv.service import LocalCluster, RunningNode
from raftly.kv.state_machine import KVStateMachine, Op, Result, Session, encode

T = TypeVar("T")

FAST = Config(tick_interval=0.01, heartbeat_interval=0.05, election_timeout=0.3)


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

"""Shared helpers of the KV tests: a fast-election config, running a coroutine, polling."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from raftly.core.config import Config

T = TypeVar("T")

FAST = Config(tick_interval=0.01, heartbeat_interval=0.05, election_timeout=0.3)


def run(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    """Run one test's coroutine on a fresh loop, failing (not hanging) after ``timeout``."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


"""Shared helpers of the KV tests: a fast-election config, running a coroutine, polling."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from raftly.core.config import Config

T = TypeVar("T")

FAST = Config(tick_interval=0.01, heartbeat_interval=0.05, election_timeout=0.3)


def run(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    """Run one test's coroutine on a fresh loop, failing (not hanging) after ``timeout``."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def eventually(check: Callable[[], Awaitable[T | None]], timeout: float = 5.0,
                     what: str = "condition") -> T:
    """Poll ``check`` until it returns something other than None/False, up to ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await check()
        if result is not None and result is not False:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(0.01)

"""Waiting for a condition in tests that run on real time: poll it, with a generous deadline.

Tests never sleep and hope. ``eventually`` is for asyncio tests (the condition may be a plain or
an async function), ``wait_until`` for tests that drive real processes from plain code.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(check: Callable[[], T | Awaitable[T | None] | None], timeout: float = 10.0,
                     what: str = "condition", interval: float = 0.005) -> T:
    """Poll ``check`` until it returns something other than None or False; return that.

    Fails with ``what`` in the message once ``timeout`` seconds have passed.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result is not None and result is not False:
            return result  # type: ignore[return-value]
        if loop.time() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(interval)


def wait_until(what: str, check: Callable[[], T | None], timeout: float = 20.0,
               interval: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)

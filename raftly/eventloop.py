"""Which asyncio event loop a raftly process runs on (``serve --event-loop``,
``bench --event-loop``).

``"asyncio"`` (serve's default), ``"uvloop"`` (optional, ``pip install 'raftly[fast]'``), or
``"auto"`` (uvloop when it can be imported: the benchmark's default). uvloop did not make the
HTTP benchmark faster (docs/performance.md); raftly never needs it.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

CHOICES = ("auto", "asyncio", "uvloop")
"""The values of ``--event-loop``."""


def uvloop_available() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def loop_factory(choice: str = "auto") -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of the loop ``choice`` names (None: asyncio's default).

    Raises ValueError for an unknown choice, and for ``"uvloop"`` when it is not installed.
    """
    if choice not in CHOICES:
        raise ValueError(f"unknown event loop {choice!r}: choose one of {', '.join(CHOICES)}")
    if choice == "asyncio" or (choice == "auto" and not uvloop_available()):
        return None
    try:
        import uvloop
    except ImportError:
        raise ValueError("--event-loop uvloop: uvloop is not installed "
                         "(pip install 'raftly[fast]')") from None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], *, loop: str = "auto") -> T:
    """``asyncio.run(main)`` on the loop ``loop`` names (see ``loop_factory``)."""
    factory = loop_factory(loop)
    if factory is None:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def running_loop_name() -> str:
    """``"uvloop"`` or ``"asyncio"``: what the running loop is (for benchmark headers, logs)."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"


__all__ = ["CHOICES", "loop_factory", "run", "running_loop_name", "uvloop_available"]

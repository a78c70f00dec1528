"""The event loop choice: asyncio always works, uvloop only when installed, nonsense refused."""

from __future__ import annotations

import pytest

from raftly import eventloop


async def name() -> str:
    return eventloop.running_loop_name()


def test_asyncio_choice_runs_on_asyncios_own_loop() -> None:
    assert eventloop.run(name(), loop="asyncio") == "asyncio"


def test_auto_takes_uvloop_exactly_when_it_is_installed() -> None:
    expected = "uvloop" if eventloop.uvloop_available() else "asyncio"
    assert eventloop.run(name(), loop="auto") == expected


def test_uvloop_choice_runs_on_uvloop_or_says_it_is_missing() -> None:
    if eventloop.uvloop_available():
        assert eventloop.run(name(), loop="uvloop") == "uvloop"
    else:
        with pytest.raises(ValueError, match="not installed"):
            eventloop.loop_factory("uvloop")


def test_an_unknown_loop_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="auto, asyncio, uvloop"):
        eventloop.loop_factory("trio")

"""The coordination calls of the clients without a cluster: the watch cursor's resume rules, the
answers' decoding, and both clients' watch against fake nodes (a stream broken in the middle of
a revision resumes on the next node without gap or duplicate, as does one refused 410 by a
node whose history starts later; ``CompactedError`` once every node answers 410)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from kv_helpers import fake_nodes

from raftly.kv.client import AsyncClient, Client, CompactedError, RequestError
from raftly.kv.client_coord import (
    Compare,
    LeaseNotFoundError,
    Put,
    WatchCursor,
    WatchEvent,
    lease_keepalive_call,
    put_lease_call,
    txn_call,
)
from raftly.kv.client_core import Response


def _line(revision: int, key: str, kind: str = "put", value: str = "v") -> bytes:
    return json.dumps({"revision": revision, "type": kind, "key": key, "value": value,
                       "create_revision": revision, "mod_revision": revision, "version": 1,
                       "lease": 0}).encode() + b"\n"


def _progress(revision: int) -> bytes:
    return json.dumps({"type": "progress", "revision": revision}).encode() + b"\n"


def test_a_reconnect_in_the_middle_of_a_revision_asks_for_it_again_and_drops_the_repeats(
        ) -> None:
    cursor = WatchCursor("p/", 5)
    assert cursor.path() == "/v1/watch?prefix=p%2F&from_revision=5"
    assert cursor.line(_line(5, "p/a")) is not None
    assert cursor.line(_line(6, "p/b")) is not None  # revision 6 has p/b and p/c
    assert cursor.next_revision == 6  # 6 may be incomplete: ask for it again
    assert cursor.line(_line(6, "p/b")) is None  # the new stream repeats p/b: dropped
    event = cursor.line(_line(6, "p/c"))
    assert event is not None and (event.revision, event.key) == (6, "p/c")
    assert cursor.line(_line(7, "p/b", "delete", "")) is not None


def test_progress_and_cancelled_lines_move_the_resume_point() -> None:
    cursor = WatchCursor("", None)
    assert "from_revision" not in cursor.path()  # from now on
    assert cursor.line(_progress(9)) == WatchEvent("progress", 9)
    assert cursor.next_revision == 10
    assert cursor.line(b'{"type": "cancelled", "reason": "slow", "next_revision": 12}') is None
    assert cursor.next_revision == 12
    with pytest.raises(ValueError, match="went back"):
        cursor.line(_line(11, "k"))
    with pytest.raises(ValueError):
        cursor.line(b'{"type": "put"}')
    with pytest.raises(ValueError):
        WatchCursor("", 0)


GONE = Response(410, {}, b'{"error": "compacted", "code": "compacted", '
                         b'"oldest_available": 50, "current": 90}')


def test_a_compacted_answer_raises_once_every_node_said_so_and_a_busy_one_is_retried(
        ) -> None:
    cursor = WatchCursor("", 3)
    cursor.refused(GONE, "http://a", 2)  # another node may still have revision 3
    cursor.refused(GONE, "http://a", 2)  # the same node again proves nothing new
    with pytest.raises(CompactedError) as caught:
        cursor.refused(GONE, "http://b", 2)
    assert (caught.value.from_revision, caught.value.oldest, caught.value.current) == (3, 50, 90)
    with pytest.raises(RequestError):
        cursor.refused(Response(400, {}, b'{"error": "bad prefix"}'), "http://a", 2)
    cursor.refused(Response(503, {}, b'{"error": "too many", "code": "too_many_watches"}'),
                   "http://a", 2)


def test_a_line_received_forgets_the_nodes_that_answered_410() -> None:
    cursor = WatchCursor("", 3)
    cursor.refused(GONE, "http://a", 2)
    assert cursor.line(_line(3, "k")) is not None
    cursor.refused(GONE, "http://b", 2)  # a has not refused since that line: not all said 410
    with pytest.raises(CompactedError):
        cursor.refused(GONE, "http://a", 2)


def test_the_answers_of_lease_and_txn_calls_are_decoded() -> None:
    gone = Response(404, {}, b'{"error": "lease 7 does not exist", "code": "lease_not_found"}')
    with pytest.raises(LeaseNotFoundError):
        lease_keepalive_call(7).decode(gone)
    with pytest.raises(LeaseNotFoundError):
        put_lease_call("k", b"v", 7).decode(gone)
    assert put_lease_call("k", b"v", 7).path == "/v1/kv/k?lease=7"
    call = txn_call([Compare("k", "value", "=", b"\xff"), Compare("k", "version", ">", 2)],
                    [Put("k", b"x", lease=3)], [{"get": {"key": "k"}}])
    assert call.body is not None
    assert json.loads(call.body) == {
        "compare": [{"key": "k", "target": "value", "op": "=", "value_base64": "/w=="},
                    {"key": "k", "target": "version", "op": ">", "value": 2}],
        "success": [{"put": {"key": "k", "value": "x", "lease": 3}}],
        "failure": [{"get": {"key": "k"}}]}
    answer = Response(200, {}, json.dumps({
        "index": 9, "revision": 9, "succeeded": False, "results": [
            {"type": "get", "kv": {"key": "k", "value_base64": "/w==", "create_revision": 2,
                                   "mod_revision": 4, "version": 3, "lease": 0}}]}).encode())
    result = call.decode(answer)
    assert not result.succeeded and result.revision == 9
    assert result.results[0]["kv"].value == b"\xff"
    with pytest.raises(ValueError):
        lease_keepalive_call(0)


# -- both clients' watch against fake nodes ---------------------------------------------------


Handler = Callable[[web.Request], Any]


def _nodes(asked: list[str | None]) -> list[Handler]:
    """Node 1 sends revision 5 and half of revision 6, then breaks the stream; node 2 serves
    from whatever it is asked for: the rest of 6 (repeating p/b), then 7."""
    history = [_line(5, "p/a"), _line(6, "p/b"), _line(6, "p/c"), _line(7, "p/a", "delete", "")]

    async def first(request: web.Request) -> web.StreamResponse:
        asked.append(request.query.get("from_revision"))
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(history[0] + history[1])
        raise ConnectionResetError  # aiohttp drops the connection mid-stream

    async def second(request: web.Request) -> web.StreamResponse:
        asked.append(request.query.get("from_revision"))
        start = int(request.query["from_revision"])
        response = web.StreamResponse()
        await response.prepare(request)
        for raw in history:
            if json.loads(raw)["revision"] >= start:
                await response.write(raw)
        await response.write(_progress(7))
        await asyncio.sleep(30)  # an idle stream: the client stops reading first
        return response

    return [first, second]


EXPECTED = [(5, "put", "p/a"), (6, "put", "p/b"), (6, "put", "p/c"), (7, "delete", "p/a")]


def _follow_blocking(handlers: list[Handler]) -> list[tuple[int, str, str]]:
    """The first four changes ``Client.watch`` yields from revision 5 against ``handlers``."""
    async def main() -> list[tuple[int, str, str]]:
        async for urls in fake_nodes(handlers, "/v1/watch"):
            def follow(urls: list[str] = urls) -> list[tuple[int, str, str]]:
                with Client(urls, timeout=10) as kv:
                    watch = kv.watch("p/", from_revision=5)
                    seen = [(e.revision, e.type, e.key) for _, e in zip(range(4), watch,
                                                                          strict=False)]
                    watch.close()
                    return seen
            return await asyncio.to_thread(follow)
        raise AssertionError("not served")

    return asyncio.run(main())


def _follow_async(handlers: list[Handler]) -> list[tuple[int, str, str]]:
    """As ``_follow_blocking``, with ``AsyncClient.watch``."""
    async def main() -> list[tuple[int, str, str]]:
        async for urls in fake_nodes(handlers, "/v1/watch"):
            async with AsyncClient(urls, timeout=10) as kv:
                seen = []
                watch = kv.watch("p/", from_revision=5)
                async for event in watch:
                    seen.append((event.revision, event.type, event.key))
                    if len(seen) == 4:
                        break
                await watch.aclose()
                return seen
        raise AssertionError("not served")

    return asyncio.run(main())


FOLLOW = pytest.mark.parametrize("follow", [_follow_blocking, _follow_async],
                                 ids=["blocking", "async"])


@FOLLOW
def test_a_watch_resumes_on_the_next_node_without_gap_or_duplicate(
        follow: Callable[[list[Handler]], list[tuple[int, str, str]]]) -> None:
    asked: list[str | None] = []
    assert follow(_nodes(asked)) == EXPECTED
    assert asked == ["5", "6"]


async def _compacted(request: web.Request) -> web.Response:
    return web.json_response({"error": "compacted", "code": "compacted",
                              "oldest_available": 40, "current": 77}, status=410)


def _restarted_then_full(asked: list[str | None]) -> list[Handler]:
    """Node 1 (restarted: its history starts after revision 5) answers 410; node 2 has every
    revision."""
    async def compacted(request: web.Request) -> web.Response:
        asked.append(request.query.get("from_revision"))
        return await _compacted(request)

    return [compacted, _nodes(asked)[1]]


@FOLLOW
def test_a_watch_continues_on_another_node_after_a_410_from_one(
        follow: Callable[[list[Handler]], list[tuple[int, str, str]]]) -> None:
    asked: list[str | None] = []
    assert follow(_restarted_then_full(asked)) == EXPECTED
    assert asked == ["5", "5"]


@pytest.mark.parametrize("nodes", [1, 2])
def test_both_watches_raise_compacted_when_every_node_answers_410(nodes: int) -> None:
    async def main() -> None:
        async for urls in fake_nodes([_compacted] * nodes, "/v1/watch"):
            def blocking(urls: list[str] = urls) -> None:
                with Client(urls) as kv, pytest.raises(CompactedError, match="40"):
                    next(kv.watch(from_revision=2))
            await asyncio.to_thread(blocking)
            async with AsyncClient(urls) as kv:
                with pytest.raises(CompactedError):
                    async for _ in kv.watch(from_revision=2):
                        pass

    asyncio.run(main())

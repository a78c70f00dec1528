"""Malformed and broken HTTP gets a JSON error and no traceback (findings of the HTTP fuzzer)."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from kv_helpers import FAST, run
from polling import eventually

from raftly.kv.service import LocalCluster, RunningNode


async def _exchange(node: RunningNode, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(node.api_address.host, node.api_address.port)
    try:
        writer.write(data)
        await writer.drain()
        return await reader.read()  # every answer here closes the connection
    finally:
        writer.close()


def _json_error(answer: bytes, status: int) -> dict[str, object]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == str(status).encode(), answer[:200]
    assert b"application/json" in head
    doc = json.loads(body)
    assert isinstance(doc, dict) and "error" in doc
    return doc


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.ERROR or r.exc_info is not None]


@pytest.mark.parametrize("request_bytes", [
    b"GET /v1/kv/a HTTP/9.9\r\nHost: x\r\n\r\n",
    b"GET /v1/kv/a HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",
    b"PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",
])
def test_malformed_http_gets_a_json_400_and_no_traceback(
    request_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    async def go() -> None:
        async with LocalCluster(1, config=FAST) as cluster:
            node = await cluster.wait_for_leader()
            doc = _json_error(await _exchange(node, request_bytes), 400)
            assert str(doc["error"]).startswith("malformed HTTP request")
            assert node.kv.get("a") is None

    with caplog.at_level(logging.DEBUG):
        run(go())
    assert not _errors(caplog)


def test_a_put_with_an_unknown_transfer_encoding_is_refused_not_stored_empty() -> None:
    async def go() -> None:
        async with LocalCluster(1, config=FAST) as cluster:
            node = await cluster.wait_for_leader()
            answer = await _exchange(node, b"PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nConnection: close"
                                           b"\r\nTransfer-Encoding: xchunked\r\n\r\n3\r\nabc\r\n")
            assert "Transfer-Encoding" in str(_json_error(answer, 400)["error"])
            assert node.kv.get("a") is None

    run(go())


def test_a_client_that_leaves_inside_its_body_stores_nothing_and_logs_no_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def go() -> None:
        async with LocalCluster(1, config=FAST) as cluster:
            node = await cluster.wait_for_leader()
            host, port = node.api_address.host, node.api_address.port
            _, writer = await asyncio.open_connection(host, port)
            writer.write(b"PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
            await writer.drain()
            cap = node.runner.cap  # counts the API's open connections
            await eventually(lambda: cap.open == 1)
            writer.close()
            await eventually(lambda: cap.open == 0)
            assert node.kv.get("a") is None

    with caplog.at_level(logging.DEBUG):
        run(go())
    assert not _errors(caplog)


@pytest.mark.parametrize("path", ["/v1/members", "/v1/leader/transfer"])
def test_json_nested_past_the_stack_is_a_400_not_a_logged_500(
    path: str, caplog: pytest.LogCaptureFixture
) -> None:
    body = b"[" * 5000 + b"]" * 5000  # json.loads raises RecursionError, not ValueError

    async def go() -> None:
        async with LocalCluster(1, config=FAST) as cluster:
            node = await cluster.wait_for_leader()
            request = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                       "Connection: close\r\n\r\n").encode() + body
            assert _json_error(await _exchange(node, request), 400)["error"] == (
                "body is not valid JSON")

    with caplog.at_level(logging.DEBUG):
        run(go())
    assert not _errors(caplog)

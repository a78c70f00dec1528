"""The HTTP fuzzer: a short fixed-seed run is clean, and the harness catches what it hunts."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from raftly.kv.http import KVApi
from raftly.testing import httpfuzz
from raftly.testing.httpfuzz import HttpReport, Response, check_response, parse_response, run


def _run(inputs: int, seed: int, **kwargs: Any) -> HttpReport:
    return asyncio.run(asyncio.wait_for(run(inputs, seed, **kwargs), 120))


def test_a_short_fixed_seed_run_finds_nothing() -> None:
    report = _run(1500, seed=0, slow=0)
    assert not report.findings, "\n".join(report.lines())
    assert report.inputs == 1500
    assert report.writes > 10  # the well-formed share reaches the log, and is checked there
    statuses = {outcome.split(": ", 1)[1] for outcome in report.outcomes}
    assert {"answered 200", "answered 400", "answered 404"} <= statuses


def test_every_generated_kind_of_request_occurs() -> None:
    rng = random.Random(0)
    kinds = {httpfuzz.generate(rng).kind for _ in range(500)}
    assert kinds == {"well-formed", "garbage", "json route", "hostile", "chunked",
                     "content-length lie", "odd framing"}


def test_the_harness_reports_a_stalled_request_the_node_keeps_open() -> None:
    # Until the API has a read timeout on bodies (408), a stalled request stays open: this
    # proves the harness notices, with a timeout far shorter than any the API would use.
    report = _run(0, seed=1, slow=2, slow_timeout=0.3)
    assert [key.split(":")[0] for key in report.findings] == ["stalled request"]


def test_the_harness_reports_an_unexpected_500_and_its_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken(self: KVApi, request: Any) -> Any:
        raise RuntimeError("a handler bug")

    monkeypatch.setattr(KVApi, "get", broken)
    report = _run(200, seed=2, slow=0)
    kinds = {key.split(":")[0] for key in report.findings}
    assert {"bad answer", "logged"} <= kinds


def test_the_harness_reports_a_write_of_a_truncated_body(monkeypatch: pytest.MonkeyPatch) -> None:
    body = KVApi.read_body

    async def truncating(self: KVApi, request: Any, limit: int, what: str = "value") -> bytes:
        return (await body(self, request, limit, what))[:-1]

    monkeypatch.setattr(KVApi, "read_body", truncating)
    report = _run(300, seed=3, slow=0)
    assert any(key.startswith("state:") for key in report.findings)


def _parse(raw: bytes, head: bool = False) -> Response | None:
    async def go() -> Response | None:
        reader = asyncio.StreamReader()
        reader.feed_data(raw)
        reader.feed_eof()
        return await parse_response(reader, head)

    return asyncio.run(go())


def test_a_json_error_passes_and_a_plain_text_error_does_not() -> None:
    ok = _parse(b'HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n'
                b'Content-Length: 16\r\n\r\n{"error": "bad"}')
    assert ok is not None and check_response(ok, False) is None
    plain = _parse(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
                   b"Content-Length: 3\r\n\r\nbad")
    assert plain is not None and "without a JSON body" in (check_response(plain, False) or "")
    with pytest.raises(httpfuzz.Malformed):
        _parse(b"HTTP/1.1 200\r\nContent-Length: 10\r\n\r\nshort")
    with pytest.raises(httpfuzz.Malformed):
        _parse(b"SIP/2.0 200 OK\r\n\r\n")
    assert _parse(b"") is None

"""Hostile input for the HTTP API of a live KV node on 127.0.0.1.

Starts a ``LocalCluster`` (one node by default) and sends it, over raw sockets, requests no
client library would write: random methods, paths (percent-escapes valid and not, overlong,
raw unicode and invalid UTF-8, ``..``), headers (huge, many, duplicated, invalid, Content-Length
lies, Transfer-Encoding tricks, garbage session headers), bodies (random, oversized, deeply
nested JSON), broken chunked encodings, raw byte garbage, and slowloris-style requests that
stall inside their headers or body. For every input it checks that

- the answer, if any, is a well-formed HTTP/1.x response, and a 4xx/5xx carries a JSON object
  with an ``error`` field (or the node closed the connection);
- nothing is logged at ERROR or with a traceback (an unexpected 500);
- a write is applied only for a request answered 200 with its index, and applies exactly the
  value the request's framing delimits (a truncated or broken body must never be stored);

and over the run that the node's memory stays bounded, that it still serves a normal put/get
afterwards, and that its KV state holds exactly what acknowledged writes left there.

``python -m raftly.testing.httpfuzz --inputs 100000 --seed 1``; stalled requests are checked
for an answer (408) or a close within ``--slow-timeout`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import re
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from raftly.kv.protocol import (
    ACK_HEADER,
    CLIENT_HEADER,
    KV_PATH,
    MEMBERS_PATH,
    RETRY_HEADER,
    SEQ_HEADER,
    STATUS_PATH,
    TRANSFER_PATH,
)
from raftly.testing.wirefuzz import Records

__all__ = ["HttpReport", "Request", "Response", "check_response", "generate", "main",
           "parse_response", "run"]

ANSWER_TIMEOUT = 3.0
"""Seconds a complete request may take to be answered by a single in-process node."""
_MEMORY_GROWTH_LIMIT = 256 << 20
"""Bytes the process may grow over a run (the node's buffers are bounded well below this)."""
_FUZZ_PREFIX = "f"
"""Keys the fuzzer writes start with this, so its control key ("control") never collides."""


@dataclass(slots=True)
class Request:
    """Raw bytes to send, and what the fuzzer knows about them.

    ``value``: the value a PUT of this request may store (its body as its framing delimits it),
    or None when it must not store anything (broken framing, cut short). ``stall``: after
    sending ``data``, wait without sending more (slowloris); the node must answer or close.
    ``parts``: send in these pieces with ``delay`` seconds between them (slow but complete).
    """

    kind: str
    data: bytes
    value: bytes | None = None
    complete: bool = True
    stall: bool = False
    parts: int = 1
    delay: float = 0.0


@dataclass(slots=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(slots=True)
class HttpReport:
    """What a run did: inputs, seconds, outcome counts, findings, memory."""

    inputs: int = 0
    seconds: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)
    findings: dict[str, tuple[int, str]] = field(default_factory=dict)
    memory_start: int = 0
    memory_peak: int = 0
    writes: int = 0
    written_bytes: int = 0

    def add(self, kind: str, detail: str, example: bytes) -> None:
        key = kind + ": " + re.sub(r"\d+", "N", detail)
        count, first = self.findings.get(key, (0, ""))
        self.findings[key] = (count + 1, first or example[:300].decode("latin-1"))

    def lines(self) -> list[str]:
        rate = self.inputs / self.seconds if self.seconds else 0.0
        out = [f"{self.inputs} inputs in {self.seconds:.1f}s ({rate:,.0f} inputs/s), "
               f"{self.writes} acknowledged writes ({self.written_bytes >> 20} MiB), "
               f"memory {self.memory_start >> 20} MiB -> peak {self.memory_peak >> 20} MiB, "
               f"{len(self.findings)} findings"]
        out += [f"  {name}: {count}" for name, count in sorted(self.outcomes.items())]
        out += [f"  FINDING {key} (x{count}; e.g. {first!r})"
                for key, (count, first) in self.findings.items()]
        return out


# -- generating requests -------------------------------------------------------------------------

_METHODS = ("GET", "PUT", "DELETE", "HEAD", "POST", "PATCH", "OPTIONS", "TRACE", "CONNECT",
            "get", "PuT", "PRI", "BREW", "G\x00T", "GET\t", "", "X" * 300, "M-SEARCH", "\u00e9")
_KEY_PIECES = ("a", "key", "%2F", "%2e%2e", "..", ".", "%00", "%ff", "%c0%af", "%zz", "%", "%2",
               "\u00e9", "\U0001f600", "%E2%82%AC", "//", "/", "?", "#", ";", " ", "%20", "+",
               "~", "%25", "\\", "\x7f", "\xff", "%ED%A0%80", "x" * 100)
_PATH_BASES = (KV_PATH + "/", KV_PATH, STATUS_PATH, MEMBERS_PATH, MEMBERS_PATH + "/zz/promote",
               MEMBERS_PATH + "/zz", TRANSFER_PATH, "/", "/v1", "/v2/kv/", "*",
               "http://127.0.0.1/v1/kv/", "/v1/kv/../status", "/v1/kv//", "/v1/%6bv/")
_QUERIES = ("", "?", "?prefix=", "?prefix=f&limit=3", "?limit=-1", "?limit=99999999999999999999",
            "?limit=1e3", "?consistency=stale", "?consistency=bogus", "?expect=", "?expect=x",
            "?expect_base64=%%%", "?expect_base64=AA==", "?expect=a&expect_base64=AA==",
            "?prefix=a&prefix=b", "?unknown=1", "?=", "?&&&", "?prefix=%zz", "?limit=%00",
            "?a" * 1000)
_WRITING = re.compile(rb"^(POST|DELETE|PATCH) +(/v1/members|/v1/leader)")


def _spoil_changes(data: bytes) -> bytes:
    """Never a valid membership change or leadership transfer: it would change the cluster
    under test. A JSON object body becomes invalid JSON (deep arrays stay); an empty one (a
    transfer to any voter) goes out as a PUT, which those routes refuse."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if _WRITING.match(head) and body.lstrip()[:1] == b"{":
        body = body.replace(b"{", b"!", 1)
    elif _WRITING.match(head) and not body.strip():
        head = b"PUT" + head[head.index(b" "):]
    return head + sep + body


def _key(rng: random.Random) -> str:
    return _FUZZ_PREFIX + "".join(rng.choice(_KEY_PIECES) for _ in range(rng.randrange(0, 5)))


def _path(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.5:
        path = KV_PATH + "/" + _key(rng)
    elif roll < 0.9:
        path = rng.choice(_PATH_BASES) + _key(rng)[1:]
    else:
        path = "/" + "".join(rng.choice(_KEY_PIECES) for _ in range(rng.randrange(1, 10)))
    if rng.random() < 0.05:
        path += "x" * rng.choice((5000, 20_000, 100_000))  # overlong request line
    return path + rng.choice(_QUERIES)


def _encode_line(text: str, rng: random.Random) -> bytes:
    # Raw unicode goes out as UTF-8 or as latin-1 (invalid UTF-8), as a hostile client may.
    return text.encode("utf-8" if rng.random() < 0.7 else "latin-1", "replace")


def _nested_json(rng: random.Random) -> bytes:
    """JSON, most of it nested deeper than the interpreter's stack (json.loads recurses)."""
    depth = rng.choice((1, 10, 2000, 5000, 100_000))
    opener, closer = rng.choice(((b"[", b"]"), (b'{"a":', b"}")))
    return opener * depth + b"1" + closer * depth


def _body(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.4:
        return rng.randbytes(rng.randrange(0, 64))
    if roll < 0.55:
        return b""
    if roll < 0.65:
        return b"x" * rng.choice((1 << 20, (1 << 20) + 1, 2 << 20))  # at and beyond the limit
    if roll < 0.8:
        return _nested_json(rng)
    return json.dumps({"name": "zz", "raft": "127.0.0.1:1", "api": rng.choice(("x", 1, None))}
                      ).encode()


def _chunked(body: bytes, rng: random.Random) -> tuple[bytes, bool]:
    """``body`` in chunked encoding, maybe broken; (encoded, still well-formed)."""
    pieces = []
    pos = 0
    while pos < len(body):
        n = rng.randrange(1, 64)
        pieces.append(b"%x\r\n" % len(body[pos:pos + n]) + body[pos:pos + n] + b"\r\n")
        pos += n
    end = b"0\r\n\r\n"
    roll = rng.random()
    if roll < 0.4:
        return b"".join(pieces) + end, True
    breakage = rng.choice((
        b"zz\r\nabc\r\n", b"-1\r\n", b"ffffffffffffffffff\r\n", b"5\r\nab\r\n", b"3\nabc\n",
        b"3;" + b"e" * 10000 + b"\r\nabc\r\n", b"0x3\r\nabc\r\n", b" 3\r\nabc\r\n",
        b"3\r\nabcd\r\n", b"\r\n", b"7fffffff\r\nabc", b"0\r\nX: y", b"+3\r\nabc\r\n",
    ))
    at = rng.randrange(len(pieces) + 1)
    return b"".join(pieces[:at]) + breakage + b"".join(pieces[at:]), False


def _well_formed(rng: random.Random) -> Request:
    """A request a normal client could send; writes must store exactly their body."""
    key = _key(rng)
    quoted = urllib.parse.quote(key, safe="")
    method = rng.choice(("PUT", "PUT", "GET", "DELETE"))
    body = rng.randbytes(rng.randrange(0, 32)) if method == "PUT" else b""
    head = (f"{method} {KV_PATH}/{quoted} HTTP/1.1\r\nHost: x\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    return Request("well-formed", head + body, value=body if method == "PUT" else None)


def generate(rng: random.Random) -> Request:
    """One hostile request (or a well-formed one, one time in ten)."""
    roll = rng.random()
    if roll < 0.1:
        return _well_formed(rng)
    if roll < 0.15:
        return Request("garbage", rng.randbytes(rng.randrange(1, 400)), complete=False)
    if roll < 0.18:  # the JSON routes: never a valid change (an object body is spoilt below)
        body = _nested_json(rng) if rng.random() < 0.5 else _body(rng)
        path = rng.choice((MEMBERS_PATH, TRANSFER_PATH, MEMBERS_PATH + "/zz/promote"))
        data = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n").encode() + body
        return Request("json route", _spoil_changes(data), complete=True)
    method = rng.choice(_METHODS) if rng.random() < 0.3 else rng.choice(("PUT", "GET", "DELETE"))
    version = rng.choice(("HTTP/1.1",) * 8 + ("HTTP/1.0", "HTTP/2.0", "HTTP/9.9", "HTTP/1.1x",
                                              "", "http/1.1"))
    line = _encode_line(f"{method} {_path(rng)} {version}".rstrip(" "), rng)
    headers: list[bytes] = [b"Host: 127.0.0.1"]
    body = _body(rng) if rng.random() < 0.7 else b""
    complete = True
    value: bytes | None = body
    framing = rng.random()
    if framing < 0.45:
        headers.append(b"Content-Length: %d" % len(body))
    elif framing < 0.6:  # Content-Length lies
        told = max(0, len(body) + rng.choice((-5, -1, 1, 100, 1 << 30)))
        headers.append(b"Content-Length: %d" % told)
        value = body[:told] if told <= len(body) else None
        complete = told <= len(body)
    elif framing < 0.75:
        encoded, ok = _chunked(body, rng)
        te = rng.choice((b"chunked",) * 4 + (b"gzip, chunked", b"chunked, gzip", b"xchunked",
                                             b"chunked\x00", b"CHUNKED", b"identity"))
        headers.append(b"Transfer-Encoding: " + te)
        if rng.random() < 0.2:
            headers.append(b"Content-Length: %d" % len(encoded))  # request smuggling shape
        body, value, complete = encoded, (value if ok else None), False
    elif framing < 0.85:  # odd framing headers
        odd = rng.sample([b"Content-Length: 3", b"Content-Length: 4", b"Content-Length: -1",
                          b"Content-Length: abc", b"Content-Length: 0x10",
                          b"Content-Length: 99999999999999999999999",
                          b"Content-Length:  3 ", b"Transfer-Encoding: chunked",
                          b"Transfer-Encoding: chunked"], rng.randrange(1, 4))
        headers += odd
        value, complete = None, False
        plain = re.fullmatch(rb"Content-Length: *(\d{1,6}) *", odd[0]) if len(odd) == 1 else None
        if plain is not None:  # one plain Content-Length after all (spaces allowed): it holds
            told = int(plain.group(1))
            value = body[:told] if told <= len(body) else None
    else:
        value = b""  # no framing: an empty body, and what follows is the next "request"
    for _ in range(rng.choice((0, 0, 1, 3))):
        headers.append(rng.choice((
            b"X-Big: " + b"a" * rng.choice((100, 20_000, 100_000)),
            b"Bad Header: x", b"NoColon", b": empty-name", b"X-Nul: a\x00b", b"X-Ctl: \x01\x7f",
            b" folded: continuation", b"X-Fold: a\r\n  b", b"X-Lf-Only: a\nX-B: b",
            b"Expect: 100-continue", b"Connection: upgrade\r\nUpgrade: websocket",
            CLIENT_HEADER.encode() + b": " + rng.randbytes(8).hex().encode(),
            SEQ_HEADER.encode() + rng.choice((b": 1", b": -1", b": 99999999999999999999999",
                                              b": \xd9\xa3", b": 1_0")),
            ACK_HEADER.encode() + b": x", RETRY_HEADER.encode() + b": 2",
            b"Content-Type: application/json", b"Accept-Encoding: gzip",
            b"X-Unicode: \xc3\xa9\xff",
        )))
    if rng.random() < 0.02:
        headers += [b"X-Many-%d: y" % i for i in range(rng.choice((200, 5000)))]
    head = line + b"\r\n" + b"\r\n".join(headers) + b"\r\n\r\n"
    data = _spoil_changes(head + body)
    if not line.startswith(b"PUT "):
        value = None
    kind = ("chunked" if framing >= 0.6 and framing < 0.75 else "content-length lie"
            if 0.45 <= framing < 0.6 else "odd framing" if 0.75 <= framing < 0.85 else "hostile")
    request = Request(kind, data, value=value, complete=complete)
    if rng.random() < 0.02:  # slow but complete: a few pieces with pauses
        request.parts, request.delay = rng.randrange(2, 6), rng.choice((0.05, 0.2))
    return request


def stalled(rng: random.Random) -> Request:
    """Slowloris: a valid PUT that stops inside its headers or its body, and waits."""
    body = rng.randbytes(rng.randrange(10, 1000))
    data = (f"PUT {KV_PATH}/{_FUZZ_PREFIX}slow HTTP/1.1\r\nHost: x\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    cut = rng.randrange(5, len(data) - 1)
    where = "headers" if cut < data.index(b"\r\n\r\n") + 4 else "body"
    return Request(f"stalled in the {where}", data[:cut], complete=False, stall=True)


# -- reading and checking answers ----------------------------------------------------------------


class Malformed(Exception):
    """The node's answer is not a well-formed HTTP/1.x response."""


_STATUS = re.compile(rb"HTTP/\d\.\d (\d{3})(?: [^\r\n]*)?")
"""aiohttp answers in the version the request named, when it parses (HTTP/2.0 included)."""


async def parse_response(reader: asyncio.StreamReader, head_request: bool) -> Response | None:
    """One response off ``reader``; None if the node closed without a byte. Raises Malformed."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise Malformed(f"closed inside the response head: {exc.partial[:80]!r}") from None
    except asyncio.LimitOverrunError:
        raise Malformed("response head over 64 KiB") from None
    lines = head[:-4].split(b"\r\n")
    match = _STATUS.fullmatch(lines[0])
    if match is None:
        raise Malformed(f"bad status line {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise Malformed(f"bad header line {line[:80]!r}")
        headers[name.decode("latin-1").lower()] = value.strip().decode("latin-1")
    status = int(match.group(1))
    if 100 <= status < 200:  # interim (100 Continue): the answer follows
        return await parse_response(reader, head_request)
    body = b""
    if head_request or status in (204, 304):
        pass
    elif "content-length" in headers:
        try:
            body = await reader.readexactly(int(headers["content-length"]))
        except (ValueError, asyncio.IncompleteReadError):
            raise Malformed("body shorter than its Content-Length") from None
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            body += (await reader.readexactly(size + 2))[:size]
            if size == 0:
                break
    else:
        body = await reader.read()  # delimited by the close
    return Response(status, headers, body)


def check_response(response: Response, head_request: bool) -> str | None:
    """What is wrong with ``response`` as an answer of this API, or None."""
    if response.status >= 400 and not head_request:
        if "application/json" not in response.headers.get("content-type", ""):
            return (f"{response.status} without a JSON body "
                    f"({response.headers.get('content-type')}: {response.body[:60]!r})")
        try:
            doc = json.loads(response.body)
        except ValueError:
            return f"{response.status} with a body that is not JSON: {response.body[:60]!r}"
        if not isinstance(doc, dict) or "error" not in doc:
            return f"{response.status} JSON without an error field: {response.body[:60]!r}"
    if response.status == 500:
        return f"500: {response.body[:100]!r}"
    return None


@dataclass(slots=True)
class _Ack:
    """A write the node acknowledged: the value its request delimited (None: it must not store
    anything), its kind and the start of its bytes (for the report; not all 2 MiB of them)."""

    kind: str
    value: bytes | None
    start: bytes


async def _exchange(address: tuple[str, int], request: Request, slow_timeout: float
                    ) -> tuple[str, Response | None]:
    """Send one request and read one answer: (outcome, response)."""
    reader, writer = await asyncio.open_connection(*address, limit=1 << 16)
    try:
        try:
            step = -(-len(request.data) // request.parts)
            for i in range(0, len(request.data), step):
                if i:
                    await asyncio.sleep(request.delay)
                writer.write(request.data[i:i + step])
                await writer.drain()
        except OSError:
            pass  # the node may close while we still send (a refused header); read its answer
        wait = slow_timeout if request.stall else ANSWER_TIMEOUT
        try:
            async with asyncio.timeout(wait):
                response = await parse_response(reader, request.data.startswith(b"HEAD "))
        except TimeoutError:
            return ("stalled: no answer nor close" if request.stall else "no answer"), None
        except (OSError, asyncio.LimitOverrunError, asyncio.IncompleteReadError):
            return "reset", None
        if response is None:
            return "closed without an answer", None
        return f"answered {response.status}", response
    finally:
        writer.close()


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


async def _put(address: tuple[str, int], key: str, value: bytes) -> Response | None:
    data = (f"PUT {KV_PATH}/{key} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(value)}\r\n"
            "Connection: close\r\n\r\n").encode() + value
    return (await _exchange(address, Request("control", data), ANSWER_TIMEOUT))[1]


async def _get(address: tuple[str, int], key: str) -> Response | None:
    data = f"GET {KV_PATH}/{key} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    return (await _exchange(address, Request("control", data), ANSWER_TIMEOUT))[1]


async def run(inputs: int, seed: int = 0, *, nodes: int = 1, concurrency: int = 32,
              slow: int = 8, slow_timeout: float = 10.0,
              progress: Callable[[HttpReport], None] | None = None) -> HttpReport:
    """Fuzz a fresh ``LocalCluster(nodes)`` with ``inputs`` requests to its leader, plus
    ``slow`` stalled ones that must be answered or closed within ``slow_timeout``."""
    from raftly.kv.service import LocalCluster

    rng = random.Random(seed)
    report = HttpReport(memory_start=_rss())
    report.memory_peak = report.memory_start
    handler = Records(logging.ERROR)
    watched = [logging.getLogger(name) for name in ("raftly", "aiohttp")]
    levels = [log.level for log in watched]
    for log in watched:
        log.addHandler(handler)
        if log.getEffectiveLevel() > logging.ERROR:  # seen here even when the root is quieter
            log.setLevel(logging.ERROR)
    applied: list[tuple[int, bytes, Any]] = []
    acks: dict[int, _Ack] = {}
    started = time.perf_counter()
    try:
        async with LocalCluster(nodes) as cluster:
            leader = await cluster.wait_for_leader()
            address = (leader.api_address.host, leader.api_address.port)
            machine = leader.kv
            apply = machine.apply

            def recording_apply(index: int, command: bytes) -> Any:
                result = apply(index, command)
                applied.append((index, command, result))
                return result

            machine.apply = recording_apply  # type: ignore[method-assign]  # observe, not change
            queue: asyncio.Queue[Request | None] = asyncio.Queue(maxsize=concurrency * 2)

            async def worker() -> None:
                while (request := await queue.get()) is not None:
                    try:
                        outcome, response = await _exchange(address, request, slow_timeout)
                    except (OSError, Malformed, ValueError) as exc:
                        outcome, response = f"unreadable answer: {type(exc).__name__}", None
                        report.add("bad answer", f"{type(exc).__name__}: {exc}", request.data)
                    report.inputs += 1
                    report.outcomes[f"{request.kind}: {outcome}"] += 1
                    if response is not None:
                        problem = check_response(response, request.data.startswith(b"HEAD "))
                        if problem is not None:
                            report.add("bad answer", problem, request.data)
                        if response.status == 200 and request.data.startswith(b"PUT "):
                            with contextlib.suppress(ValueError, TypeError):
                                doc = json.loads(response.body)
                                if isinstance(doc, dict) and type(doc.get("index")) is int:
                                    acks[doc["index"]] = _Ack(request.kind, request.value,
                                                              request.data[:300])
                    elif outcome.startswith("stalled"):
                        report.add("stalled request", "neither answered (408) nor closed within "
                                   f"{slow_timeout}s", request.data)
                    elif outcome == "no answer" and request.kind == "well-formed":
                        report.add("no answer", "to a well-formed request", request.data)

            workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
            # Slowloris alongside: each must end in an answer (408) or a close.
            for _ in range(slow):
                await queue.put(stalled(rng))
            for i in range(inputs):
                await queue.put(generate(rng))
                if i % 1000 == 999:
                    report.memory_peak = max(report.memory_peak, _rss())
                if progress is not None and i % 10_000 == 9_999:
                    report.seconds = time.perf_counter() - started
                    progress(report)
            for _ in workers:
                await queue.put(None)
            await asyncio.gather(*workers)
            report.seconds = time.perf_counter() - started
            report.memory_peak = max(report.memory_peak, _rss())
            await _check_state(report, address, machine, applied, acks)
    finally:
        for log, level in zip(watched, levels, strict=True):
            log.removeHandler(handler)
            log.setLevel(level)
    for record in handler.records:
        report.add("logged", f"{record.levelname} {record.name}: {record.getMessage()[:150]}",
                   b"")
    # Every acknowledged value is held four times: in the node's log (in memory) and store, and
    # here (the applied commands and the acknowledged values): that much is data, not a leak.
    allowed = _MEMORY_GROWTH_LIMIT + 4 * report.written_bytes
    if report.memory_peak - report.memory_start > allowed:
        report.add("memory", f"grew by {(report.memory_peak - report.memory_start) >> 20} MiB, "
                   f"{report.written_bytes >> 20} MiB of it written", b"")
    return report


async def _check_state(report: HttpReport, address: tuple[str, int], machine: Any,
                       applied: list[tuple[int, bytes, Any]], acks: dict[int, _Ack]) -> None:
    """Every applied write was acknowledged to a request that delimited that value; the node
    still serves a put and a get; the store holds only what those writes left."""
    from raftly.kv.state_machine import Cas, Delete, Put, decode

    expected: dict[str, bytes] = {}
    for index, command, result in applied:
        try:
            op, _ = decode(command)
        except ValueError:
            continue  # refused by the state machine itself (its answer was a 400)
        ack = acks.get(index)
        if isinstance(op, Put | Cas) and result.ok and result.index == index:
            report.writes += 1
            report.written_bytes += len(command)
            if ack is None:
                report.add("state", f"write of {op.key!r} at {index} never acknowledged", b"")
            else:
                value = op.value if isinstance(op, Put) else op.new
                if ack.value is None or ack.value != value:
                    report.add("state", f"{ack.kind} request stored {value[:40]!r}, "
                               "not the value its framing delimits", ack.start)
            expected[op.key] = op.value if isinstance(op, Put) else op.new
        elif isinstance(op, Delete) and result.ok:
            expected.pop(op.key, None)
    stored = dict(machine.list("", None))
    stored.pop("control", None)
    if set(stored) - set(expected):
        report.add("state", f"keys nobody wrote: {sorted(set(stored) - set(expected))[:5]}", b"")
    value = random.randbytes(16)
    put = await _put(address, "control", value)
    got = await _get(address, "control")
    if put is None or put.status != 200 or got is None or got.body != value:
        report.add("after the run", f"a normal put/get failed: {put} / {got}", b"")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raftly.testing.httpfuzz",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--slow", type=int, default=8, help="stalled (slowloris) requests")
    parser.add_argument("--slow-timeout", type=float, default=10.0,
                        help="seconds a stalled request may stay open without an answer")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)  # the counts say it; findings name the lines

    def progress(report: HttpReport) -> None:
        print(f"... {report.inputs} inputs, {report.inputs / report.seconds:,.0f}/s, "
              f"memory peak {report.memory_peak >> 20} MiB, {len(report.findings)} findings",
              flush=True)

    report = asyncio.run(run(args.inputs, args.seed, nodes=args.nodes,
                             concurrency=args.concurrency, slow=args.slow,
                             slow_timeout=args.slow_timeout,
                             progress=progress))
    print("\n".join(report.lines()))
    return 1 if report.findings else 0


if __name__ == "__main__":
    sys.exit(main())

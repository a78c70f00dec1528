"""Recording: the history format, how each HTTP outcome is classified, the lost-write check."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from raftly.check.clients import ClientPool, Workload
from raftly.check.history import HistoryWriter, NemesisLog, fault_windows, read_jsonl
from raftly.check.runner import lost_writes
from raftly.testing.history import pair_events
from raftly.testing.linearizability import load_history


def test_history_lines_are_the_jepsen_model(tmp_path: Path) -> None:
    h = HistoryWriter(tmp_path / "history.jsonl")
    h.record(3, "invoke", "write", "k1", "v3-1")
    h.record(3, "ok", "write", "k1", "v3-1", node="n1")
    h.record(4, "invoke", "cas", "k1", ["v3-1", "v4-1"])
    h.record(4, "info", "cas", "k1", ["v3-1", "v4-1"], node="n2", error="timeout")
    h.record(5, "invoke", "read", "k1", None)
    h.record(5, "ok", "read", "k1", "v3-1", node="n3", error=None)
    h.close()
    lines = read_jsonl(tmp_path / "history.jsonl")
    assert lines == h.ops
    assert [op["type"] for op in lines] == ["invoke", "ok", "invoke", "info", "invoke", "ok"]
    times = [op["time"] for op in lines]
    assert times == sorted(times) and all(isinstance(t, int) for t in times)
    assert set(lines[0]) == {"process", "type", "f", "key", "value", "time"}
    assert lines[3]["error"] == "timeout" and "error" not in lines[5]
    # The checker reads it as is (extra fields are kept, not rejected).
    events = load_history(tmp_path / "history.jsonl")
    assert len(events) == 6 and events[2].value == ("v3-1", "v4-1")
    pairs = pair_events(events)
    assert [(i.process, d.type if d else None) for i, d in pairs] == [
        (3, "ok"), (4, "info"), (5, "ok")]


def test_nemesis_log_windows(tmp_path: Path) -> None:
    log = NemesisLog(tmp_path / "nemesis.jsonl")
    a = log.start("partition", {"mode": "halves"})
    b = log.start("kill", {"nodes": ["n1"]})
    log.end(a, "partition")
    log.note("heal", "all")
    log.close()
    events = read_jsonl(tmp_path / "nemesis.jsonl")
    windows = fault_windows(events)
    assert [w[2] for w in windows] == ["partition", "kill"]
    assert windows[0][0] < windows[0][1]
    # The kill never ended: its window lasts until the last event.
    assert windows[1][1] == events[-1]["time"] and b == 2


# -- classification against a fake node --------------------------------------------------------

async def fake_node(behaviour: dict[str, Any]) -> tuple[web.AppRunner, str]:
    """A stand-in node: the response is chosen by the key."""
    where: dict[str, str] = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        key = request.match_info["key"]
        what = behaviour[key]
        if what == "hang":
            await asyncio.sleep(2)
        if what == "redirect":
            return web.Response(status=307, headers={
                "Location": f"{where['base']}/v1/kv/after{request.path_qs.split(key)[1]}"})
        if key == "after" or what == "ok":
            if request.method == "GET":
                return web.Response(body=b"v9-9")
            return web.json_response({"index": 1})
        status, body = what
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_route("*", "/v1/kv/{key}", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    where["base"] = f"http://127.0.0.1:{port}"
    return runner, where["base"]


def test_outcomes_are_classified_conservatively() -> None:
    behaviour: dict[str, Any] = {
        "ok": "ok",
        "missing": (404, {"error": "key not found"}),
        "cas412": (412, {"error": "current value does not match"}),
        "noleader": (503, {"error": "no leader known; retry shortly"}),
        "dropped": (503, {"error": "entry 5 was replaced; not applied, safe to retry"}),
        "other503": (503, {"error": "server closed"}),
        "unknown": (504, {"error": "outcome unknown"}),
        "boom": (500, {"error": "internal error"}),
        "hang": "hang",
        "redirect": "redirect",
        "after": "ok",
    }

    async def body() -> list[tuple[str, str, str]]:
        runner, base = await fake_node(behaviour)
        h = HistoryWriter()
        pool = ClientPool({"n1": base, "dead": "http://127.0.0.1:1"}, h,
                          Workload(op_timeout=0.5), random.Random(1))
        got: list[tuple[str, str, str]] = []
        try:
            async with aiohttp.ClientSession() as s:
                cases = [("read", "ok"), ("read", "missing"), ("read", "noleader"),
                         ("read", "hang"), ("write", "ok"), ("cas", "cas412"),
                         ("write", "noleader"), ("write", "dropped"), ("write", "other503"),
                         ("write", "unknown"), ("write", "boom"), ("write", "hang"),
                         ("cas", "redirect"), ("read", "redirect")]
                for n, (f, key) in enumerate(cases):
                    value = None if f == "read" else ("v0-1" if f == "write" else ["a", "b"])
                    out = await pool.invoke(s, n, f, key, value, "n1")  # type: ignore[arg-type]
                    got.append((f, key, out.type))
                out = await pool.invoke(s, 99, "write", "ok", "v0-2", "dead")
                got.append(("write", "refused", out.type))
        finally:
            await runner.cleanup()
        # Every op is recorded as an invoke and a completion with the same process.
        assert len(h.ops) == 2 * len(got)
        assert all(a["process"] == b["process"] for a, b in zip(h.ops[::2], h.ops[1::2],
                                                                strict=True))
        missing = h.ops[3]
        assert missing["type"] == "ok" and missing["value"] is None
        return got

    got = asyncio.run(asyncio.wait_for(body(), 30))
    assert got == [
        ("read", "ok", "ok"), ("read", "missing", "ok"), ("read", "noleader", "fail"),
        ("read", "hang", "fail"),  # a read has no effect: failing it is always safe
        ("write", "ok", "ok"), ("cas", "cas412", "fail"),
        ("write", "noleader", "fail"), ("write", "dropped", "fail"),
        ("write", "other503", "info"),  # not a known "refused before proposing" 503
        ("write", "unknown", "info"), ("write", "boom", "info"), ("write", "hang", "info"),
        ("cas", "redirect", "ok"), ("read", "redirect", "ok"),
        ("write", "refused", "fail"),  # nothing was sent
    ]


def test_a_write_cut_off_by_a_kill_is_unknown_not_failed() -> None:
    """The node takes the request, dies before answering, and is gone (refuses) afterwards.

    aiohttp on its own would resend the PUT, be refused, and the op would look certainly
    failed although the dead node may have committed it (a real run caught this)."""
    async def body() -> tuple[str, str | None]:
        server: asyncio.Server | None = None

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(1000)  # the request arrived...
            assert server is not None
            server.close()  # ...the node dies: later connections are refused
            writer.transport.abort()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool = ClientPool({"n1": f"http://127.0.0.1:{port}"}, HistoryWriter(), Workload(),
                          random.Random(1))
        from raftly.check.clients import open_session
        async with open_session() as s:
            out = await pool.invoke(s, 1, "write", "k", "v1-1", "n1")
        return out.type, out.error

    kind, error = asyncio.run(asyncio.wait_for(body(), 20))
    assert kind == "info", error


def test_worker_retires_a_process_after_info() -> None:
    async def body() -> list[dict[str, Any]]:
        runner, base = await fake_node({f"k{i}": "hang" for i in range(2)})
        h = HistoryWriter()
        pool = ClientPool({"n1": base}, h, Workload(clients=2, keys=2, rate=0, op_timeout=0.2,
                                                    read_ratio=0.0, write_ratio=1.0),
                          random.Random(5))
        try:
            await pool.run(1.0)
        finally:
            await runner.cleanup()
        return h.ops

    ops = asyncio.run(asyncio.wait_for(body(), 30))
    done = [op for op in ops if op["type"] != "invoke"]
    assert done and all(op["type"] == "info" for op in done)
    # Each process has exactly one op: after info it never issues again.
    procs = [op["process"] for op in ops if op["type"] == "invoke"]
    assert len(procs) == len(set(procs))
    values = [op["value"] for op in ops if op["type"] == "invoke"]
    assert len(values) == len(set(values))  # values are unique


def test_lost_writes() -> None:
    def op(p: int, t: str, f: str, v: object, time: int, key: str = "k") -> dict[str, Any]:
        return {"process": p, "type": t, "f": f, "key": key, "value": v, "time": time}

    ops = [op(1, "invoke", "write", "a", 1), op(1, "ok", "write", "a", 2),
           op(2, "invoke", "write", "b", 3), op(2, "ok", "write", "b", 4),
           op(3, "invoke", "cas", ["b", "c"], 5), op(3, "info", "cas", ["b", "c"], 6)]
    assert lost_writes(ops, {"k": "b"}) == []
    assert lost_writes(ops, {"k": "c"}) == []  # the info cas may have happened last
    lost = lost_writes(ops, {"k": "a"})  # "b" was acknowledged after "a" returned
    assert [x["value"] for x in lost] == ["b"]
    assert [x["value"] for x in lost_writes(ops, {"k": None})] == ["a", "b"]
    assert lost_writes(ops, {"k": "zzz"})[0]["problem"] == "final value was never written"
    json.dumps(lost)

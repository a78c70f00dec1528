"""The HTTP benchmark: three real ``raftly serve`` processes, driven by one aiohttp client.

With ``tls`` the nodes serve TLS on both ports (certificates made in the run's temporary
directory) and the client speaks https with their CA, over kept-alive connections: what a
long-lived client pays for TLS, handshakes amortized.

``http_put_op`` is the client's one write, shared with the etcd benchmark (``etcd.py``) so that
both systems are driven by the same code path: one request per write to the leader, the body
read in full and its JSON answer checked.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from raftly import eventloop
from raftly.bench.children import STOP_GRACE
from raftly.bench.load import LEADER_TIMEOUT, VALUE, WARMUP, Op, Stats, closed_loop, split_stats
from raftly.bench.places import temp_dir
from raftly.bench.stats import Sample
from raftly.localcluster import ProcessCluster, plan_loopback
from raftly.storage.disk.fsio import FsyncPolicy

if TYPE_CHECKING:
    import aiohttp

T = TypeVar("T")

Request = Callable[[int], tuple[str, bytes]]
"""``request(client)``: the URL and body of that client's write."""
Accept = Callable[[Any], bool]
"""Whether a decoded JSON answer (of a 200) shows the write done."""


def http_put_op(session: aiohttp.ClientSession, method: str, request: Request,
                accept: Accept) -> Op:
    """One write as a closed-loop op: ``method`` the URL and body ``request`` gives, True when
    the answer is a 200 whose JSON ``accept`` takes. Requests are built once per client."""
    import aiohttp

    built: dict[int, tuple[str, bytes]] = {}

    async def op(client: int, seq: int) -> bool:
        url, body = built.get(client) or built.setdefault(client, request(client))
        try:
            async with session.request(method, url, data=body, allow_redirects=False) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    return False
        except (aiohttp.ClientError, TimeoutError):
            return False
        try:
            return accept(json.loads(raw))
        except ValueError:
            return False

    return op


def raftly_accepts(answer: Any) -> bool:
    """A raftly PUT answer: ``{"index": N, "revision": R}``."""
    return isinstance(answer, dict) and isinstance(answer.get("revision"), int)


async def _drive_http(nodes: ProcessCluster, clients: Sequence[int], seconds: float,
                      warmup: float, timeout: float, value: bytes,
                      measured: Callable[[Sample], None] | None) -> list[Sample]:
    import aiohttp

    async def all_stats() -> Stats:
        # The status calls block: off the event loop, so the clients keep running meanwhile.
        out: Stats = {}
        for name, status in (await asyncio.to_thread(nodes.statuses)).items():
            stats = status.get("stats") if status is not None else None
            if isinstance(stats, dict):
                out[name] = (int(stats.get("fsyncs", 0)), int(stats.get("entries_persisted", 0)))
        return out

    samples: list[Sample] = []
    for level in clients:
        leader, _ = await asyncio.to_thread(nodes.wait_for_leader, LEADER_TIMEOUT, nodes.names)
        target = nodes.url(leader)
        context = nodes.ssl_context()
        connector = aiohttp.TCPConnector(limit=0, ssl=context if context is not None else True)
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
            def request(client: int, t: str = target) -> tuple[str, bytes]:
                return f"{t}/v1/kv/bench-{client}", value

            op = http_put_op(session, "PUT", request, raftly_accepts)

            async def probe(leader: str = leader) -> tuple[int, int, int, int]:
                return split_stats(await all_stats(), leader)

            samples.append(await closed_loop(op, level, seconds, warmup=warmup, probe=probe))
        nodes.check_alive()
        if measured is not None:
            measured(samples[-1])
    return samples


def serve_options(event_loop: str, extra: Sequence[str] = ()) -> tuple[str, ...]:
    """The ``raftly serve`` options of a benchmark node: ``--event-loop`` unless "auto" (the
    nodes' own default), then ``extra``."""
    if event_loop not in eventloop.CHOICES:
        raise ValueError(f"unknown event loop {event_loop!r}")
    loop = () if event_loop == "auto" else ("--event-loop", event_loop)
    return (*loop, *extra)


def on_fresh_cluster(name: str, drive: Callable[[ProcessCluster], Coroutine[Any, Any, T]], *,
                     fsync: FsyncPolicy, base_dir: str | Path | None, event_loop: str,
                     extra_serve_options: Sequence[str] = (), tls: bool = False,
                     metrics: bool = True) -> T:
    """``drive`` run on ``event_loop`` against three fresh ``raftly serve`` processes in a
    temporary directory (their ``--event-loop`` too, unless "auto"; ``tls``: TLS on both ports,
    certificates made there; ``metrics=False``: ``serve --no-metrics``); the processes are
    stopped and the directory removed on the way out (they die with this process even if it is
    killed)."""
    options = [*serve_options(event_loop, extra_serve_options),
               *(() if metrics else ("--no-metrics",))]
    with temp_dir(base_dir, f"raftly-bench-{name}-") as root:
        nodes = ProcessCluster(root, plan_loopback(3, cluster_id=f"raftly-bench-{name}"),
                               fsync=fsync, log_level="WARNING", orphan_signal=signal.SIGKILL,
                               tls_dir=root / "certs" if tls else None, serve_options=options)
        try:
            nodes.start()
            return eventloop.run(drive(nodes), loop=event_loop)
        finally:
            nodes.stop(grace=STOP_GRACE)


def bench_http(clients: Sequence[int], seconds: float, *, fsync: FsyncPolicy = "always",
               base_dir: str | Path | None = None, warmup: float = WARMUP,
               timeout: float = 10.0, tls: bool = False,
               measured: Callable[[Sample], None] | None = None, metrics: bool = True,
               value: bytes = VALUE, event_loop: str = "auto",
               extra_serve_options: Sequence[str] = ()) -> list[Sample]:
    """One run of the HTTP benchmark: three fresh node processes, one Sample per level;
    ``tls``: TLS on both ports of every node, https from the client. ``measured`` is called
    with each level's Sample as soon as it is taken (progress); ``metrics=False``: the nodes
    run ``serve --no-metrics``. ``value`` is what every write puts; ``event_loop`` is the
    client's loop (``raftly.eventloop``) and, unless "auto", the nodes' ``--event-loop`` too;
    ``extra_serve_options`` go to every node's ``serve``."""
    return on_fresh_cluster(
        "http", lambda nodes: _drive_http(nodes, clients, seconds, warmup, timeout, value,
                                          measured),
        fsync=fsync, base_dir=base_dir, event_loop=event_loop,
        extra_serve_options=extra_serve_options, tls=tls, metrics=metrics)


__all__ = ["Accept", "Request", "bench_http", "http_put_op", "on_fresh_cluster",
           "raftly_accepts", "serve_options"]

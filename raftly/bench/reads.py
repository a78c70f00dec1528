"""The read benchmark: GETs per second from three real ``raftly serve`` processes.

Keys are preloaded (``KEYS`` keys of ``value_size`` bytes, applied on every node before the
clock starts), then C closed-loop clients GET them, spread as a real client would:

- ``linearizable`` (the default): every GET goes to the leader, which confirms its leadership
  with a quorum heartbeat round (ReadIndex; reads arriving together share one round) and then
  answers from its state machine;
- ``stale`` (``?consistency=stale``): client i asks node i mod 3, which answers from its own
  state without asking anyone.

A GET counts when it is answered 200 with the preloaded value's length; anything else (a 503
while there is no leader, a 404, a connection error) is an error.

``bench_ceiling`` measures what stale reads are compared with: the HTTP server's own ceiling,
``GET /v1/status`` spread over the nodes as stale reads are (no key, nothing asked of Raft; the
same client and middlewares). ``extra_serve_options`` reach every
node (``--max-inflight-writes``...); ``event_loop`` is the client's loop and, unless "auto",
the nodes' ``--event-loop`` too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

from raftly.bench.http import on_fresh_cluster
from raftly.bench.load import LEADER_TIMEOUT, WARMUP, closed_loop
from raftly.bench.stats import Sample
from raftly.localcluster import ProcessCluster
from raftly.storage.disk.fsio import FsyncPolicy

CONSISTENCIES = ("linearizable", "stale")
STATUS = "status"
"""The pseudo-consistency of ``bench_ceiling``: ``GET /v1/status`` on every node."""
KEYS = 64
"""Keys preloaded and read round-robin: enough that no single key is hot."""


async def _preload(nodes: ProcessCluster, leader: str, value: bytes, timeout: float) -> None:
    """Write the ``KEYS`` keys on the leader and wait until every node has applied them."""
    import aiohttp

    index = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        for n in range(KEYS):
            async with session.put(f"{nodes.url(leader)}/v1/kv/read-{n}", data=value,
                                   allow_redirects=False) as resp:
                body = await resp.json()
                if resp.status != 200:
                    raise RuntimeError(f"preloading read-{n}: {resp.status} {body}")
                index = max(index, int(body["index"]))
    for name in nodes.names:
        await asyncio.to_thread(nodes.wait_applied, name, index, LEADER_TIMEOUT)


async def _drive_reads(nodes: ProcessCluster, clients: Sequence[int], seconds: float,
                       warmup: float, timeout: float, consistency: str, value_size: int,
                       measured: Callable[[Sample], None] | None) -> list[Sample]:
    import aiohttp

    leader, _ = await asyncio.to_thread(nodes.wait_for_leader, LEADER_TIMEOUT, nodes.names)
    if consistency == "linearizable":
        targets = [nodes.url(leader)]
    else:
        targets = [nodes.url(n) for n in nodes.names]
    if consistency == STATUS:

        def url(client: int, seq: int) -> str:
            return f"{targets[client % len(targets)]}/v1/status"
    else:
        await _preload(nodes, leader, b"r" * value_size, timeout)
        query = "?consistency=stale" if consistency == "stale" else ""

        def url(client: int, seq: int) -> str:
            return f"{targets[client % len(targets)]}/v1/kv/read-{(client + seq) % KEYS}{query}"

    samples: list[Sample] = []
    for level in clients:
        connector = aiohttp.TCPConnector(limit=0)
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:

            async def op(client: int, seq: int, session: aiohttp.ClientSession = session) -> bool:
                try:
                    async with session.get(url(client, seq), allow_redirects=False) as resp:
                        body = await resp.read()
                        return resp.status == 200 and (consistency == STATUS
                                                       or len(body) == value_size)
                except (aiohttp.ClientError, TimeoutError):
                    return False

            samples.append(await closed_loop(op, level, seconds, warmup=warmup))
        nodes.check_alive()
        if measured is not None:
            measured(samples[-1])
    return samples


def bench_reads(clients: Sequence[int], seconds: float, *, consistency: str = "linearizable",
                fsync: FsyncPolicy = "always", base_dir: str | Path | None = None,
                warmup: float = WARMUP, measured: Callable[[Sample], None] | None = None,
                event_loop: str = "auto", value_size: int = 256, timeout: float = 10.0,
                extra_serve_options: Sequence[str] = ()) -> list[Sample]:
    """One run of the read benchmark on three fresh node processes: one Sample (GETs/s,
    latencies) per level of ``clients``. ``measured`` is called with each Sample as it is
    taken."""
    if consistency not in CONSISTENCIES:
        raise ValueError(f"consistency must be one of {', '.join(CONSISTENCIES)}")
    return _run(clients, seconds, consistency, fsync, base_dir, warmup, measured, event_loop,
                value_size, timeout, extra_serve_options)


def bench_ceiling(clients: Sequence[int], seconds: float, *, fsync: FsyncPolicy = "always",
                  base_dir: str | Path | None = None, warmup: float = WARMUP,
                  measured: Callable[[Sample], None] | None = None, event_loop: str = "auto",
                  timeout: float = 10.0) -> list[Sample]:
    """The HTTP server's own read ceiling on three fresh node processes: ``GET /v1/status``
    spread over the nodes, one Sample per level of ``clients``."""
    return _run(clients, seconds, STATUS, fsync, base_dir, warmup, measured, event_loop, 0,
                timeout, ())


def _run(clients: Sequence[int], seconds: float, consistency: str, fsync: FsyncPolicy,
         base_dir: str | Path | None, warmup: float,
         measured: Callable[[Sample], None] | None, event_loop: str, value_size: int,
         timeout: float, extra_serve_options: Sequence[str]) -> list[Sample]:
    return on_fresh_cluster(
        "reads", lambda nodes: _drive_reads(nodes, clients, seconds, warmup, timeout, consistency,
                                            value_size, measured),
        fsync=fsync, base_dir=base_dir, event_loop=event_loop,
        extra_serve_options=extra_serve_options)


__all__ = ["CONSISTENCIES", "KEYS", "STATUS", "bench_ceiling", "bench_reads"]

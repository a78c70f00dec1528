"""The HTTP benchmark: three real ``raftly serve`` processes, driven by one aiohttp client.

With ``tls`` the nodes serve TLS on both ports (certificates made in the run's temporary
directory) and the client speaks https with their CA, over kept-alive connections: what a
long-lived client pays for TLS, handshakes amortized.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Sequence
from pathlib import Path

from raftly.bench.load import LEADER_TIMEOUT, VALUE, WARMUP, Stats, closed_loop, split_stats
from raftly.bench.places import temp_dir
from raftly.bench.stats import Sample
from raftly.localcluster import ProcessCluster, plan_loopback
from raftly.storage.disk.fsio import FsyncPolicy

STOP_GRACE = 5.0
"""Seconds a node process gets to stop on SIGTERM before it is killed."""


async def _drive_http(nodes: ProcessCluster, clients: Sequence[int], seconds: float,
                      warmup: float, timeout: float,
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

            async def op(client: int, seq: int, session: aiohttp.ClientSession = session,
                         target: str = target) -> bool:
                try:
                    async with session.put(f"{target}/v1/kv/bench-{client}", data=VALUE,
                                           allow_redirects=False) as resp:
                        await resp.read()
                        return resp.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    return False

            async def probe(leader: str = leader) -> tuple[int, int, int, int]:
                return split_stats(await all_stats(), leader)

            samples.append(await closed_loop(op, level, seconds, warmup=warmup, probe=probe))
        nodes.check_alive()
        if measured is not None:
            measured(samples[-1])
    return samples


def bench_http(clients: Sequence[int], seconds: float, *, fsync: FsyncPolicy = "always",
               base_dir: str | Path | None = None, warmup: float = WARMUP,
               timeout: float = 10.0, tls: bool = False,
               measured: Callable[[Sample], None] | None = None, metrics: bool = True
               ) -> list[Sample]:
    """One run of the HTTP benchmark: three fresh node processes, one Sample per level;
    ``tls``: TLS on both ports of every node, https from the client. ``measured`` is called
    with each level's Sample as soon as it is taken (progress); ``metrics=False``: the nodes
    run ``serve --no-metrics``."""
    with temp_dir(base_dir, "raftly-bench-http-") as root:
        # The nodes die with the benchmark, even if it is killed with SIGKILL.
        nodes = ProcessCluster(root, plan_loopback(3, cluster_id="raftly-bench"), fsync=fsync,
                               log_level="WARNING", orphan_signal=signal.SIGKILL,
                               tls_dir=root / "certs" if tls else None,
                               serve_options=() if metrics else ("--no-metrics",))
        try:
            nodes.start()
            return asyncio.run(_drive_http(nodes, clients, seconds, warmup, timeout, measured))
        finally:
            nodes.stop(grace=STOP_GRACE)


__all__ = ["bench_http"]

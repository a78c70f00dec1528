"""etcd next to raftly: three etcd processes on 127.0.0.1, driven by raftly's own HTTP client.

etcd 3.4 serves its v3 gRPC gateway (JSON over HTTP) on the client URL: a write is
``POST /v3/kv/put`` with ``{"key": base64, "value": base64}``, answered with a header that
carries the new revision. The client is ``http.http_put_op``, the one the raftly HTTP
benchmark uses: one aiohttp session, C closed loops, every write sent to the leader, the JSON
answer checked. etcd keeps its default durability (it fsyncs its WAL before acknowledging), its
data under the run's temporary directory. ``etcd_binary()`` is None when etcd is not installed
(Debian: ``apt-get install etcd-server``).
"""

from __future__ import annotations

import base64
import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from raftly.bench.children import ChildFailed, Children
from raftly.bench.http import http_put_op
from raftly.bench.load import LEADER_TIMEOUT, VALUE, WARMUP, closed_loop
from raftly.bench.places import temp_dir
from raftly.bench.stats import Sample
from raftly.localproc import free_ports

MISSING = "etcd not installed: apt-get install etcd-server; skipped"
"""The line ``raftly bench --compare`` prints when there is no etcd."""


def etcd_binary() -> str | None:
    return shutil.which("etcd")


def etcd_version(binary: str) -> str:
    """``3.4.23`` from ``etcd --version``, or '?'."""
    import subprocess

    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    for line in out.splitlines():
        if line.startswith("etcd Version:"):
            return line.split(":", 1)[1].strip()
    return "?"


def etcd_commands(binary: str, root: Path, client_ports: Sequence[int],
                  peer_ports: Sequence[int]) -> list[list[str]]:
    """The command lines of a fresh 3-member cluster on 127.0.0.1, data under ``root``."""
    names = [f"etcd{i}" for i in range(len(client_ports))]
    initial = ",".join(f"{n}=http://127.0.0.1:{p}" for n, p in zip(names, peer_ports,
                                                                   strict=True))
    return [[binary, "--name", name, "--data-dir", str(root / name),
             "--listen-client-urls", f"http://127.0.0.1:{cp}",
             "--advertise-client-urls", f"http://127.0.0.1:{cp}",
             "--listen-peer-urls", f"http://127.0.0.1:{pp}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{pp}",
             "--initial-cluster", initial, "--initial-cluster-state", "new",
             "--initial-cluster-token", "raftly-bench", "--logger", "zap",
             "--log-level", "error"]
            for name, cp, pp in zip(names, client_ports, peer_ports, strict=True)]


def _status(url: str) -> dict[str, Any] | None:
    """``POST /v3/maintenance/status`` of one member, or None if it does not answer (yet)."""
    request = urllib.request.Request(f"{url}/v3/maintenance/status", data=b"{}",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=1.0) as resp:
            answer = json.loads(resp.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return answer if isinstance(answer, dict) else None


def agreed_leader(urls: Sequence[str]) -> str | None:
    """The client URL of the member every member names as leader, or None."""
    statuses = [_status(u) for u in urls]
    if any(s is None for s in statuses):
        return None
    leaders = {str(s.get("leader")) for s in statuses if s is not None}
    if len(leaders) != 1:
        return None
    (leader,) = leaders
    for url, s in zip(urls, statuses, strict=True):
        header = s.get("header") if s is not None else None
        if isinstance(header, dict) and str(header.get("member_id")) == leader:
            return url
    return None


def etcd_accepts(answer: Any) -> bool:
    """An etcd put answer: ``{"header": {"revision": "N", ...}}`` (uint64s are strings)."""
    header = answer.get("header") if isinstance(answer, dict) else None
    return isinstance(header, dict) and str(header.get("revision", "")).isdigit()


def put_request(url: str, client: int, value: bytes) -> tuple[str, bytes]:
    """The URL and JSON body of one client's put."""
    body = {"key": base64.b64encode(f"bench-{client}".encode()).decode(),
            "value": base64.b64encode(value).decode()}
    return f"{url}/v3/kv/put", json.dumps(body).encode()


async def _drive(urls: Sequence[str], leader: str, clients: Sequence[int], seconds: float,
                 warmup: float, timeout: float, value: bytes,
                 measured: Callable[[Sample], None] | None, children: Children) -> list[Sample]:
    import asyncio

    import aiohttp

    samples: list[Sample] = []
    for level in clients:
        # The leader may have moved since: ask once (a few seconds at most), else keep it.
        agreed = await asyncio.to_thread(agreed_leader, urls)
        leader = agreed or leader
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector,
                                         timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            def request(client: int, t: str = leader) -> tuple[str, bytes]:
                return put_request(t, client, value)

            op = http_put_op(session, "POST", request, etcd_accepts)
            samples.append(await closed_loop(op, level, seconds, warmup=warmup))
        children.check_alive("etcd benchmark")
        if measured is not None:
            measured(samples[-1])
    return samples


def bench_etcd(clients: Sequence[int], seconds: float, *, base_dir: str | Path | None = None,
               warmup: float = WARMUP, timeout: float = 10.0, value: bytes = VALUE,
               event_loop: str = "auto", binary: str | None = None,
               measured: Callable[[Sample], None] | None = None) -> list[Sample]:
    """One run: three fresh etcd processes, one Sample per level (no fsync counts: etcd does
    not report them here). ChildFailed if etcd will not start or elect a leader in time."""
    from raftly.eventloop import run

    binary = binary or etcd_binary()
    if binary is None:
        raise ChildFailed(MISSING)
    with temp_dir(base_dir, "raftly-bench-etcd-") as root, Children() as children:
        ports = free_ports(6)
        client_ports, peer_ports = ports[:3], ports[3:]
        for i, argv in enumerate(etcd_commands(binary, root, client_ports, peer_ports)):
            children.start(argv, root / f"etcd{i}.log")
        urls = [f"http://127.0.0.1:{p}" for p in client_ports]
        found: list[str] = []

        def leader_known() -> bool:
            url = agreed_leader(urls)
            if url is not None:
                found.append(url)
            return url is not None

        # Waited for here, not in the event loop's threads: Ctrl-C or SIGTERM stop it at once.
        children.wait_for(leader_known, LEADER_TIMEOUT, "etcd electing a leader", 0.1)
        return run(_drive(urls, found[-1], clients, seconds, warmup, timeout, value, measured,
                          children), loop=event_loop)


__all__ = ["MISSING", "agreed_leader", "bench_etcd", "etcd_accepts", "etcd_binary",
           "etcd_commands", "etcd_version", "put_request"]

"""``raftly bench``: throughput and latency of a local 3-node cluster, over HTTP and the library.

Two measurements, each a closed loop of C concurrent clients (default C = 1, 16, 64, 256) that
write 16-byte values for ``--seconds`` per level, after a short unmeasured warm-up:

- **http**: three real nodes, each a separate ``raftly serve``-equivalent process
  (``raftly.kv.service.serve`` on a generated cluster file, DiskStorage in a temporary directory),
  driven by one aiohttp ``ClientSession`` with C tasks, each a closed loop of
  ``PUT /v1/kv/KEY`` sent straight to the leader (found first through ``/v1/status``).
- **library**: three ``RaftServer`` objects in this process, talking real TCP on loopback, each
  with DiskStorage in a temporary directory and a trivial state machine; C coroutines each a
  closed loop of ``await leader.propose(value)``. No HTTP. Note that all three nodes and the
  clients then share one event loop and one CPU.

Printed per C: completed writes per second, p50 and p99 latency in ms, errors (non-200 answers,
NotLeader, Busy...), and the mean entries per fsync on the leader and on the followers over the
measured window: group commit at work (at 64 clients one fsync should carry many entries).

fsync is on by default (``--fsync never`` to measure without it). Every level of every run is
measured on a fresh cluster per run; with ``--runs N`` the table shows the median of each column
over the N runs. The machines are noisy: quote figures from ``--runs 3`` or more, and compare
systems side by side in one sitting (``bench/pysyncobj_compare.py``).

The benchmark always ends by itself: every wait has a deadline, and the node processes and
temporary directories are removed on the way out, on error and on Ctrl-C too (the node
processes also die with this process on Linux).

Usage: ``raftly bench [--clients 1,16,64,256] [--seconds 5] [--runs 1] [--fsync always|never]
[--mode both|http|library] [--dir BASE]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from raftly.localproc import free_ports
from raftly.storage.disk.fsio import FsyncPolicy

DEFAULT_CLIENTS = (1, 16, 64, 256)
VALUE = b"0123456789abcdef"
"""The 16-byte value every client writes."""
WARMUP = 0.5
"""Seconds of load before each measured window (connections open, leader settles)."""
LEADER_TIMEOUT = 30.0
STOP_GRACE = 5.0
"""Seconds a node process gets to stop on SIGTERM before it is killed."""

Stats = dict[str, tuple[int, int]]
"""Per node name: (fsyncs, entries_persisted) from the server's ``stats``."""


# -- results -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Sample:
    """One closed-loop measurement at one concurrency level."""

    clients: int
    ops: int
    seconds: float
    latencies: list[float]
    """Seconds per completed write, in the measured window."""
    errors: int = 0
    leader_fsyncs: int = 0
    leader_entries: int = 0
    follower_fsyncs: int = 0
    follower_entries: int = 0

    @property
    def rate(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float:
        """Latency percentile ``q`` (0-100) in milliseconds; nan with no samples."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        rank = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
        return ordered[rank] * 1000

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p99(self) -> float:
        return self.percentile(99)

    @property
    def leader_batch(self) -> float:
        """Mean entries per fsync on the leader (nan when it did not fsync)."""
        return self.leader_entries / self.leader_fsyncs if self.leader_fsyncs else float("nan")

    @property
    def follower_batch(self) -> float:
        if not self.follower_fsyncs:
            return float("nan")
        return self.follower_entries / self.follower_fsyncs


@dataclass(slots=True)
class Row:
    """The medians over runs of one concurrency level."""

    clients: int
    rate: float
    p50: float
    p99: float
    errors: float
    leader_batch: float
    follower_batch: float
    runs: int = 1


def _median(values: Sequence[float]) -> float:
    finite = [v for v in values if v == v]  # drop nan
    return statistics.median(finite) if finite else float("nan")


def summarize(samples: Sequence[Sample]) -> list[Row]:
    """Median of each column per concurrency level, in the order the levels first appear."""
    by_level: dict[int, list[Sample]] = {}
    for s in samples:
        by_level.setdefault(s.clients, []).append(s)
    return [Row(c, _median([s.rate for s in ss]), _median([s.p50 for s in ss]),
                _median([s.p99 for s in ss]), _median([float(s.errors) for s in ss]),
                _median([s.leader_batch for s in ss]), _median([s.follower_batch for s in ss]),
                len(ss))
            for c, ss in by_level.items()]


def format_table(rows: Sequence[Row], unit: str = "puts/s") -> str:
    head = (f"{'clients':>7} {unit:>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
            f"{'entries/fsync leader':>21} {'followers':>10}")
    lines = [head]
    for r in rows:
        lines.append(f"{r.clients:>7} {r.rate:>10.0f} {r.p50:>8.2f} {r.p99:>8.2f} "
                     f"{r.errors:>7.0f} {r.leader_batch:>21.1f} {r.follower_batch:>10.1f}")
    return "\n".join(lines)


# -- the closed loop ---------------------------------------------------------------------------


Op = Callable[[int, int], Awaitable[bool]]
"""``op(client, seq)`` performs one write; True when it succeeded."""
Probe = Callable[[], Awaitable[tuple[int, int, int, int]]]
"""Returns (leader fsyncs, leader entries, follower fsyncs, follower entries) now."""


async def closed_loop(op: Op, clients: int, seconds: float, *, warmup: float = WARMUP,
                      probe: Probe | None = None, error_pause: float = 0.02) -> Sample:
    """Run ``clients`` closed loops of ``op``; measure the ``seconds`` after ``warmup``.

    A write counts when it completes inside the window. After the window no new write starts;
    the writes still open are awaited (with a deadline) and not counted.
    """
    begin = time.perf_counter()
    t0 = begin + warmup
    t1 = t0 + seconds
    latencies: list[float] = []
    counts = {"ops": 0, "errors": 0}

    async def client(n: int) -> None:
        seq = 0
        while True:
            start = time.perf_counter()
            if start >= t1:
                return
            ok = await op(n, seq)
            seq += 1
            end = time.perf_counter()
            if t0 <= end <= t1:
                if ok:
                    counts["ops"] += 1
                    latencies.append(end - start)
                else:
                    counts["errors"] += 1
            if not ok:
                await asyncio.sleep(error_pause)  # no hot loop while there is no leader

    async def probes() -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]] | None:
        if probe is None:
            return None
        await asyncio.sleep(max(0.0, t0 - time.perf_counter()))
        first = await probe()
        await asyncio.sleep(max(0.0, t1 - time.perf_counter()))
        return first, await probe()

    tasks = [asyncio.create_task(client(n)) for n in range(clients)]
    probe_task = asyncio.create_task(probes())
    try:
        # Each op carries its own timeout; this bound only guards against a stuck one.
        done, pending = await asyncio.wait([*tasks, probe_task], timeout=t1 - begin + 30.0)
        if pending:
            raise TimeoutError(f"{len(pending)} clients did not finish within 30 s of the end")
        for task in done:
            task.result()  # re-raise what a client died of
    finally:
        for task in [*tasks, probe_task]:
            task.cancel()
        await asyncio.gather(*tasks, probe_task, return_exceptions=True)
    sample = Sample(clients, counts["ops"], seconds, latencies, counts["errors"])
    measured = probe_task.result()
    if measured is not None:
        (lf0, le0, ff0, fe0), (lf1, le1, ff1, fe1) = measured
        sample.leader_fsyncs, sample.leader_entries = lf1 - lf0, le1 - le0
        sample.follower_fsyncs, sample.follower_entries = ff1 - ff0, fe1 - fe0
    return sample


def _split(stats: Stats, leader: str) -> tuple[int, int, int, int]:
    lf, le = stats.get(leader, (0, 0))
    ff = sum(f for name, (f, _) in stats.items() if name != leader)
    fe = sum(e for name, (_, e) in stats.items() if name != leader)
    return lf, le, ff, fe


# -- temporary places --------------------------------------------------------------------------


@contextlib.contextmanager
def temp_dir(base: str | Path | None, prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def filesystem_of(path: Path) -> str:
    """The filesystem type holding ``path`` (from /proc/mounts), or '?'; tmpfs fsyncs are free."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return "?"
    best, kind = "", "?"
    real = str(path.resolve())
    for line in mounts:
        parts = line.split()
        if len(parts) < 3 or len(parts[1]) <= len(best):
            continue
        if real == parts[1] or real.startswith(parts[1].rstrip("/") + "/"):
            best, kind = parts[1], parts[2]
    return kind


# -- library API -------------------------------------------------------------------------------


class _BenchMachine:
    """A trivial state machine: counts commands and keeps the last one."""

    def __init__(self) -> None:
        self.count = 0
        self.last = b""

    def apply(self, index: int, command: bytes) -> object:
        self.count += 1
        self.last = command
        return index


async def bench_library(clients: Sequence[int], seconds: float, *, fsync: FsyncPolicy = "always",
                        base_dir: str | Path | None = None, warmup: float = WARMUP,
                        timeout: float = 10.0) -> list[Sample]:
    """One run of the library benchmark: a fresh 3-node cluster, one Sample per level."""
    from raftly.core.errors import NotLeader, ProposalDropped
    from raftly.server.server import RaftServer, ServerError
    from raftly.storage import DiskStorage
    from raftly.transport import TcpTransport

    ids = (1, 2, 3)
    samples: list[Sample] = []
    with temp_dir(base_dir, "raftly-bench-lib-") as root:
        storages = [DiskStorage(root / f"n{i}", fsync=fsync) for i in ids]
        transports = [TcpTransport(i, listen=("127.0.0.1", 0), peers={},
                                   cluster_id="raftly-bench") for i in ids]
        servers = [RaftServer(i, storage=s, transport=t, state_machine=_BenchMachine(),
                              bootstrap=frozenset(ids))
                   for i, s, t in zip(ids, storages, transports, strict=True)]
        started: list[RaftServer] = []
        try:
            for server in servers:
                await server.start()
                started.append(server)
            book = {i: t.listen_address for i, t in zip(ids, transports, strict=True)}
            for t in transports:
                t.set_peers(book)

            async def find_leader() -> RaftServer:
                deadline = time.perf_counter() + LEADER_TIMEOUT
                while True:
                    leaders = [s for s in servers if s.is_leader]
                    if len(leaders) == 1 and all(s.leader == leaders[0].id for s in servers):
                        return leaders[0]
                    if time.perf_counter() > deadline:
                        raise TimeoutError(f"no leader within {LEADER_TIMEOUT} s")
                    await asyncio.sleep(0.01)

            current = {"leader": servers[0]}

            async def op(client: int, seq: int) -> bool:
                try:
                    await current["leader"].propose(VALUE, timeout=timeout)
                    return True
                except (NotLeader, ProposalDropped, ServerError):
                    for s in servers:
                        if s.is_leader:
                            current["leader"] = s
                    return False

            async def probe() -> tuple[int, int, int, int]:
                stats = {str(s.id): (s.stats["fsyncs"], s.stats["entries_persisted"])
                         for s in servers}
                return _split(stats, str(current["leader"].id))

            for level in clients:
                current["leader"] = await find_leader()
                samples.append(await closed_loop(op, level, seconds, warmup=warmup,
                                                 probe=probe))
        finally:
            for server in started:
                with contextlib.suppress(Exception):
                    await server.close()
            for storage, server in zip(storages, servers, strict=True):
                if server not in started:
                    with contextlib.suppress(Exception):
                        storage.close()
    return samples


# -- HTTP, real node processes -----------------------------------------------------------------


_NODE_CODE = """\
import asyncio, logging, signal, sys
from raftly.localproc import die_with_parent
die_with_parent(signal.SIGKILL)  # die with the benchmark, even if it is killed with SIGKILL
logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
from raftly.kv.service import serve
asyncio.run(serve(sys.argv[1], sys.argv[2], sys.argv[3], fsync=sys.argv[4]))
"""


@dataclass(slots=True)
class NodeProcesses:
    """Three ``serve`` processes on loopback; ``urls`` maps node name to its API base URL."""

    root: Path
    fsync: FsyncPolicy
    urls: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, size: int = 3) -> None:
        ports = free_ports(2 * size)
        names = [f"n{i}" for i in range(1, size + 1)]
        lines = ['cluster_id = "raftly-bench"']
        for i, name in enumerate(names):
            raft, api = ports[2 * i], ports[2 * i + 1]
            lines += [f"[nodes.{name}]", f'raft = "127.0.0.1:{raft}"',
                      f'api = "127.0.0.1:{api}"', f"id = {i + 1}"]
            self.urls[name] = f"http://127.0.0.1:{api}"
        cluster_file = self.root / "cluster.toml"
        cluster_file.write_text("\n".join(lines) + "\n")
        env = dict(os.environ)
        # The children import the same raftly as this process.
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH"))
                                            if p)
        for name in names:
            log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - closed below
            try:
                self.procs[name] = subprocess.Popen(
                    [sys.executable, "-c", _NODE_CODE, str(cluster_file), name,
                     str(self.root / name), self.fsync],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                    start_new_session=True)  # Ctrl-C reaches us only; we stop them in order
            finally:
                log.close()

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"node {name} exited with {proc.returncode}:\n"
                                   + self.log_tail(name))

    def log_tail(self, name: str, lines: int = 20) -> str:
        try:
            text = (self.root / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _http_status(session: object, url: str) -> dict[str, object] | None:
    import aiohttp

    assert isinstance(session, aiohttp.ClientSession)
    try:
        async with session.get(url + "/v1/status",
                               timeout=aiohttp.ClientTimeout(total=2.0)) as resp:
            if resp.status != 200:
                return None
            body = await resp.json()
            return body if isinstance(body, dict) else None
    except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError):
        return None


async def _drive_http(nodes: NodeProcesses, clients: Sequence[int], seconds: float,
                      warmup: float, timeout: float) -> list[Sample]:
    import aiohttp

    samples: list[Sample] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as control:

        async def find_leader() -> str:
            deadline = time.perf_counter() + LEADER_TIMEOUT
            while True:
                nodes.check_alive()
                statuses = [await _http_status(control, url) for url in nodes.urls.values()]
                leaders = [s for s in statuses if s is not None and s.get("role") == "leader"]
                if (len(leaders) == 1 and None not in statuses
                        and all(s is not None and s.get("leader") == leaders[0]["id"]
                                for s in statuses)):
                    return str(leaders[0]["id"])
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"no agreed leader within {LEADER_TIMEOUT} s")
                await asyncio.sleep(0.1)

        async def all_stats() -> Stats:
            out: Stats = {}
            for name, url in nodes.urls.items():
                status = await _http_status(control, url)
                stats = status.get("stats") if status is not None else None
                if isinstance(stats, dict):
                    out[name] = (int(stats.get("fsyncs", 0)),
                                 int(stats.get("entries_persisted", 0)))
            return out

        for level in clients:
            leader = await find_leader()
            target = nodes.urls[leader]
            connector = aiohttp.TCPConnector(limit=0)
            client_timeout = aiohttp.ClientTimeout(total=timeout)
            async with aiohttp.ClientSession(connector=connector,
                                             timeout=client_timeout) as session:

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
                    return _split(await all_stats(), leader)

                samples.append(await closed_loop(op, level, seconds, warmup=warmup,
                                                 probe=probe))
            nodes.check_alive()
    return samples


def bench_http(clients: Sequence[int], seconds: float, *, fsync: FsyncPolicy = "always",
               base_dir: str | Path | None = None, warmup: float = WARMUP,
               timeout: float = 10.0) -> list[Sample]:
    """One run of the HTTP benchmark: three fresh node processes, one Sample per level."""
    with temp_dir(base_dir, "raftly-bench-http-") as root:
        nodes = NodeProcesses(root, fsync)
        try:
            nodes.start()
            return asyncio.run(_drive_http(nodes, clients, seconds, warmup, timeout))
        finally:
            nodes.stop()


# -- command line ------------------------------------------------------------------------------


def _levels(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}") from None
    if not levels or any(c < 1 for c in levels):
        raise argparse.ArgumentTypeError("concurrency levels must be positive integers")
    return levels


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raftly bench", description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="Quote medians of --runs 3 or more, measured side by side in one sitting.")
    parser.add_argument("--clients", type=_levels, default=list(DEFAULT_CLIENTS),
                        help="concurrency levels, comma-separated (default 1,16,64,256)")
    parser.add_argument("--seconds", type=_positive, default=5.0,
                        help="measured seconds per level (default 5)")
    parser.add_argument("--runs", type=int, default=1,
                        help="fresh clusters to measure; the table shows medians (default 1)")
    parser.add_argument("--fsync", choices=("always", "never"), default="always",
                        help="node storage fsync policy (default always)")
    parser.add_argument("--mode", choices=("both", "http", "library"), default="both")
    parser.add_argument("--dir", default=None,
                        help="where the temporary data directories go (default: the system's "
                             "temporary directory; make sure it is a real disk, not tmpfs)")
    return parser


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through every finally: processes, temp dirs


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.runs < 1:
        print("raftly bench: --runs must be at least 1", file=sys.stderr)
        return 2
    base = Path(args.dir) if args.dir else Path(tempfile.gettempdir())
    if not base.is_dir():
        print(f"raftly bench: {base} is not a directory", file=sys.stderr)
        return 2
    fs = filesystem_of(base)
    previous = signal.getsignal(signal.SIGTERM)
    with contextlib.suppress(ValueError):  # not the main thread: leave SIGTERM alone
        signal.signal(signal.SIGTERM, _terminate)
    try:
        print(f"raftly bench: 3 nodes on 127.0.0.1, fsync={args.fsync}, data under {base} "
              f"({fs}), {len(VALUE)}-byte values, {args.seconds:g} s per level after "
              f"{WARMUP:g} s warm-up, median of {args.runs} run(s), {os.cpu_count()} CPUs")
        if fs == "tmpfs" and args.fsync == "always":
            print("warning: tmpfs makes fsync free; use --dir on a real disk")
        sys.stdout.flush()
        if args.mode in ("both", "http"):
            samples: list[Sample] = []
            for _ in range(args.runs):
                samples += bench_http(args.clients, args.seconds, fsync=args.fsync,
                                      base_dir=base)
            print("\nHTTP: aiohttp client, one session, PUT /v1/kv/KEY to the leader; "
                  "3 node processes")
            print(format_table(summarize(samples)))
            sys.stdout.flush()
        if args.mode in ("both", "library"):
            samples = []
            for _ in range(args.runs):
                samples += asyncio.run(bench_library(args.clients, args.seconds,
                                                     fsync=args.fsync, base_dir=base))
            print("\nlibrary: await RaftServer.propose(), 3 nodes in this process over TCP "
                  "loopback, DiskStorage")
            print(format_table(summarize(samples), unit="commits/s"))
    except KeyboardInterrupt:
        print("\nraftly bench: interrupted; nodes stopped and temporary data removed",
              file=sys.stderr)
        return 130
    finally:
        with contextlib.suppress(ValueError, TypeError):
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""raftly's library API next to PySyncObj's, on this machine, at the same closed-loop concurrency.

For each concurrency level C (default 1, 16, 64, 256), both systems run a 3-node cluster on
loopback and C clients each keep exactly one 16-byte write in flight (a closed loop) for
``--seconds``; printed are commits/s and p50/p99 latency, medians of ``--runs`` (raftly and
PySyncObj alternate run by run, so a noisy phase of the machine hits both).

- raftly: ``raftly.bench.bench_library``: three ``RaftServer`` in one process over TCP loopback,
  DiskStorage with fsync on (``--fsync never`` to compare without it), C coroutines awaiting
  ``propose``. All three nodes and the clients share one process, one event loop, one core.
- PySyncObj: three processes, a replicated dict (``@replicated put(key, value)``); the leader's
  process drives C closed loops through the asynchronous API (``callback=``: each commit callback
  submits that client's next command). PySyncObj keeps its log in memory and **never fsyncs**.
  It runs twice per run: with its default settings (batching on: commands wait for the next tick)
  and with ``appendEntriesUseBatch=False`` (each command sent at once), its best latency setting.

PySyncObj is not a dependency of raftly. If it cannot be imported, this script creates a
throwaway venv under the temporary directory and installs it there (``pip install pysyncobj``);
``--python`` names an interpreter that already has it.

Usage: .venv/bin/python bench/pysyncobj_compare.py [--clients 1,16,64,256] [--seconds 5]
[--runs 3] [--fsync always|never]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

VALUE = b"0123456789abcdef"
WARMUP = 0.5
CONFIGS = {"default": {}, "nobatch": {"appendEntriesUseBatch": False}}
VENV = Path(tempfile.gettempdir()) / "raftly-bench-pysyncobj-venv"


# -- the PySyncObj node (runs in its own process, possibly under another interpreter) -----------


def node_main(args: argparse.Namespace) -> int:
    """One PySyncObj node; if it becomes the leader, it runs the closed loops and writes JSON."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):  # die with the parent, even on SIGKILL
            import ctypes

            ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated  # type: ignore[import-not-found]

    class Store(SyncObj):  # type: ignore[misc]
        def __init__(self, me: str, others: list[str], conf: Any) -> None:
            super().__init__(me, others, conf)
            self.data: dict[str, bytes] = {}

        @replicated  # type: ignore[untyped-decorator]
        def put(self, key: str, value: bytes) -> int:
            self.data[key] = value
            return len(self.data)

    ports = [int(p) for p in args.ports.split(",")]
    addrs = [f"127.0.0.1:{p}" for p in ports]
    me = addrs[args.node]
    conf = SyncObjConf(**CONFIGS[args.config])
    store = Store(me, [a for a in addrs if a != me], conf)

    deadline = time.monotonic() + 30.0
    stable_since: float | None = None
    while True:  # leader known, this node leads, and it has stayed so for a second
        if time.monotonic() > deadline:
            return 3
        leader = store._getLeader()
        if store._isLeader() and store.isReady() and leader is not None and str(leader) == me:
            stable_since = stable_since or time.monotonic()
            if time.monotonic() - stable_since >= 1.0:
                break
        else:
            stable_since = None
            if Path(args.out).exists():
                return 0  # another node measured; wait here to be stopped
        time.sleep(0.05)

    results = [_closed_loop(store, level, args.seconds, args.warmup, FAIL_REASON.SUCCESS)
               for level in [int(c) for c in args.clients.split(",")]]
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f)
    os.replace(tmp, args.out)
    return 0


def _closed_loop(store: Any, level: int, seconds: float, warmup: float, success: object
                 ) -> dict[str, Any]:
    """``level`` closed loops of ``store.put`` via callbacks (run on PySyncObj's tick thread)."""
    t0 = time.perf_counter() + warmup
    t1 = t0 + seconds
    latencies: list[float] = []
    counts = {"ops": 0, "errors": 0, "open": level}

    def submit(slot: int) -> None:
        start = time.perf_counter()
        if start >= t1:
            counts["open"] -= 1
            return

        def done(result: object, error: object) -> None:
            end = time.perf_counter()
            if t0 <= end <= t1:
                if error == success:
                    counts["ops"] += 1
                    latencies.append(end - start)
                else:
                    counts["errors"] += 1
            submit(slot)

        store.put(f"bench-{slot}", VALUE, callback=done)

    for slot in range(level):
        submit(slot)
    time.sleep(max(0.0, t1 - time.perf_counter()))
    drain = time.monotonic() + 10.0
    while counts["open"] > 0 and time.monotonic() < drain:
        time.sleep(0.01)
    return {"clients": level, "ops": counts["ops"], "seconds": seconds,
            "errors": counts["errors"], "latencies": latencies}


# -- the driver (runs under the raftly venv) ------------------------------------------------------


def pysyncobj_python(explicit: str | None) -> str:
    """An interpreter that can import pysyncobj: given, this one, or a throwaway venv."""
    if explicit:
        return explicit
    try:
        import pysyncobj  # noqa: F401

        return sys.executable
    except ImportError:
        pass
    python = VENV / "bin" / "python"
    check = [str(python), "-c", "import pysyncobj"]
    if not python.exists() or subprocess.run(check, capture_output=True).returncode != 0:
        print(f"installing pysyncobj into a throwaway venv {VENV} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "pysyncobj"], check=True)
    return str(python)


def run_pysyncobj(python: str, config: str, clients: Sequence[int], seconds: float,
                  warmup: float) -> list[Any]:
    """One run: three fresh PySyncObj processes; returns raftly.bench Samples (no fsync stats)."""
    from raftly.bench import Sample
    from raftly.localproc import free_ports

    with tempfile.TemporaryDirectory(prefix="raftly-bench-pysyncobj-") as root:
        out = str(Path(root) / "result.json")
        ports = ",".join(str(p) for p in free_ports(3))
        procs: list[subprocess.Popen[bytes]] = []
        logs = [Path(root) / f"node{i}.log" for i in range(3)]
        try:
            for i in range(3):
                with open(logs[i], "wb") as log:
                    procs.append(subprocess.Popen(
                        [python, __file__, "--node", str(i), "--ports", ports,
                         "--config", config, "--clients", ",".join(map(str, clients)),
                         "--seconds", str(seconds), "--warmup", str(warmup), "--out", out],
                        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                        start_new_session=True))
            budget = 40.0 + len(clients) * (seconds + warmup + 12.0)
            deadline = time.monotonic() + budget
            while not Path(out).exists():
                if time.monotonic() > deadline or all(p.poll() is not None for p in procs):
                    tails = "\n".join(log.read_text(errors="replace")[-2000:] for log in logs)
                    raise RuntimeError(f"PySyncObj run ({config}) produced no result:\n{tails}")
                time.sleep(0.1)
            data = json.loads(Path(out).read_text())
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
    return [Sample(d["clients"], d["ops"], d["seconds"], d["latencies"], d["errors"])
            for d in data]


def _med(values: Sequence[float]) -> float:
    finite = [v for v in values if v == v]
    return statistics.median(finite) if finite else float("nan")


def compare(args: argparse.Namespace) -> int:
    from raftly.bench import bench_library, summarize

    python = pysyncobj_python(args.python)
    configs = [c for c in args.configs.split(",") if c]
    raftly_samples: list[Any] = []
    other: dict[str, list[Any]] = {c: [] for c in configs}
    print(f"3 nodes on 127.0.0.1, {len(VALUE)}-byte commands, {args.seconds:g} s per level, "
          f"median of {args.runs} run(s), {os.cpu_count()} CPUs; raftly fsync={args.fsync}, "
          "PySyncObj never fsyncs", flush=True)
    for run in range(args.runs):
        print(f"run {run + 1}/{args.runs}: raftly", end="", flush=True)
        raftly_samples += asyncio.run(bench_library(args.clients, args.seconds,
                                                    fsync=args.fsync, warmup=WARMUP))
        for config in configs:
            print(f", pysyncobj {config}", end="", flush=True)
            other[config] += run_pysyncobj(python, config, args.clients, args.seconds, WARMUP)
        print(flush=True)
    ours = {r.clients: r for r in summarize(raftly_samples)}
    theirs = {c: {r.clients: r for r in summarize(s)} for c, s in other.items()}
    head = f"{'C':>4} | {'raftly commits/s':>16} {'p50 ms':>7} {'p99 ms':>7} {'ent/fsync':>9}"
    for config in configs:
        head += f" | {'PySyncObj ' + config + ' c/s':>22} {'p50 ms':>7} {'p99 ms':>7}"
    head += " | raftly / best PySyncObj"
    print()
    print(head)
    for c in args.clients:
        r = ours[c]
        line = (f"{c:>4} | {r.rate:>16.0f} {r.p50:>7.2f} {r.p99:>7.2f} "
                f"{r.leader_batch:>9.1f}")
        best = 0.0
        for config in configs:
            t = theirs[config][c]
            best = max(best, t.rate)
            line += f" | {t.rate:>22.0f} {t.p50:>7.2f} {t.p99:>7.2f}"
        line += f" | {r.rate / best:>6.2f}x" if best else " |     -"
        print(line)
    print("\nraftly: 3 nodes in one process (one core for all); PySyncObj: 3 processes. "
          "raftly fsyncs every batch before acknowledging" if args.fsync == "always" else
          "\nraftly: 3 nodes in one process (one core for all); PySyncObj: 3 processes.")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--clients", default=[1, 16, 64, 256],
                        type=lambda s: [int(x) for x in s.split(",") if x])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--fsync", choices=("always", "never"), default="always")
    parser.add_argument("--configs", default="default,nobatch",
                        help="PySyncObj settings to run: default, nobatch (comma-separated)")
    parser.add_argument("--python", default=None, help="an interpreter that has pysyncobj")
    # Internal: run one PySyncObj node.
    parser.add_argument("--node", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    parser.add_argument("--config", default="default", help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=float, default=WARMUP, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.node is not None:
        args.clients = ",".join(map(str, args.clients))
        return node_main(args)
    return compare(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

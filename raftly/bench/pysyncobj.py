"""PySyncObj next to raftly's library: three PySyncObj processes, the clients in the leader's.

Each node is ``python -m raftly.bench.pysyncobj --node I ...`` (a child of the benchmark): a
replicated dict (``@replicated put(key, value)``). The node that leads, once it has led for a
second, drives C closed loops through PySyncObj's asynchronous API (``callback=``: each
commit's callback submits that client's next command, on PySyncObj's own thread) and writes
its Samples as JSON for the parent. PySyncObj keeps its log in memory and never fsyncs.

Settings (``CONFIGS``): ``nobatch`` (``appendEntriesUseBatch=False``: each command sent at
once) is its best setting at every concurrency here and is what ``raftly bench --compare``
runs; ``default`` (batching on) waits for the next tick, ~100 ms a command. PySyncObj is not a
dependency of raftly: ``pip install 'raftly[bench]'``; ``available()`` says whether it can be
imported.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from raftly.bench.children import (
    ELECTION_BUDGET,
    LEAD_STABLE,
    LeadWatch,
    int_list,
    measure_in_children,
    write_samples,
)
from raftly.bench.load import VALUE, WARMUP
from raftly.bench.places import temp_dir
from raftly.bench.stats import Sample
from raftly.localproc import free_ports

CONFIGS: dict[str, dict[str, Any]] = {"default": {}, "nobatch": {"appendEntriesUseBatch": False}}
BEST = "nobatch"
"""The setting the comparison runs: PySyncObj's best (see the module docstring)."""
MISSING = "pysyncobj not installed: pip install 'raftly[bench]'; skipped"


def available() -> bool:
    return importlib.util.find_spec("pysyncobj") is not None


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("pysyncobj")
    except PackageNotFoundError:
        return "?"


# -- one node (a child process) -------------------------------------------------------------


def node_main(args: argparse.Namespace) -> int:
    """One PySyncObj node; if it becomes the leader, it runs the closed loops and writes JSON."""
    from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated

    class Store(SyncObj):  # type: ignore[misc]
        def __init__(self, me: str, others: list[str], conf: Any) -> None:
            super().__init__(me, others, conf)
            self.data: dict[str, bytes] = {}

        @replicated  # type: ignore[untyped-decorator]
        def put(self, key: str, value: bytes) -> int:
            self.data[key] = value
            return len(self.data)

    addrs = [f"127.0.0.1:{p}" for p in args.ports]
    me = addrs[args.node]
    store = Store(me, [a for a in addrs if a != me], SyncObjConf(**CONFIGS[args.config]))
    watch = LeadWatch(args.out, ELECTION_BUDGET, LEAD_STABLE)
    while True:  # leader known, this node leads, and it has stayed so for a while
        leader = store._getLeader()
        state = watch.poll(store._isLeader() and store.isReady() and leader is not None
                           and str(leader) == me)
        if state == "measure":
            break
        if state is not None:
            return 3 if state == "timeout" else 0  # "other": the parent stops us
        time.sleep(watch.POLL)
    value = b"v" * args.value_size
    write_samples([_closed_loop(store, level, args.seconds, args.warmup, value,
                                FAIL_REASON.SUCCESS) for level in args.clients], args.out)
    return 0


def _closed_loop(store: Any, level: int, seconds: float, warmup: float, value: bytes,
                 success: object) -> Sample:
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

        store.put(f"bench-{slot}", value, callback=done)

    for slot in range(level):
        submit(slot)
    time.sleep(max(0.0, t1 - time.perf_counter()))
    drain = time.monotonic() + 10.0  # the commands still open: awaited, not counted
    while counts["open"] > 0 and time.monotonic() < drain:
        time.sleep(0.01)
    return Sample(level, counts["ops"], seconds, latencies, counts["errors"])


# -- the driver --------------------------------------------------------------------------------


def bench_pysyncobj(clients: Sequence[int], seconds: float, *, config: str = BEST,
                    base_dir: str | Path | None = None, warmup: float = WARMUP,
                    value: bytes = VALUE) -> list[Sample]:
    """One run: three fresh PySyncObj processes, one Sample per level (no fsync counts).
    ChildFailed if the nodes do not elect a leader or measure in time."""
    if config not in CONFIGS:
        raise ValueError(f"unknown PySyncObj setting {config!r}: {', '.join(CONFIGS)}")
    with temp_dir(base_dir, "raftly-bench-pysyncobj-") as root:
        out = root / "result.json"
        ports = ",".join(str(p) for p in free_ports(3))
        argvs = [[sys.executable, "-m", "raftly.bench.pysyncobj", "--node", str(i),
                  "--ports", ports, "--config", config,
                  "--clients", ",".join(map(str, clients)), "--seconds", repr(seconds),
                  "--warmup", repr(warmup), "--value-size", str(len(value)), "--out", str(out)]
                 for i in range(3)]
        budget = ELECTION_BUDGET + LEAD_STABLE + len(clients) * (seconds + warmup + 12.0)
        return measure_in_children(argvs, root, out, budget, f"PySyncObj ({config})")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="One PySyncObj benchmark node (internal).")
    parser.add_argument("--node", type=int, required=True)
    parser.add_argument("--ports", type=int_list, required=True)
    parser.add_argument("--config", choices=sorted(CONFIGS), default=BEST)
    parser.add_argument("--clients", type=int_list, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--warmup", type=float, default=WARMUP)
    parser.add_argument("--value-size", type=int, default=len(VALUE))
    parser.add_argument("--out", required=True)
    return node_main(parser.parse_args(argv))


__all__ = ["BEST", "CONFIGS", "MISSING", "available", "bench_pysyncobj", "version"]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

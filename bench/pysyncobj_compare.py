"""raftly's library API next to PySyncObj's, on this machine, at the same closed-loop concurrency.

PySyncObj's two settings (``default``, ``nobatch``) against raftly-lib, alternating run by run:
for A/B work on the library path; ``raftly bench --compare`` is the full comparison (etcd and
raftly over 3 processes too). The measuring is ``raftly.bench.library`` (raftly, 3 nodes in one
process, fsync on unless ``--fsync never``) and ``raftly.bench.pysyncobj`` (3 PySyncObj
processes, the clients in the leader's; it never fsyncs); printed are commits/s and p50/p99 per
level, medians of ``--runs``, for each PySyncObj setting in ``--configs`` (default: both
``default``, batching on, and ``nobatch``, its best).

PySyncObj is not a dependency of raftly: ``pip install 'raftly[bench]'``.

Usage: .venv/bin/python bench/pysyncobj_compare.py [--clients 1,16,64,256] [--seconds 5]
[--runs 3] [--fsync always|never] [--configs default,nobatch]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from raftly.bench import bench_library, summarize
from raftly.bench.load import VALUE
from raftly.bench.pysyncobj import CONFIGS, MISSING, available, bench_pysyncobj
from raftly.bench.stats import Sample


def compare(args: argparse.Namespace) -> int:
    if not available():
        print(MISSING, file=sys.stderr)
        return 2
    configs = [c for c in args.configs.split(",") if c]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        print(f"unknown PySyncObj setting(s) {unknown}: {', '.join(CONFIGS)}", file=sys.stderr)
        return 2
    raftly_samples: list[Sample] = []
    other: dict[str, list[Sample]] = {c: [] for c in configs}
    print(f"3 nodes on 127.0.0.1, {len(VALUE)}-byte commands, {args.seconds:g} s per level, "
          f"median of {args.runs} run(s), {os.cpu_count()} CPUs; raftly fsync={args.fsync}, "
          "PySyncObj never fsyncs", flush=True)
    for run in range(args.runs):
        print(f"run {run + 1}/{args.runs}: raftly", end="", flush=True)
        raftly_samples += asyncio.run(bench_library(args.clients, args.seconds,
                                                    fsync=args.fsync))
        for config in configs:
            print(f", pysyncobj {config}", end="", flush=True)
            other[config] += bench_pysyncobj(args.clients, args.seconds, config=config)
        print(flush=True)
    ours = {r.clients: r for r in summarize(raftly_samples)}
    theirs = {c: {r.clients: r for r in summarize(s)} for c, s in other.items()}
    head = f"{'C':>4} | {'raftly commits/s':>16} {'p50 ms':>7} {'p99 ms':>7} {'ent/fsync':>9}"
    for config in configs:
        head += f" | {'PySyncObj ' + config + ' c/s':>22} {'p50 ms':>7} {'p99 ms':>7}"
    print("\n" + head + " | raftly / best PySyncObj")
    for c in args.clients:
        r = ours[c]
        line = f"{c:>4} | {r.rate:>16.0f} {r.p50:>7.2f} {r.p99:>7.2f} {r.leader_batch:>9.1f}"
        best = 0.0
        for config in configs:
            t = theirs[config][c]
            best = max(best, t.rate)
            line += f" | {t.rate:>22.0f} {t.p50:>7.2f} {t.p99:>7.2f}"
        print(line + (f" | {r.rate / best:>6.2f}x" if best else " |     -"))
    print("\nraftly: 3 nodes in one process (one core for all); PySyncObj: 3 processes."
          + (" raftly fsyncs every batch before acknowledging." if args.fsync == "always"
             else ""))
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
    return compare(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

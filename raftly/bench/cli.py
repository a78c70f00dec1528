"""``raftly bench``'s command line: the arguments, the runs, the printed tables."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
from pathlib import Path

from raftly.bench.http import bench_http
from raftly.bench.library import bench_library
from raftly.bench.load import VALUE, WARMUP
from raftly.bench.places import filesystem_of
from raftly.bench.stats import Sample, format_table, summarize

DEFAULT_CLIENTS = (1, 16, 64, 256)


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
        prog="raftly bench",
        description="``raftly bench``: throughput and latency of a local 3-node cluster, over "
                    "HTTP and the library.",
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


__all__ = ["build_parser", "main"]

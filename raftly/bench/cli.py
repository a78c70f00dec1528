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

from raftly.bench.compare import (
    HTTP_VALUE_SIZE,
    LIBRARY_VALUE_SIZE,
    SYSTEMS,
    CompareOptions,
    main_compare,
    missing,
)
from raftly.bench.http import bench_http
from raftly.bench.library import bench_library
from raftly.bench.load import VALUE, WARMUP
from raftly.bench.places import filesystem_of
from raftly.bench.progress import BenchProgress
from raftly.bench.stats import Sample, format_ratios, format_table, summarize
from raftly.eventloop import CHOICES, loop_factory
from raftly.progress import ProgressLine, add_progress_option

DEFAULT_CLIENTS = (1, 16, 64, 256)
TLS_CLIENTS = (1, 64)
"""The levels of ``--tls`` unless --clients says otherwise."""


def _levels(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}") from None
    if not levels or any(c < 1 for c in levels):
        raise argparse.ArgumentTypeError("concurrency levels must be positive integers")
    return levels


def chosen_levels(given: list[int] | None, *, tls: bool) -> list[int]:
    """The concurrency levels to measure: those given, else the defaults of the mode."""
    if given is not None:
        return given
    return list(TLS_CLIENTS if tls else DEFAULT_CLIENTS)


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raftly bench",
        description="Throughput and latency of a local 3-node cluster, over HTTP and the "
                    "library; with --compare, raftly beside etcd and PySyncObj.",
        epilog="Quote medians of --runs 3 (with --compare: --rounds 3) or more, measured side "
               "by side in one sitting. On a terminal, a progress line on stderr counts the "
               "measurements done (one per level, run or round, and kind or system) out of the "
               "total, with the time elapsed and left and the one under way; it is erased "
               "before each table. Nothing is drawn when stderr is not a terminal (--progress "
               "/ --no-progress override). The last line is the summary: measurements made and "
               "the time taken.")
    parser.add_argument("--clients", type=_levels, default=None,
                        help="concurrency levels, comma-separated (default 1,16,64,256; "
                             "with --tls 1,64)")
    parser.add_argument("--seconds", type=_positive, default=5.0,
                        help="measured seconds per level (default 5)")
    parser.add_argument("--runs", type=int, default=1,
                        help="fresh clusters to measure; the table shows medians (default 1)")
    parser.add_argument("--fsync", choices=("always", "never"), default="always",
                        help="node storage fsync policy (default always)")
    parser.add_argument("--mode", choices=("both", "http", "library"), default="both",
                        help="which benchmark: both (default), http or library")
    parser.add_argument("--tls", action="store_true",
                        help="the cost of TLS: the HTTP benchmark with and without TLS in the "
                             "same run (plain and TLS alternate per run), and the TLS/plain "
                             "ratios of throughput and p50")
    parser.add_argument("--no-metrics", dest="metrics", action="store_false",
                        help="the HTTP benchmark's nodes run `serve --no-metrics`: run with and "
                             "without it to see what metrics cost")
    parser.add_argument("--dir", default=None,
                        help="where the temporary data directories go (default: the system's "
                             "temporary directory; make sure it is a real disk, not tmpfs)")
    compare = parser.add_argument_group(
        "--compare", "raftly, etcd and PySyncObj side by side in one sitting: rounds that "
        "alternate the systems, medians, ratios, the issue's targets; tables on stdout, "
        "OUT/compare.json, OUT/compare.md, OUT/throughput.svg, OUT/latency.svg")
    compare.add_argument("--compare", action="store_true", help="run the comparison")
    compare.add_argument("--rounds", type=int, default=1,
                         help="rounds: each runs every system once, the order rotated "
                              "(default 1)")
    compare.add_argument("--systems", type=_systems, default=list(SYSTEMS),
                         help=f"comma-separated, of {','.join(SYSTEMS)} (default all)")
    compare.add_argument("--out", default="raftly-compare",
                         help="where the JSON, Markdown and SVG files go (default "
                              "./raftly-compare)")
    compare.add_argument("--event-loop", choices=CHOICES, default="auto",
                         help="event loop of the clients and of raftly's in-process and "
                              "raftly-lib-3proc nodes (default auto: uvloop when installed); "
                              "the `raftly serve` nodes get it too, except with auto (then "
                              "asyncio, serve's default)")
    compare.add_argument("--value-size", type=int, default=None,
                         help=f"bytes per written value (default {HTTP_VALUE_SIZE} over HTTP, "
                              f"{LIBRARY_VALUE_SIZE} in the library)")
    compare.add_argument("--no-extras", dest="extras", action="store_false",
                         help="leave out reads, overload and the simulator")
    add_progress_option(parser)
    return parser


def _systems(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in SYSTEMS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown system(s) {', '.join(unknown) or '(none given)'}: choose from "
            f"{', '.join(SYSTEMS)}")
    return list(dict.fromkeys(names))


def _compare_conflicts(args: argparse.Namespace) -> str | None:
    """What in ``args`` does not go with --compare (it has its own fsync and rounds)."""
    if args.tls:
        return "--tls"
    if args.mode != "both":
        return "--mode"
    if args.runs != 1:
        return "--runs (use --rounds)"
    if args.fsync != "always":
        return "--fsync never (the comparison runs with fsync on)"
    return None


def _compare(args: argparse.Namespace, base: Path) -> int:
    if args.rounds < 1:
        print("raftly bench: --rounds must be at least 1", file=sys.stderr)
        return 2
    if args.value_size is not None and args.value_size < 1:
        print("raftly bench: --value-size must be at least 1", file=sys.stderr)
        return 2
    conflict = _compare_conflicts(args)
    if conflict is not None:
        print(f"raftly bench: {conflict} does not go with --compare", file=sys.stderr)
        return 2
    try:
        loop_factory(args.event_loop)
    except ValueError as exc:
        print(f"raftly bench: {exc}", file=sys.stderr)
        return 2
    options = CompareOptions(args.clients, args.seconds, args.rounds, args.systems,
                             Path(args.out), base, args.value_size, args.event_loop,
                             args.extras)
    runnable = [s for s in args.systems if missing(s) is None]
    shown = BenchProgress(ProgressLine(enabled=args.progress), runnable, args.rounds,
                          args.clients)
    print(f"raftly bench --compare: {', '.join(args.systems)}; 3 nodes each on 127.0.0.1, "
          f"data under {base} ({filesystem_of(base)}), {args.seconds:g} s per level after "
          f"{WARMUP:g} s warm-up, {args.rounds} round(s), {os.cpu_count()} CPUs", flush=True)
    shown.line.clear_before_logging()
    try:
        return main_compare(options, begin=shown.begin, measured=shown.measured,
                            echo=shown.line.echo, before_output=shown.line.close)
    finally:
        shown.line.close()
        print(shown.summary())


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through every finally: processes, temp dirs


def _kinds(args: argparse.Namespace) -> list[str]:
    """The kinds of run the arguments ask for, in the order they are measured."""
    if args.tls:
        return ["HTTP", "HTTP over TLS"]
    return [kind for kind, modes in (("HTTP", ("both", "http")), ("library", ("both", "library")))
            if args.mode in modes]


def _bench_tls(args: argparse.Namespace, base: Path, shown: BenchProgress) -> None:
    """Plain and TLS HTTP runs, alternating so that drift on the machine hits both alike."""
    plain: list[Sample] = []
    tls: list[Sample] = []
    for run in range(1, args.runs + 1):
        shown.begin("HTTP", run)
        plain += bench_http(args.clients, args.seconds, fsync=args.fsync, base_dir=base,
                            measured=shown.measured, metrics=args.metrics)
        shown.begin("HTTP over TLS", run)
        tls += bench_http(args.clients, args.seconds, fsync=args.fsync, base_dir=base,
                          tls=True, measured=shown.measured, metrics=args.metrics)
    shown.line.close()
    plain_rows, tls_rows = summarize(plain), summarize(tls)
    print("\nHTTP, plain: aiohttp client, one session, PUT /v1/kv/KEY to the leader")
    print(format_table(plain_rows))
    print("\nHTTP, TLS: the same over https, TLS between the nodes too (kept-alive "
          "connections)")
    print(format_table(tls_rows))
    print("\nTLS / plain (ratio < 1 for throughput, > 1 for p50: the cost of TLS)")
    print(format_ratios(plain_rows, tls_rows))


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
    args.clients = chosen_levels(args.clients, tls=args.tls)
    previous = signal.getsignal(signal.SIGTERM)
    with contextlib.suppress(ValueError):  # not the main thread: leave SIGTERM alone
        signal.signal(signal.SIGTERM, _terminate)
    if args.compare:
        try:
            return _compare(args, base)
        except KeyboardInterrupt:
            print("\nraftly bench: interrupted; every process stopped and temporary data "
                  "removed", file=sys.stderr)
            return 130
        finally:
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signal.SIGTERM, previous)
    shown = BenchProgress(ProgressLine(enabled=args.progress), _kinds(args), args.runs,
                          args.clients)
    try:
        print(f"raftly bench: 3 nodes on 127.0.0.1, fsync={args.fsync}, data under {base} "
              f"({fs}), {len(VALUE)}-byte values, {args.seconds:g} s per level after "
              f"{WARMUP:g} s warm-up, median of {args.runs} run(s), {os.cpu_count()} CPUs, "
              f"metrics {'on' if args.metrics else 'off'}")
        if fs == "tmpfs" and args.fsync == "always":
            print("warning: tmpfs makes fsync free; use --dir on a real disk")
        sys.stdout.flush()
        shown.line.clear_before_logging()
        if args.tls:
            _bench_tls(args, base, shown)
            print(shown.summary())
            return 0
        if args.mode in ("both", "http"):
            samples: list[Sample] = []
            for run in range(1, args.runs + 1):
                shown.begin("HTTP", run)
                samples += bench_http(args.clients, args.seconds, fsync=args.fsync,
                                      base_dir=base, measured=shown.measured,
                                      metrics=args.metrics)
            shown.line.clear()
            print("\nHTTP: aiohttp client, one session, PUT /v1/kv/KEY to the leader; "
                  "3 node processes")
            print(format_table(summarize(samples)))
            sys.stdout.flush()
        if args.mode in ("both", "library"):
            samples = []
            for run in range(1, args.runs + 1):
                shown.begin("library", run)
                samples += asyncio.run(bench_library(args.clients, args.seconds,
                                                     fsync=args.fsync, base_dir=base,
                                                     measured=shown.measured))
            shown.line.clear()
            print("\nlibrary: await RaftServer.propose(), 3 nodes in this process over TCP "
                  "loopback, DiskStorage")
            print(format_table(summarize(samples), unit="commits/s"))
        shown.line.close()
        print(shown.summary())
    except KeyboardInterrupt:
        shown.line.close()
        print("\nraftly bench: interrupted; nodes stopped and temporary data removed",
              file=sys.stderr)
        return 130
    finally:
        shown.line.close()  # on SystemExit (SIGTERM) too
        with contextlib.suppress(ValueError, TypeError):
            signal.signal(signal.SIGTERM, previous)
    return 0


__all__ = ["build_parser", "chosen_levels", "main"]

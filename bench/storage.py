"""Storage benchmark: what durability costs next to the floor of this machine.

Run as ``python bench/storage.py [--dir DIR] [--runs N] [--seconds S]``. Prints appends/s and
MB/s of entry data for batches of 1, 16 and 256 entries of 100 bytes, with fsync ``always`` and
``never``; the same with the commit index saved in every batch (which rewrites the hard state
file: a second and third flush); and the median latency of a raw ``os.fsync`` after a small
append on the same file system. Every figure is the median of ``--runs`` runs.

Not a test: nothing is asserted; the figures belong in the issue notes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raftly.core.types import ConfState, Entry, HardState
from raftly.storage import DiskStorage
from raftly.storage.disk import FsyncPolicy

ENTRY_SIZE = 100
BATCHES = (1, 16, 256)


def fsync_latency(directory: str, samples: int = 200) -> float:
    """Median seconds of ``os.fsync`` after appending 100 bytes to a file."""
    path = os.path.join(directory, "fsync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    timings = []
    try:
        for _ in range(samples):
            os.write(fd, b"x" * ENTRY_SIZE)
            start = time.perf_counter()
            os.fsync(fd)
            timings.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        os.unlink(path)
    return statistics.median(timings)


def append_rate(
    directory: str, policy: FsyncPolicy, batch: int, seconds: float, with_commit: bool
) -> float:
    """Entries per second appended in batches of ``batch`` for about ``seconds``."""
    storage = DiskStorage(directory, fsync=policy)
    storage.bootstrap(ConfState(frozenset({1})))
    data = b"v" * ENTRY_SIZE
    index = 1
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        entries = [Entry(i, 1, data) for i in range(index, index + batch)]
        index += batch
        hard_state = HardState(1, 1, index - 1) if with_commit else None
        storage.save(hard_state, entries)
        now = time.perf_counter()
        if now >= deadline:
            break
    storage.close()
    return (index - 1) / (now - start)


def median_rate(
    base: str, policy: FsyncPolicy, batch: int, runs: int, seconds: float, with_commit: bool
) -> float:
    rates = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(dir=base) as directory:
            rates.append(append_rate(directory, policy, batch, seconds, with_commit))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=".", help="where to write (default: here)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.4, help="length of one run")
    args = parser.parse_args()
    base = os.path.abspath(args.dir)

    latency = statistics.median(fsync_latency(base) for _ in range(args.runs))
    print(f"raw fsync after a {ENTRY_SIZE}-byte append: median {latency * 1e3:.3f} ms")
    print(f"(medians of {args.runs} runs of {args.seconds:.1f} s, {ENTRY_SIZE}-byte entries)")
    print(f"{'fsync':<7} {'saves':<14} {'batch':>5} {'appends/s':>11} {'MB/s':>8}")
    for with_commit in (False, True):
        for policy in ("always", "never"):
            for batch in BATCHES:
                rate = median_rate(base, policy, batch, args.runs, args.seconds, with_commit)
                kind = "entries+commit" if with_commit else "entries"
                mbps = rate * ENTRY_SIZE / 1e6
                print(f"{policy:<7} {kind:<14} {batch:>5} {rate:>11,.0f} {mbps:>8.2f}", flush=True)


if __name__ == "__main__":
    main()

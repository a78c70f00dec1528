"""The disk's floor: how long one small durable append takes on the file system under test.

``raw_fsync`` appends 64 bytes and calls fdatasync, N times, in a file of its own under the
directory given (the benchmark's temporary directory, so the same file system the nodes write
to), and returns the median and p99 in milliseconds. A commit cannot be faster than one of
these on the leader; the issue's one-client library target is 4 of them.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

RECORD = b"r" * 63 + b"\n"


@dataclass(slots=True, frozen=True)
class FsyncFloor:
    """Raw append + fdatasync times, in milliseconds."""

    count: int
    median_ms: float
    p99_ms: float


def raw_fsync(directory: str | Path, count: int = 500) -> FsyncFloor:
    """``count`` x (64-byte append + fdatasync) in a temporary file under ``directory``."""
    if count < 1:
        raise ValueError("count must be at least 1")
    sync = getattr(os, "fdatasync", os.fsync)  # fdatasync is Linux's; fsync elsewhere
    times: list[float] = []
    fd, name = tempfile.mkstemp(prefix="raftly-bench-fsync-", dir=directory)
    try:
        for _ in range(count):
            start = time.perf_counter()
            os.write(fd, RECORD)
            sync(fd)
            times.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        os.unlink(name)
    times.sort()
    p99 = times[min(len(times) - 1, max(0, round(0.99 * len(times)) - 1))]
    return FsyncFloor(count, statistics.median(times) * 1000, p99 * 1000)


__all__ = ["FsyncFloor", "raw_fsync"]

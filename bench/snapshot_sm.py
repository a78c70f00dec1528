"""KV state machine snapshot benchmark: capture, persist and restore times, and snapshot size.

Run as ``python bench/snapshot_sm.py [--keys N] [--key-bytes K] [--value-bytes V] [--clients C]
[--runs R] [--dir DIR]``. Fills a KVStateMachine by applying N puts of K-byte keys and V-byte
values (the first C of them under client sessions, so the session table is in the snapshot too),
then prints, as the median of R runs:

- capture: ``capture()`` on the applying thread (what stalls applies);
- persist: ``persist`` of that capture into a buffered file (no fsync: that is the store's cost),
  run in a worker thread while the main thread ticks every millisecond, with the longest tick
  gap the main thread saw (what the GIL costs a driver's event loop meanwhile);
- restore: ``restore`` from that file into a fresh machine;
- the snapshot's size.

Not a test: nothing is asserted; the figures belong in the issue notes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raftly.kv.state_machine import KVStateMachine, Put, Session, encode


def fill(keys: int, key_bytes: int, value_bytes: int, clients: int) -> KVStateMachine:
    sm = KVStateMachine()
    value = b"v" * value_bytes
    for i in range(keys):
        key = f"{i:0{key_bytes}d}"[-key_bytes:]
        session = Session(f"client-{i}", 1) if i < clients else None
        sm.apply(i + 1, encode(Put(key, value), session))
    return sm


def persist_with_ticks(sm: KVStateMachine, path: Path) -> tuple[float, float, float]:
    """(capture seconds, persist seconds, longest main-thread tick gap in seconds)."""
    start = time.perf_counter()
    capture = sm.capture()
    captured = time.perf_counter() - start
    elapsed = 0.0

    def worker() -> None:
        nonlocal elapsed
        begin = time.perf_counter()
        with open(path, "wb") as sink:
            capture.persist(sink)
        elapsed = time.perf_counter() - begin

    thread = threading.Thread(target=worker)
    thread.start()
    longest = 0.0
    last = time.perf_counter()
    while thread.is_alive():
        time.sleep(0.001)
        now = time.perf_counter()
        longest = max(longest, now - last)
        last = now
    thread.join()
    return captured, elapsed, longest


def restore_time(path: Path) -> float:
    fresh = KVStateMachine()
    start = time.perf_counter()
    with open(path, "rb") as source:
        fresh.restore(source)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--key-bytes", type=int, default=16)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where the snapshot file goes (a temp dir)")
    args = parser.parse_args()

    start = time.perf_counter()
    sm = fill(args.keys, args.key_bytes, args.value_bytes, args.clients)
    print(f"filled {len(sm):,} keys of {args.key_bytes} B with {args.value_bytes} B values and "
          f"{sm.session_count:,} sessions in {time.perf_counter() - start:.1f} s")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "kv.snapshot"
        runs = [persist_with_ticks(sm, path) for _ in range(args.runs)]
        size = path.stat().st_size
        restores = [restore_time(path) for _ in range(args.runs)]
    capture, persist, gap = (statistics.median(r[i] for r in runs) for i in range(3))
    print(f"capture  {capture * 1000:8.1f} ms   (on the applying thread)")
    print(f"persist  {persist * 1000:8.1f} ms   (worker thread; longest main-thread tick gap "
          f"{gap * 1000:.1f} ms)")
    print(f"restore  {statistics.median(restores) * 1000:8.1f} ms")
    print(f"size     {size / 1e6:8.1f} MB   ({size / max(len(sm), 1):.0f} B per key)")


if __name__ == "__main__":
    main()

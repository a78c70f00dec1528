"""Transport benchmark: messages/s one way over loopback with ``TcpTransport``.

Run as ``python bench/transport.py [--seconds S] [--runs N] [--same-process]``. Prints, for
AppendEntries carrying 100 entries of 16 bytes and for single Heartbeats, the messages/s that
arrive (decoded and handed to ``on_message``) at a receiver, plus the codec's encode and decode
time per message. The sender offers as fast as its queue accepts (it waits while more than half
the queue is full, so nothing is dropped). By default the receiver runs in a child process, as a
real peer would; ``--same-process`` puts both ends on one event loop. Medians of ``--runs``.

Not a test: nothing is asserted; the figures belong in the issue notes.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import sys
import time
import timeit
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raftly.core.messages import AppendEntries, Heartbeat, Message
from raftly.core.types import Entry
from raftly.transport import TcpTransport, decode_message, encode_message

CLUSTER = "bench"
QUEUE_LIMIT = 10_000


def append_entries(i: int) -> AppendEntries:
    first = i * 100 + 1
    entries = [Entry(first + k, 1, b"x" * 16) for k in range(100)]
    return AppendEntries(term=1, src=1, dst=2, prev_index=first - 1, prev_term=1, entries=entries)


def heartbeat(i: int) -> Heartbeat:
    return Heartbeat(term=1, src=1, dst=2, commit=i)


KINDS = {"AppendEntries 100 x 16 B": append_entries, "Heartbeat": heartbeat}


async def _receiver(conn: Connection) -> None:
    """Child process side: listen, report the port, count arrivals, report each run's rate."""
    counts = [0]

    def on_message(_msg: Message) -> None:
        counts[0] += 1

    t = TcpTransport(2, ("127.0.0.1", 0), {}, cluster_id=CLUSTER)
    await t.start(on_message)
    conn.send(t.listen_address)
    loop = asyncio.get_running_loop()
    while True:
        expected = await loop.run_in_executor(None, conn.recv)
        if expected is None:
            break
        counts[0] = 0
        conn.send("ready")  # the sender waits for this: no arrival is counted before the reset
        while counts[0] == 0:
            await asyncio.sleep(0.0005)
        start = time.perf_counter()  # from the first arrival: connection setup is not counted
        while counts[0] < expected:
            await asyncio.sleep(0.001)
        conn.send((counts[0] - 1) / (time.perf_counter() - start))
    await t.close()


def _child(conn: Connection) -> None:
    asyncio.run(_receiver(conn))


async def _offer(t: TcpTransport, make: type | object, n: int) -> None:
    """Send ``n`` messages as fast as the queue takes them without dropping any."""
    assert callable(make)
    msgs = [make(i % 1000) for i in range(1000)]  # built once: measure the transport
    for i in range(n):
        t.send(msgs[i % 1000])
        if i % 256 == 255:
            while t.stats()["queued"] > QUEUE_LIMIT // 2:
                await asyncio.sleep(0)
            await asyncio.sleep(0)


async def run_separate(seconds: float, runs: int) -> dict[str, list[float]]:
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=_child, args=(child,), daemon=True)
    proc.start()
    loop = asyncio.get_running_loop()
    address = await loop.run_in_executor(None, parent.recv)
    a = TcpTransport(1, ("127.0.0.1", 0), {2: address}, cluster_id=CLUSTER,
                     queue_limit=QUEUE_LIMIT)
    await a.start(lambda _m: None)
    results: dict[str, list[float]] = {k: [] for k in KINDS}
    try:
        for name, make in KINDS.items():
            n = await _calibrate(a, make, seconds, parent)
            for _ in range(runs):
                parent.send(n)
                await loop.run_in_executor(None, parent.recv)
                await _offer(a, make, n)
                results[name].append(await loop.run_in_executor(None, parent.recv))
        parent.send(None)
    finally:
        await a.close()
        proc.join(5)
    assert a.stats()["dropped"] == 0, a.stats()
    return results


async def _calibrate(a: TcpTransport, make: object, seconds: float, conn: Connection) -> int:
    """How many messages make a run of about ``seconds``: time a short probe run."""
    loop = asyncio.get_running_loop()
    probe = 2000
    conn.send(probe)
    await loop.run_in_executor(None, conn.recv)
    await _offer(a, make, probe)
    rate = await loop.run_in_executor(None, conn.recv)
    return max(probe, int(rate * seconds))


async def run_same_process(seconds: float, runs: int) -> dict[str, list[float]]:
    count = [0]

    def on_message(_m: Message) -> None:
        count[0] += 1

    b = TcpTransport(2, ("127.0.0.1", 0), {}, cluster_id=CLUSTER)
    await b.start(on_message)
    a = TcpTransport(1, ("127.0.0.1", 0), {2: b.listen_address}, cluster_id=CLUSTER)
    await a.start(lambda _m: None)
    results: dict[str, list[float]] = {k: [] for k in KINDS}
    for name, make in KINDS.items():
        n = 2000
        for r in range(runs + 1):  # the first run calibrates n and warms the connection up
            count[0] = 0
            start = time.perf_counter()
            await _offer(a, make, n)
            while count[0] < n:
                await asyncio.sleep(0)
            rate = n / (time.perf_counter() - start)
            if r == 0:
                n = max(n, int(rate * seconds))
            else:
                results[name].append(rate)
    await a.close()
    await b.close()
    return results


def codec_figures() -> None:
    for name, make in KINDS.items():
        msg = make(1)
        data = encode_message(msg)
        number = 2000
        enc = min(timeit.repeat(lambda m=msg: encode_message(m), number=number, repeat=5))
        dec = min(timeit.repeat(lambda d=data: decode_message(d), number=number, repeat=5))
        print(f"  codec {name:<26} {len(data):>6} B   encode {enc / number * 1e6:6.1f} us"
              f"   decode {dec / number * 1e6:6.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--same-process", action="store_true",
                        help="sender and receiver on one event loop")
    args = parser.parse_args()
    where = "one process" if args.same_process else "receiver in a child process"
    print(f"TcpTransport one way over loopback ({where}), median of {args.runs} runs:")
    runner = run_same_process if args.same_process else run_separate
    results = asyncio.run(runner(args.seconds, args.runs))
    for name, rates in results.items():
        med = statistics.median(rates)
        extra = f"  = {med * 100:,.0f} entries/s" if name.startswith("AppendEntries") else ""
        print(f"  {name:<26} {med:>10,.0f} msg/s  (min {min(rates):,.0f}, max {max(rates):,.0f})"
              f"{extra}")
    codec_figures()


if __name__ == "__main__":
    main()

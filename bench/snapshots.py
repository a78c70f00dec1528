"""Snapshot benchmark: what compaction costs and what it saves, on this machine.

Run as ``python bench/snapshots.py [--keys N] [--writes N] [--dir DIR]``. Prints:

- ``state``: the KV state machine holding N keys (16-byte keys, 100-byte values): time to
  capture, to persist into a snapshot file (and its size), to read that file back and restore;
- ``restart``: one node whose state is those N keys, written through Raft: time from start to
  applied, with compaction off (the whole log replayed) and on (snapshot + log tail);
- ``heartbeats``: a 3-node cluster in this process whose leader snapshots N keys while
  followers do not: the longest gap between two heartbeats a follower received while the
  snapshot was taken, and outside it;
- ``disk``: a node's data directory after ``--writes`` writes over 10,000 keys, with
  compaction on (default settings) and off.

Writes go through ``RaftServer.propose`` with fsync off (``never``): fsync does not change any of
these figures, only how long it takes to write the data. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raftly.core.messages import Heartbeat, Message
from raftly.kv.state_machine import KVStateMachine, Put, encode
from raftly.server.server import RaftServer, wait_for_agreed_leader
from raftly.storage import DiskStorage
from raftly.storage.snapshots import SnapshotStore
from raftly.transport import MemoryNetwork

VALUE = b"v" * 100
RESTART_RETAIN = 1000
"""Entries kept behind the snapshot in the restart figure (the default keeps as many as
``--snapshot-entries``, which a restart then reads too)."""


def key(i: int) -> str:
    return f"key{i:013d}"  # 16 bytes


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def mib(n: float) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def bench_state(keys: int, root: Path, value_size: int) -> None:
    from raftly.core.types import ConfState, SnapshotMeta

    sm = KVStateMachine()
    value = b"v" * value_size
    for i in range(keys):
        sm.apply(i + 1, encode(Put(key(i), value)))
    store = SnapshotStore(root / "state", fsync="always")
    meta = SnapshotMeta(keys, 1, ConfState(frozenset({1})))
    t0 = time.perf_counter()
    capture = sm.capture()
    t1 = time.perf_counter()
    writer = store.create(meta)
    capture.persist(writer)
    writer.commit()
    t2 = time.perf_counter()
    fresh = KVStateMachine()
    with store.open(meta) as source:
        fresh.restore(source)
    t3 = time.perf_counter()
    size = store.size(meta)
    print(f"state      {keys:,} keys of {value_size} B: capture {1000 * (t1 - t0):.0f} ms, persist "
          f"{t2 - t1:.2f} s ({mib(size)}, {size / (t2 - t1) / (1 << 20):.0f} MiB/s, fsync on), "
          f"restore {t3 - t2:.2f} s")


async def _write(server: RaftServer, commands: list[bytes], concurrency: int = 512) -> None:
    for lo in range(0, len(commands), concurrency):
        await asyncio.gather(*(server.propose(c, timeout=60) for c in
                               commands[lo:lo + concurrency]))


def _single(directory: Path, network: MemoryNetwork, *, snapshots: bool,
            entries: int = 10_000, retain: int | None = None) -> RaftServer:
    return RaftServer(1, storage=DiskStorage(directory, fsync="never"),
                      transport=network.transport(1), state_machine=KVStateMachine(),
                      bootstrap=frozenset({1}),
                      snapshots=SnapshotStore(directory, fsync="never") if snapshots else None,
                      snapshot_entries=entries, snapshot_retain=retain)


async def _restart_time(directory: Path, keys: int, snapshots: bool) -> tuple[float, int]:
    server = _single(directory, MemoryNetwork(), snapshots=snapshots, entries=keys,
                     retain=RESTART_RETAIN)
    await server.start()
    await wait_for_agreed_leader([server])
    await _write(server, [encode(Put(key(i), VALUE)) for i in range(keys)])
    while snapshots and server.status().first_index < keys - RESTART_RETAIN:
        await asyncio.sleep(0.05)  # the snapshot is taken and the log compacted behind it
    target = server.status().applied_index
    await server.close()
    t0 = time.perf_counter()
    again = _single(directory, MemoryNetwork(), snapshots=snapshots, entries=keys,
                    retain=RESTART_RETAIN)
    await again.start()
    while again.status().applied_index < target:
        await asyncio.sleep(0.001)
    elapsed = time.perf_counter() - t0
    snapshot_index = again.status().snapshot_index
    await again.close()
    return elapsed, snapshot_index


async def bench_restart(keys: int, root: Path) -> None:
    off, _ = await _restart_time(root / "restart-off", keys, snapshots=False)
    on, index = await _restart_time(root / "restart-on", keys, snapshots=True)
    print(f"restart    {keys:,} keys: {off:.2f} s replaying the whole log, {on:.2f} s from "
          f"snapshot {index:,} + tail, {RESTART_RETAIN} entries retained "
          f"({off / on:.1f}x faster)")


async def bench_heartbeats(keys: int, root: Path) -> None:
    network = MemoryNetwork()
    ids = frozenset({1, 2, 3})
    arrivals: list[float] = []
    servers = []
    for i in sorted(ids):
        d = root / f"hb{i}"
        servers.append(RaftServer(
            i, storage=DiskStorage(d, fsync="never"), transport=network.transport(i),
            state_machine=KVStateMachine(), bootstrap=ids,
            snapshots=SnapshotStore(d, fsync="never") if i == 1 else None,
            snapshot_entries=keys + 100))
    for server in servers:
        await server.start()
    leader = await wait_for_agreed_leader(servers)
    if leader.id != 1:
        leader.transfer_leadership(1)
        while not servers[0].is_leader:
            await asyncio.sleep(0.01)
        leader = servers[0]
    follower = servers[1]
    receive = follower._on_message

    def timed(msg: Message) -> None:
        if isinstance(msg, Heartbeat):
            arrivals.append(time.perf_counter())
        receive(msg)

    follower._transport._on_message = timed  # type: ignore[attr-defined]
    manager = leader._snapshots
    assert manager is not None
    window: list[float] = []
    take = manager._take

    async def timed_take(*args: object) -> None:
        window.append(time.perf_counter())
        await take(*args)  # type: ignore[arg-type]
        window.append(time.perf_counter())

    manager._take = timed_take  # type: ignore[method-assign]
    # Load the state: no snapshot yet (the trigger is 100 entries past it).
    await _write(leader, [encode(Put(key(i), VALUE)) for i in range(keys)])
    await asyncio.sleep(1.0)
    idle_from = time.perf_counter()
    await asyncio.sleep(2.0)  # a quiet baseline: only heartbeats
    idle_to = time.perf_counter()
    while len(window) < 2:
        await _write(leader, [encode(Put(key(0), VALUE))] * 10)
    for server in servers:
        await server.close()
    start, end = window

    def longest_gap(lo: float, hi: float) -> float:
        gaps = [b - a for a, b in itertools.pairwise(arrivals) if b >= lo and a <= hi]
        return max(gaps, default=0.0)

    print(f"heartbeats leader snapshots {keys:,} keys in {end - start:.2f} s: longest gap between "
          f"heartbeats at a follower {1000 * longest_gap(start, end):.0f} ms during it, "
          f"{1000 * longest_gap(idle_from, idle_to):.0f} ms when idle (interval "
          f"{1000 * leader.config.heartbeat_interval:.0f} ms)")


async def _disk_after(directory: Path, writes: int, snapshots: bool) -> tuple[int, int]:
    server = _single(directory, MemoryNetwork(), snapshots=snapshots)
    await server.start()
    await wait_for_agreed_leader([server])
    await _write(server, [encode(Put(key(i % 10_000), VALUE)) for i in range(writes)])
    log_bytes = server.status().log_bytes
    await server.close()
    return dir_bytes(directory), log_bytes


async def bench_disk(writes: int, root: Path) -> None:
    off, _ = await _disk_after(root / "disk-off", writes, snapshots=False)
    on, log_on = await _disk_after(root / "disk-on", writes, snapshots=True)
    print(f"disk       {writes:,} writes over 10,000 keys: data dir {mib(on)} with compaction "
          f"(log {mib(log_on)}), {mib(off)} without ({off / on:.0f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--writes", type=int, default=1_000_000)
    parser.add_argument("--value-size", type=int, default=100,
                        help="value size of the state figure (1000 makes a ~1 GB state)")
    parser.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    parser.add_argument("--only", choices=("state", "restart", "heartbeats", "disk"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="raftly-bench-snap-") as tmp:
        root = Path(tmp)
        if args.only in (None, "state"):
            bench_state(args.keys, root, args.value_size)
        if args.only in (None, "restart"):
            asyncio.run(bench_restart(args.keys, root))
        if args.only in (None, "heartbeats"):
            asyncio.run(bench_heartbeats(args.keys, root))
        if args.only in (None, "disk"):
            asyncio.run(bench_disk(args.writes, root))


if __name__ == "__main__":
    main()

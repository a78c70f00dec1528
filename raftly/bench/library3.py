"""The library benchmark with one node per process, as PySyncObj runs: ``raftly-lib-3proc``.

Each node is ``python -m raftly.bench.library3 --node I ...`` (a child of the benchmark): one
``RaftServer`` with DiskStorage in the run's temporary directory and the trivial state machine
of ``library.py``, talking TCP on 127.0.0.1 to the two others. The node that leads, once it has
led for a second, runs the C closed loops of ``await server.propose(value)`` in its own process
and event loop, and writes its Samples (fsync counts of the leader only) as JSON for the parent;
the two followers run nothing else, each on its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from raftly.bench.children import (
    ELECTION_BUDGET,
    LEAD_STABLE,
    LeadWatch,
    int_list,
    measure_in_children,
    write_samples,
)
from raftly.bench.library import BenchMachine, propose_op
from raftly.bench.load import VALUE, WARMUP, closed_loop
from raftly.bench.places import temp_dir
from raftly.bench.stats import Sample
from raftly.localproc import free_ports
from raftly.storage.disk.fsio import FsyncPolicy

IDS = (1, 2, 3)


async def node(args: argparse.Namespace) -> int:
    """One node; if it leads (stably), it measures and writes the Samples to ``args.out``."""
    from raftly.server.server import RaftServer
    from raftly.storage import DiskStorage
    from raftly.transport import TcpTransport

    book = {i: ("127.0.0.1", port) for i, port in zip(IDS, args.ports, strict=True)}
    me = args.node
    storage = DiskStorage(Path(args.dir) / f"n{me}", fsync=args.fsync)
    transport = TcpTransport(me, listen=book[me], peers=book, cluster_id="raftly-bench")
    server = RaftServer(me, storage=storage, transport=transport, state_machine=BenchMachine(),
                        bootstrap=frozenset(IDS))
    await server.start()
    try:
        watch = LeadWatch(args.out, ELECTION_BUDGET, LEAD_STABLE)
        while (state := watch.poll(server.is_leader)) != "measure":
            if state == "timeout":
                return 3
            if state == "other":
                await asyncio.Event().wait()  # another node measured: serve until stopped
            await asyncio.sleep(watch.POLL)
        current = {"leader": server}
        op = propose_op([server], current, b"v" * args.value_size, args.timeout)

        async def probe() -> tuple[int, int, int, int]:
            return server.stats["fsyncs"], server.stats["entries_persisted"], 0, 0

        samples = [await closed_loop(op, level, args.seconds, warmup=args.warmup, probe=probe)
                   for level in args.clients]
        write_samples(samples, args.out)
        return 0
    finally:
        await server.close()


def bench_library3(clients: Sequence[int], seconds: float, *, fsync: FsyncPolicy = "always",
                   base_dir: str | Path | None = None, warmup: float = WARMUP,
                   timeout: float = 10.0, value: bytes = VALUE,
                   event_loop: str = "auto") -> list[Sample]:
    """One run: three fresh node processes, one Sample per level (measured in the leader's).
    ChildFailed if they do not elect a leader or measure in time."""
    with temp_dir(base_dir, "raftly-bench-lib3-") as root:
        out = root / "result.json"
        ports = ",".join(str(p) for p in free_ports(len(IDS)))
        argvs = [[sys.executable, "-m", "raftly.bench.library3", "--node", str(i),
                  "--ports", ports, "--dir", str(root), "--fsync", fsync,
                  "--clients", ",".join(map(str, clients)), "--seconds", repr(seconds),
                  "--warmup", repr(warmup), "--timeout", repr(timeout),
                  "--value-size", str(len(value)), "--out", str(out),
                  "--event-loop", event_loop]
                 for i in IDS]
        budget = ELECTION_BUDGET + LEAD_STABLE + len(clients) * (seconds + warmup + timeout + 5)
        return measure_in_children(argvs, root, out, budget, "raftly library, 3 processes")


def main(argv: list[str]) -> int:
    from raftly.eventloop import CHOICES, run

    parser = argparse.ArgumentParser(description="One raftly-lib-3proc benchmark node "
                                                 "(internal).")
    parser.add_argument("--node", type=int, choices=IDS, required=True)
    parser.add_argument("--ports", type=int_list, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--fsync", choices=("always", "never"), default="always")
    parser.add_argument("--clients", type=int_list, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--warmup", type=float, default=WARMUP)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--value-size", type=int, default=len(VALUE))
    parser.add_argument("--out", required=True)
    parser.add_argument("--event-loop", choices=CHOICES, default="auto")
    args = parser.parse_args(argv)
    if len(args.ports) != len(IDS):
        parser.error(f"--ports needs {len(IDS)} ports")
    return run(node(args), loop=args.event_loop)


__all__ = ["bench_library3"]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

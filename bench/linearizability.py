"""How long the linearizability checker takes on histories shaped like a faulty run.

Generates histories with ``generate_history`` (10 processes, 8 keys, random read/write/cas,
about 5 % info ops, 5 % slow ops as under a partition so that many ops overlap) of 10,000 and
50,000 ops and prints the time ``check`` takes on each: as generated (linearizable), with one
read changed to a stale value (must be refuted), and with values drawn from a small set instead
of unique ones (fewer reductions apply, the search works harder), and with 30 % slow ops.
Usage: python bench/linearizability.py [--sizes 10000 50000] [--seed 1] [--budget 60]
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import time

from raftly.testing.history import Operation, pair_operations
from raftly.testing.linearizability import check, generate_history


def mean_overlap(ops: list[Operation]) -> float:
    """The average number of returned ops open at once (info ops, never returning, left out)."""
    edges: list[tuple[float, int]] = []
    for o in ops:
        if o.ret is not None:
            edges.append((o.call, 1))
            edges.append((o.ret, -1))
    edges.sort()
    area, open_, last = 0.0, 0, edges[0][0]
    for t, d in edges:
        area += open_ * (t - last)
        open_, last = open_ + d, t
    return area / max(1.0, edges[-1][0] - edges[0][0])


def stale_read(ops: list[Operation], rng: random.Random) -> list[Operation]:
    """Make one late read return the first value ever written to its key (long overwritten)."""
    first: dict[object, Operation] = {}
    for o in ops:
        if o.f == "write" and o.status == "ok" and o.key not in first:
            first[o.key] = o
    late = [i for i, o in enumerate(ops[len(ops) // 2:], len(ops) // 2)
            if o.f == "read" and o.status == "ok" and o.key in first]
    i = rng.choice(late)
    out = list(ops)
    out[i] = dataclasses.replace(ops[i], output=first[ops[i].key].value)
    return out


def run(label: str, ops: list[Operation], budget: float) -> None:
    t0 = time.perf_counter()
    r = check(ops, time_budget=budget)
    dt = time.perf_counter() - t0
    steps = sum(k.explored for k in r.keys.values())
    print(f"  {label:<28} {r.verdict!s:<17} {dt:7.2f} s  {steps:>10,} steps")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--budget", type=float, default=60.0)
    args = parser.parse_args()
    for size in args.sizes:
        rng = random.Random(args.seed)
        ops = pair_operations(generate_history(rng, ops=size, processes=10, keys=8,
                                               info_rate=0.05))
        counts = {s: sum(o.status == s for o in ops) for s in ("ok", "fail", "info")}
        print(f"{size:,} ops, 10 processes, 8 keys, {counts}, "
              f"{mean_overlap(ops):.1f} ops open on average")
        run("linearizable", ops, args.budget)
        run("one stale read injected", stale_read(ops, rng), args.budget)
        small = pair_operations(generate_history(random.Random(args.seed), ops=size,
                                                 processes=10, keys=8, info_rate=0.05,
                                                 values=5))
        run("values from a set of 5", small, args.budget)
        slow = pair_operations(generate_history(random.Random(args.seed), ops=size,
                                                processes=10, keys=8, info_rate=0.05,
                                                slow_rate=0.3))
        run(f"30% slow ops ({mean_overlap(slow):.1f} open)", slow, args.budget)


if __name__ == "__main__":
    main()

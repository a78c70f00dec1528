"""How much faster than real time SimCluster runs a 5-node cluster under load.

Prints virtual seconds simulated per real second for several offered loads (commands per virtual
second, proposed on the leader in bursts every 10 ms), on a reliable and an unreliable network.
Usage: python bench/sim.py [--seconds 30] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

from raftly.testing import SimCluster


def speedup(load: int, unreliable: bool, seconds: float, seed: int) -> tuple[float, int]:
    c = SimCluster(n=5, seed=seed)
    c.set_unreliable(unreliable)
    c.check_one_leader(timeout=10.0)
    per_burst = max(1, load // 100)
    interval = per_burst / load
    start_virtual, start_real = c.now, time.perf_counter()
    proposed = 0
    while c.now < start_virtual + seconds:
        leader = c.leader()
        if leader is not None:
            for _ in range(per_burst):
                c.start(leader, b"x" * 16)
                proposed += 1
        c.run(interval)
    real = time.perf_counter() - start_real
    return seconds / real, len(c.applied(0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"{'network':<11}{'load cmd/s':>11}{'x real time (median)':>22}{'applied':>9}")
    for unreliable in (False, True):
        for load in (10, 100, 500, 2000):
            results = [speedup(load, unreliable, args.seconds, seed) for seed in range(args.runs)]
            ratio = statistics.median(r for r, _ in results)
            applied = results[0][1]
            net = "unreliable" if unreliable else "reliable"
            print(f"{net:<11}{load:>11}{ratio:>22.0f}{applied:>9}")


if __name__ == "__main__":
    main()

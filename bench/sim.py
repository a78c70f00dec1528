"""How much faster than real time SimCluster runs a 5-node cluster under load.

Prints virtual seconds simulated per real second for several offered loads (commands per virtual
second, proposed on the leader in bursts every 10 ms), on a reliable and an unreliable network.
The measurement is ``raftly.bench.sim`` (``raftly bench --compare`` runs it too).
Usage: python bench/sim.py [--seconds 30] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics

from raftly.bench.sim import sim_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"{'network':<11}{'load cmd/s':>11}{'x real time (median)':>22}{'applied':>9}")
    for unreliable in (False, True):
        for load in (10, 100, 500, 2000):
            results = [sim_run(5, load, args.seconds, seed, unreliable=unreliable)
                       for seed in range(args.runs)]
            ratio = statistics.median(r for r, _ in results)
            applied = results[0][1]
            net = "unreliable" if unreliable else "reliable"
            print(f"{net:<11}{load:>11}{ratio:>22.0f}{applied:>9}")


if __name__ == "__main__":
    main()

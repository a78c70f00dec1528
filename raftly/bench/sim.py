"""The simulator's speed: how much faster than real time ``SimCluster`` runs a loaded cluster.

``sim_speed`` proposes ``load`` commands per virtual second on the leader (in bursts every
10 ms of virtual time) of an ``nodes``-node cluster on a reliable network for ``seconds``
virtual seconds, and returns virtual seconds per real second. Every safety assertion of the
simulator runs after every step, as always. ``bench/sim.py`` prints a table of it.
"""

from __future__ import annotations

import time

from raftly.testing import SimCluster


def sim_run(nodes: int, load: int, seconds: float, seed: int, *,
            unreliable: bool = False) -> tuple[float, int]:
    """(x real time, entries applied on node 0) of one simulated run."""
    c = SimCluster(n=nodes, seed=seed)
    c.set_unreliable(unreliable)
    c.check_one_leader(timeout=10.0)
    per_burst = max(1, load // 100)
    interval = per_burst / load
    start_virtual, start_real = c.now, time.perf_counter()
    while c.now < start_virtual + seconds:
        leader = c.leader()
        if leader is not None:
            for _ in range(per_burst):
                c.start(leader, b"x" * 16)
        c.run(interval)
    real = time.perf_counter() - start_real
    return seconds / real, len(c.applied(0))


def sim_speed(nodes: int = 5, load: int = 500, seconds: float = 30.0, seed: int = 0) -> float:
    """Virtual seconds per real second: ``nodes`` nodes, ``load`` commands per virtual second."""
    return sim_run(nodes, load, seconds, seed)[0]


__all__ = ["sim_run", "sim_speed"]

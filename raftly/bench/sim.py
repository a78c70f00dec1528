"""Simulator speed: how many times faster than real time ``SimCluster`` runs a loaded cluster.

A cluster of ``nodes`` elects a leader, then for ``seconds`` of virtual time the leader is
handed ``load`` commands per virtual second (16 bytes each), in bursts every 10 ms as a client
batch would arrive. The figure is virtual seconds simulated per real second over that window,
every safety check included (the simulator runs them after every step). ``bench/sim.py`` prints
it for several loads; ``raftly bench --compare`` reports ``sim_speed()``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from raftly.testing import SimCluster

_COMMAND = b"x" * 16
_BURSTS_PER_SECOND = 100


@dataclass(slots=True, frozen=True)
class SimRun:
    """One measured run: the speed, and how much work it did (to compare like with like)."""

    x_real_time: float
    """Virtual seconds simulated per real second."""
    applied: int
    """Commands node 0 applied by the end (a check that the load was really carried)."""
    steps: int
    """Events the simulator processed in the measured window."""


def sim_run(nodes: int = 5, load: int = 500, seconds: float = 30.0, seed: int = 0, *,
            unreliable: bool = False) -> SimRun:
    """Run the load for ``seconds`` of virtual time on a reliable (or unreliable) network."""
    c = SimCluster(n=nodes, seed=seed)
    c.set_unreliable(unreliable)
    c.check_one_leader(timeout=10.0)
    per_burst = max(1, load // _BURSTS_PER_SECOND)
    interval = per_burst / load
    start_virtual, start_steps, start_real = c.now, c.steps, time.perf_counter()
    while c.now < start_virtual + seconds:
        leader = c.leader()
        if leader is not None:
            for _ in range(per_burst):
                c.start(leader, _COMMAND)
        c.run(interval)
    real = time.perf_counter() - start_real
    return SimRun(seconds / real, len(c.applied(0)), c.steps - start_steps)


def sim_speed(nodes: int = 5, load: int = 500, seconds: float = 30.0, seed: int = 0) -> float:
    """x real time of ``nodes`` nodes at ``load`` commands per virtual second (reliable net)."""
    return sim_run(nodes, load, seconds, seed).x_real_time

"""Randomized fault schedules for ``SimCluster``: partitions, crashes, restarts, drops, delays.

One seed fixes everything: the cluster size, the schedule of faults and proposals, and the
network's behaviour. A run checks every safety property after every step (the simulator does),
then heals the cluster and checks that it makes progress and that every node converges.

Replay one seed: ``python -m raftly.testing.fuzz --seed 17``; sweep: ``--seeds 0:1000``.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import time
from dataclasses import dataclass, field

from raftly.core.errors import RaftError
from raftly.testing.sim import SimCluster


@dataclass(slots=True)
class FuzzResult:
    seed: int
    nodes: int
    virtual_seconds: float
    steps: int
    messages: int
    proposals: int
    committed: int
    faults: int


def replay_command(seed: int, duration: float) -> str:
    return f"python -m raftly.testing.fuzz --seed {seed} --duration {duration:g}"


def run_seed(seed: int, duration: float = 30.0) -> FuzzResult:
    """Run one randomized schedule of ``duration`` virtual seconds, then heal and check progress.

    Raises ``SafetyViolation`` (or ``AssertionError`` for lost liveness after healing) with the
    command that replays the seed.
    """
    rng = random.Random(f"fuzz/{seed}")
    n = rng.choice((3, 5))
    # Instant saves, or saves that take time (node keeps stepping meanwhile; a crash loses the
    # save under way), up to a disk slower than the election timeout.
    disk = rng.choice((None, (0.0001, 0.002), (0.0005, 0.05), (0.001, 0.3)))
    hint = replay_command(seed, duration)
    c = SimCluster(n=n, seed=seed, replay_hint=hint, disk_latency=disk)
    schedule = _Schedule(c, rng, seed, n)
    while c.now < duration:
        schedule.step()
    schedule.heal_all()
    last = _check_recovered(c, seed, n, hint)
    return FuzzResult(seed, n, c.now, c.steps, c.message_count(), schedule.proposals, last,
                      schedule.faults)


@dataclass(slots=True)
class _Schedule:
    """The random load and faults one seed puts on its cluster, and counts of what it did.

    Every choice comes from ``rng`` in a fixed order, so one seed always gives the same run.
    """

    c: SimCluster
    rng: random.Random
    seed: int
    n: int
    proposals: int = 0
    faults: int = 0
    reads: int = 0
    crashed: set[int] = field(default_factory=set)

    def step(self) -> None:
        """Let some virtual time pass, then add load (mostly) or one fault."""
        self.c.run(self.rng.uniform(0.0, 0.4))
        if self.rng.random() < 0.7:
            self._load()
        else:
            self.faults += 1
            self._fault()

    def _load(self) -> None:
        c, rng, n = self.c, self.rng, self.n
        i = rng.randrange(n)
        if c.alive(i):
            for _ in range(rng.randint(1, 10)):
                self.proposals += 1
                c.start(i, f"{self.seed}:{self.proposals}".encode())
        # Reads on every live node, each checked not to be stale when its index arrives.
        self.reads += 1
        for j in range(n):
            if c.alive(j):
                with contextlib.suppress(RaftError):
                    c.read_index(j, f"read:{self.reads}".encode())

    def _fault(self) -> None:
        c, rng, n = self.c, self.rng, self.n
        roll = rng.random()
        if roll < 0.15:
            nodes = list(range(n))
            rng.shuffle(nodes)
            cut = rng.randint(1, n - 1)
            c.partition(nodes[:cut], nodes[cut:])
        elif roll < 0.25:
            c.disconnect(rng.randrange(n))
        elif roll < 0.45:
            c.heal()
        elif roll < 0.55:
            i = rng.randrange(n)
            c.crash(i)
            self.crashed.add(i)
        elif roll < 0.70 and self.crashed:
            i = rng.choice(sorted(self.crashed))
            c.restart(i)
            self.crashed.discard(i)
        elif roll < 0.78:
            c.set_unreliable(rng.random() < 0.5)
        elif roll < 0.84:
            c.set_long_delays(rng.random() < 0.3)
        elif roll < 0.92:
            leader = c.leader()
            if leader is not None:
                with contextlib.suppress(RaftError, ValueError):
                    c.node(leader).transfer_leadership(rng.randrange(n))
        else:
            leader = c.leader()
            c.disconnect(leader if leader is not None else rng.randrange(n))

    def heal_all(self) -> None:
        """Undo every fault: restart crashed nodes, reconnect all, a reliable prompt network."""
        c = self.c
        for i in sorted(self.crashed):
            c.restart(i)
        c.heal()
        c.set_unreliable(False)
        c.set_long_delays(False)
        c.run(2.5)  # let long-delayed messages drain


def _check_recovered(c: SimCluster, seed: int, n: int, hint: str) -> int:
    """Check a healed cluster elects a leader, commits a new entry and converges; its index."""
    try:
        c.check_one_leader(timeout=15.0)
        last = c.one(f"{seed}:final".encode(), n, retry=True)
    except AssertionError as e:
        raise AssertionError(f"no progress after healing: {e}\n  replay: {hint}") from e
    logs = {tuple(c.applied(i)) for i in range(n)}
    if len(logs) != 1:
        raise AssertionError(f"nodes applied different histories after healing\n  replay: {hint}")
    return last


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="raftly fuzz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--seed", type=int, help="run this one seed")
    group.add_argument("--seeds", help="run seeds START:STOP (STOP excluded)")
    parser.add_argument("--duration", type=float, default=30.0, help="virtual seconds of faults")
    args = parser.parse_args(argv)
    if args.seed is not None:
        seeds = range(args.seed, args.seed + 1)
    else:
        start, _, stop = args.seeds.partition(":")
        seeds = range(int(start), int(stop))
    failures = 0
    began = time.perf_counter()
    virtual = 0.0
    for seed in seeds:
        try:
            r = run_seed(seed, args.duration)
        except AssertionError as e:
            failures += 1
            print(f"seed {seed}: FAILED\n{e}", file=sys.stderr)
            continue
        virtual += r.virtual_seconds
        print(f"seed {seed}: ok  nodes={r.nodes} virtual={r.virtual_seconds:.1f}s steps={r.steps} "
              f"messages={r.messages} proposals={r.proposals} committed={r.committed} "
              f"faults={r.faults}")
    elapsed = time.perf_counter() - began
    print(f"{len(seeds) - failures} passed, {failures} failed "
          f"({virtual:.0f} virtual s in {elapsed:.1f} s real)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

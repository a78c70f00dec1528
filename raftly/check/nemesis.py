"""The nemesis: a fault schedule drawn from a seed, and the task that plays it on a cluster.

Two independent timelines run side by side, so faults overlap the way real ones do:

- the network timeline (``partition``): random halves, a majority ring (every node sees a
  majority, no two nodes see the same one) and an isolated leader; each cut is either silent
  (a black hole: dialers time out) or loud (connections reset and refused);
- the process timeline (``kill``, ``pause``): SIGKILL then restart, or SIGSTOP then SIGCONT, of a
  minority of nodes, aimed at the leader half of the time (leaders are where the bugs live).

Each fault holds for a few seconds, then is undone, then a quiet gap lets the cluster recover.
``schedule(seed, ...)`` is a pure function: the same seed gives the same faults at the same
offsets with the same random node choices. Which node *is* the leader is only known at run time
(it is asked through ``/v1/status``); when none is known, the fault falls back on the node the
seed drew, so a replay differs only where the cluster itself behaved differently.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from raftly.check.history import NemesisLog

logger = logging.getLogger("raftly.check.nemesis")

NEMESES = ("partition", "kill", "pause")
PARTITIONS = ("halves", "ring", "isolate-leader")


@dataclass(frozen=True)
class Fault:
    """One planned fault. ``order`` is a seeded permutation of the node names its choices use."""

    at: float
    """Seconds after the start of the run."""
    duration: float
    kind: str
    """``partition``, ``kill`` or ``pause``."""
    mode: str
    """For a partition one of PARTITIONS; for a process fault ``leader`` or ``random``."""
    order: tuple[str, ...]
    count: int = 1
    """How many nodes a process fault hits (always a minority)."""
    cut: str = "drop"
    """How a partition cuts a link: ``drop`` (black hole) or ``reset`` (refuse); see proxy."""


def parse_nemeses(text: str) -> tuple[str, ...]:
    """``"partition,kill"`` -> ("partition", "kill"); ``""`` or ``"none"`` -> ()."""
    if text.strip() in ("", "none"):
        return ()
    names = tuple(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    unknown = [n for n in names if n not in NEMESES]
    if unknown:
        raise ValueError(f"unknown nemesis {', '.join(unknown)} (choose from "
                         f"{', '.join(NEMESES)})")
    return names


def schedule(seed: int, nodes: Sequence[str], duration: float, nemeses: Sequence[str], *,
             hold: tuple[float, float] = (2.0, 5.0), gap: tuple[float, float] = (1.0, 3.0)
             ) -> list[Fault]:
    """The faults of a run of ``duration`` seconds, sorted by start time."""
    rng = random.Random(f"raftly-nemesis:{seed}")
    names = list(nodes)
    faults: list[Fault] = []
    minority = max(1, (len(names) - 1) // 2)
    timelines = []
    if "partition" in nemeses:
        timelines.append(["partition"])
    process = [k for k in ("kill", "pause") if k in nemeses]
    if process:
        timelines.append(process)
    for kinds in timelines:
        t = rng.uniform(*gap)
        while t < duration - 1.0:
            d = min(rng.uniform(*hold), duration - t)
            kind = rng.choice(kinds)
            order = tuple(rng.sample(names, len(names)))
            cut = "drop"
            if kind == "partition":
                mode = rng.choice(PARTITIONS)
                count = 0
                cut = rng.choice(("drop", "reset"))
            else:
                mode = "leader" if rng.random() < 0.5 else "random"
                count = rng.randint(1, minority)
            faults.append(Fault(round(t, 3), round(d, 3), kind, mode, order, count, cut))
            t += d + rng.uniform(*gap)
    return sorted(faults, key=lambda f: (f.at, f.kind))


def partition_groups(mode: str, order: Sequence[str], leader: str | None
                     ) -> dict[str, set[str]]:
    """Who sees whom (always symmetric) for a partition ``mode``; ``order`` is the seeded draw."""
    names = list(order)
    n = len(names)
    sees: dict[str, set[str]] = {}
    if mode == "halves":
        a, b = set(names[: n // 2]), set(names[n // 2:])
        for x in a:
            sees[x] = a
        for x in b:
            sees[x] = b
    elif mode == "ring":
        majority = n // 2 + 1
        reach = majority // 2  # neighbours on each side: 2 * reach + 1 >= majority
        if 2 * reach + 1 >= n:
            # Too few nodes for a proper ring (3): a line, where the two ends see different
            # majorities through the middle node.
            for i, x in enumerate(names):
                sees[x] = {names[j] for j in range(max(0, i - 1), min(n, i + 2))}
        else:
            for i, x in enumerate(names):
                sees[x] = {names[(i + k) % n] for k in range(-reach, reach + 1)}
    elif mode == "isolate-leader":
        lonely = leader if leader in names else names[0]
        rest = set(names) - {lonely}
        for x in rest:
            sees[x] = rest
        sees[lonely] = {lonely}
    else:
        raise ValueError(f"unknown partition mode {mode!r}")
    return sees


def process_targets(fault: Fault, leader: str | None) -> list[str]:
    order = list(fault.order)
    if fault.mode == "leader" and leader in order:
        assert leader is not None
        order.remove(leader)
        order.insert(0, leader)
    return order[: fault.count]


class Target:
    """What the nemesis acts on; the runner implements it over the proxies and processes."""

    def apply_view(self, sees: dict[str, set[str]], cut: str) -> None: ...
    def heal_network(self) -> None: ...
    def kill(self, name: str) -> None: ...
    def restart(self, name: str) -> None: ...
    def pause(self, name: str) -> None: ...
    def resume(self, name: str) -> None: ...


class Nemesis:
    """Plays a schedule against ``target``, logging each fault's window to ``log``."""

    def __init__(self, faults: list[Fault], target: Target, log: NemesisLog,
                 find_leader: Callable[[], Awaitable[str | None]]) -> None:
        self.faults = faults
        self.target = target
        self.log = log
        self.find_leader = find_leader
        self.killed: set[str] = set()
        self.paused: set[str] = set()

    async def run(self) -> None:
        """Play every fault (each timeline in its own task); returns when all have ended."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        by_line: dict[str, list[Fault]] = {}
        for f in self.faults:
            by_line.setdefault("net" if f.kind == "partition" else "proc", []).append(f)
        tasks = [asyncio.create_task(self._line(faults, t0)) for faults in by_line.values()]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _line(self, faults: list[Fault], t0: float) -> None:
        loop = asyncio.get_running_loop()
        for fault in faults:
            await asyncio.sleep(max(0.0, t0 + fault.at - loop.time()))
            await self._play(fault)

    async def _play(self, fault: Fault) -> None:
        leader = await self.find_leader()
        if fault.kind == "partition":
            sees = partition_groups(fault.mode, fault.order, leader)
            groups = sorted({tuple(sorted(v)) for v in sees.values()})
            fid = self.log.start("partition", {"mode": fault.mode, "cut": fault.cut,
                                               "leader": leader,
                                               "sees": {k: sorted(v) for k, v in sees.items()},
                                               "groups": [list(g) for g in groups]})
            self.target.apply_view(sees, fault.cut)
            try:
                await asyncio.sleep(fault.duration)
            finally:
                self.target.heal_network()
                self.log.end(fid, "partition")
            return
        targets = process_targets(fault, leader)
        fid = self.log.start(fault.kind, {"nodes": targets, "mode": fault.mode,
                                          "leader": leader})
        try:
            for name in targets:
                if fault.kind == "kill":
                    self.killed.add(name)
                    self.target.kill(name)
                else:
                    self.paused.add(name)
                    self.target.pause(name)
            await asyncio.sleep(fault.duration)
        finally:
            for name in targets:
                if fault.kind == "kill":
                    self.target.restart(name)
                    self.killed.discard(name)
                else:
                    self.target.resume(name)
                    self.paused.discard(name)
            self.log.end(fid, fault.kind)

    def heal_all(self) -> None:
        """Undo everything (used at the end and on errors): network, pauses, kills."""
        self.target.heal_network()
        for name in sorted(self.paused):
            self.target.resume(name)
        for name in sorted(self.killed):
            self.target.restart(name)
        self.paused.clear()
        self.killed.clear()


__all__ = ["NEMESES", "PARTITIONS", "Fault", "Nemesis", "Target", "parse_nemeses",
           "partition_groups", "process_targets", "schedule"]

"""The nemesis: a fault schedule drawn from a seed, and the task that plays it on a cluster.

Two independent timelines run side by side, so faults overlap the way real ones do:

- the network timeline (``partition``): random halves, a majority ring (every node sees a
  majority, no two nodes see the same one) and an isolated leader; each cut is either silent
  (a black hole: dialers time out) or loud (connections reset and refused);
- the process timeline (``kill``, ``pause``, ``powerloss``): SIGKILL then restart, or SIGSTOP
  then SIGCONT, of a minority of nodes, aimed at the leader half of the time (leaders are where
  the bugs live); or a power loss: SIGKILL, then the nodes' disks forget what was not fsynced
  (a lazy file system, ``raftly.check.disks``), then a restart, of one node, the leader or
  every node at once. With ``powerloss``, the timeline's last fault is a power loss of every
  node held to the end of the run, so that the final reads check what the disks kept of the
  writes acknowledged just before it. A node that does not start again after a power loss
  fails the run;
- the membership timeline (``membership``): add a node, remove one, or replace the leader (add
  a node, transfer the lead to it once promoted, remove the old leader), keeping the cluster
  between 3 voters and its start size + 2. The schedule plans within those bounds; the run
  checks them again (a change that failed leaves the size where it was).

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
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from raftly.check.history import NemesisLog

logger = logging.getLogger("raftly.check.nemesis")

NEMESES = ("partition", "kill", "pause", "powerloss", "membership")
POWER_MODES = ("random", "leader", "all")
"""Whom a power loss hits: one node drawn by the seed, the leader, or every node."""
PARTITIONS = ("halves", "ring", "isolate-leader")
MEMBERSHIP_OPS = ("add", "remove", "replace-leader")
MIN_VOTERS = 3
"""The membership nemesis never removes below this many members (nor from a smaller cluster)."""
MAX_GROWTH = 2
"""... nor adds beyond the start size plus this many."""


@dataclass(frozen=True)
class Fault:
    """One planned fault. ``order`` is a seeded permutation of the node names its choices use."""

    at: float
    """Seconds after the start of the run."""
    duration: float
    kind: str
    """``partition``, ``kill``, ``pause``, ``powerloss`` or ``membership``."""
    mode: str
    """For a partition one of PARTITIONS; for a process fault ``leader`` or ``random`` (a power
    loss also ``all``); for a membership change one of MEMBERSHIP_OPS."""
    order: tuple[str, ...]
    count: int = 1
    """How many nodes a process fault hits (always a minority)."""
    cut: str = "drop"
    """How a partition cuts a link: ``drop`` (black hole) or ``reset`` (refuse); see proxy."""
    pick: float = 0.0
    """For a ``remove``: which member goes, as a fraction of the sorted eligible members (the
    members are only known at run time)."""


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
    process = [k for k in ("kill", "pause", "powerloss") if k in nemeses]
    if process:
        timelines.append(process)
    for kinds in timelines:
        first = len(faults)
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
            elif kind == "powerloss":
                mode = rng.choice(POWER_MODES)
                count = len(names) if mode == "all" else 1
            else:
                mode = "leader" if rng.random() < 0.5 else "random"
                count = rng.randint(1, minority)
            faults.append(Fault(round(t, 3), round(d, 3), kind, mode, order, count, cut))
            t += d + rng.uniform(*gap)
        if "powerloss" in kinds and len(faults) > first:
            # The run ends with every node losing power, writes in flight: the final reads
            # then check what the disks kept of every write acknowledged since the last flush.
            last = faults.pop()
            faults.append(Fault(last.at, round(duration - last.at, 3), "powerloss", "all",
                                last.order, len(names)))
    if "membership" in nemeses:
        # Drawn last, so that adding it leaves the other timelines' faults as they were.
        faults += _membership_schedule(rng, len(names), duration, hold, gap)
    return sorted(faults, key=lambda f: (f.at, f.kind))


def allowed_changes(size: int, start: int) -> list[str]:
    """The membership changes a cluster of ``size`` members (started with ``start``) may make."""
    ops = []
    grow = size < start + MAX_GROWTH
    if grow:
        ops.append("add")
    if size > MIN_VOTERS:
        ops.append("remove")
    if grow and size >= MIN_VOTERS:
        ops.append("replace-leader")  # one more member for a moment, then back to ``size``
    return ops


def _membership_schedule(rng: random.Random, start: int, duration: float,
                         hold: tuple[float, float], gap: tuple[float, float]) -> list[Fault]:
    """Membership changes, each followed by a settling hold and a gap; a change takes seconds
    itself (a node starting and catching up), so they are spaced wider than other faults."""
    faults = []
    size = start
    t = rng.uniform(*gap) + 1.0
    while t < duration - 2.0:
        ops = allowed_changes(size, start)
        if not ops:
            break
        op = rng.choice(ops)
        size += {"add": 1, "remove": -1}.get(op, 0)
        settle = min(rng.uniform(*hold), duration - t)
        faults.append(Fault(round(t, 3), round(settle, 3), "membership", op, (), 0,
                            pick=round(rng.random(), 6)))
        t += faults[-1].duration + 2 * rng.uniform(*gap)
    return faults


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


def process_targets(fault: Fault, leader: str | None, eligible: Sequence[str] | None = None
                    ) -> list[str]:
    """The nodes a process fault hits: the seeded order (leader first in ``leader`` mode), among
    ``eligible`` when given (members not being changed; nodes added during the run come after
    the seeded ones), at most a minority of them; every one of them in ``all`` mode."""
    order = list(fault.order)
    count = fault.count
    if eligible is not None:
        order = [n for n in order if n in eligible] + sorted(set(eligible) - set(order))
        count = min(count, max(1, (len(eligible) - 1) // 2))
    if fault.mode == "all":
        return order
    if fault.mode == "leader" and leader in order:
        assert leader is not None
        order.remove(leader)
        order.insert(0, leader)
    return order[:count]


class Target:
    """What the nemesis acts on; the runner implements it over the proxies and processes."""

    def apply_view(self, sees: dict[str, set[str]], cut: str) -> None: ...
    def heal_network(self) -> None: ...
    def kill(self, name: str) -> None: ...
    def restart(self, name: str) -> None: ...
    def pause(self, name: str) -> None: ...
    def resume(self, name: str) -> None: ...

    def power_loss(self, names: Sequence[str]) -> None:
        """Drop what the (killed) nodes ``names`` had not fsynced."""

    async def restarted(self, name: str) -> str | None:
        """Once ``name`` was started again: None when it answers, else why not (with its last
        log lines)."""
        return None

    # The membership nemesis: each raises MembershipProblem when a node misbehaves.
    def members(self) -> list[str]:
        """The current members, by name."""
        return []

    async def add_member(self) -> str:
        """Start a new node that joins; return its name once it is a voter."""
        raise NotImplementedError

    async def remove_member(self, name: str) -> None:
        """Remove ``name`` through the API and wait for its process to exit."""
        raise NotImplementedError

    async def transfer_leader(self, to: str) -> str | None:
        """Move the lead to ``to``; None when done, else why not (not a problem in itself)."""
        raise NotImplementedError


class MembershipProblem(Exception):
    """A node failed to join, or did not exit after its removal (the message says which, with
    its last log lines): the run fails."""


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
        self.changing: set[str] = set()
        """Nodes a membership change is adding or removing: process faults leave them alone."""
        self.start_size = len(target.members())
        self.problems: list[str] = []
        self.failed_restarts: set[str] = set()
        """Nodes that did not start again after a power loss (already in ``problems``)."""
        self.restarting: set[str] = set()
        """Nodes started again after a power loss, not yet seen answering."""

    async def run(self) -> None:
        """Play every fault (each timeline in its own task); returns when all have ended."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        by_line: dict[str, list[Fault]] = {}
        lines = {"partition": "net", "membership": "members"}
        for f in self.faults:
            by_line.setdefault(lines.get(f.kind, "proc"), []).append(f)
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
        if fault.kind == "membership":
            # A change half made is left to finish (each step is bounded), so that no node is
            # left joining or leaving when the run heals and reads.
            change = asyncio.ensure_future(self._change(fault, leader))
            try:
                await asyncio.shield(change)
            except asyncio.CancelledError:
                await change
                raise
            await asyncio.sleep(fault.duration)
            return
        members = self.target.members()
        eligible = [n for n in members if n not in self.changing] if members else None
        targets = process_targets(fault, leader, eligible)
        fid = self.log.start(fault.kind, {"nodes": targets, "mode": fault.mode,
                                          "leader": leader})
        held = False
        began = time.monotonic()
        try:
            for name in targets:
                if fault.kind == "pause":
                    self.paused.add(name)
                    self.target.pause(name)
                else:
                    self.killed.add(name)
                    self.target.kill(name)
            if fault.kind == "powerloss":
                # Every writer is dead (kill waits for the exit): the disks may forget now.
                killed = time.monotonic()
                try:
                    self.target.power_loss(targets)
                except OSError as exc:  # a lazy file system died under its node
                    self.problems.append(f"power loss of {', '.join(targets)} failed: {exc}")
                logger.info("power loss of %s: killed in %.2fs, disks dropped in %.2fs",
                            ",".join(targets), killed - began, time.monotonic() - killed)
            await asyncio.sleep(fault.duration)
            held = True
        finally:
            for name in targets:
                if fault.kind == "pause":
                    self.target.resume(name)
                    self.paused.discard(name)
                else:
                    self.target.restart(name)
                    self.killed.discard(name)
            if fault.kind == "powerloss":
                self.restarting.update(targets)
            if fault.kind != "powerloss" or not held:
                # A power loss cut short by the end of the run: ``check_restarts`` after it.
                self.log.end(fid, fault.kind)
        if fault.kind == "powerloss":
            restarted = None
            try:
                restarted = await self._restarted(targets)
            finally:
                self.log.end(fid, fault.kind, restarted)

    async def check_restarts(self) -> None:
        """After the run: wait for the nodes whose restart after a power loss was not checked
        yet (the run ended first)."""
        if self.restarting:
            self.log.note("powerloss", await self._restarted(sorted(self.restarting)))

    async def _restarted(self, names: Sequence[str]) -> dict[str, object]:
        """Wait for nodes started again after a power loss; one that does not answer is a
        problem of the run (with its last log lines)."""
        why = await asyncio.gather(*(self.target.restarted(n) for n in names))
        failed = {n: w for n, w in zip(names, why, strict=True) if w is not None}
        self.restarting.difference_update(names)
        self.failed_restarts.update(failed)
        self.problems += failed.values()
        return {"restarted": [n for n in names if n not in failed],
                **({"failed": sorted(failed)} if failed else {})}

    async def _change(self, fault: Fault, leader: str | None) -> None:
        members = self.target.members()
        steady = [n for n in members
                  if n not in self.killed | self.paused | self.changing]
        op = fault.mode
        why = None
        if op not in allowed_changes(len(members), self.start_size):
            why = f"{len(members)} members"
        elif op == "replace-leader" and leader not in steady:
            why = "no steady leader"
        elif op == "remove" and not steady:
            why = "no steady member"
        if why is not None:
            self.log.note("membership", {"op": op, "skipped": why, "members": members})
            return
        info: dict[str, object] = {"op": op, "leader": leader, "members": members}
        fid = self.log.start("membership", info)
        result: dict[str, object] = {}
        try:
            if op == "remove":
                victim = sorted(steady)[int(fault.pick * len(steady))]
                result["removed"] = victim
                await self._remove(victim)
            else:
                result["added"] = await self.target.add_member()
                if op == "replace-leader":
                    assert leader is not None
                    self.changing.add(leader)
                    why = await self.target.transfer_leader(str(result["added"]))
                    result["transfer"] = why or "done"
                    result["removed"] = leader
                    await self._remove(leader)
        except MembershipProblem as exc:
            result["problem"] = str(exc).splitlines()[0]
            self.problems.append(str(exc))
        finally:
            result["members"] = self.target.members()
            self.log.end(fid, "membership", result)

    async def _remove(self, name: str) -> None:
        self.changing.add(name)
        try:
            await self.target.remove_member(name)
        finally:
            self.changing.discard(name)

    def heal_all(self) -> None:
        """Undo everything (used at the end and on errors): network, pauses, kills."""
        self.target.heal_network()
        for name in sorted(self.paused):
            self.target.resume(name)
        for name in sorted(self.killed):
            self.target.restart(name)
        self.paused.clear()
        self.killed.clear()


__all__ = ["MAX_GROWTH", "MEMBERSHIP_OPS", "MIN_VOTERS", "NEMESES", "PARTITIONS", "POWER_MODES",
           "Fault",
           "MembershipProblem", "Nemesis", "Target", "allowed_changes", "parse_nemeses",
           "partition_groups", "process_targets", "schedule"]

"""Randomized fault schedules for ``SimCluster``: partitions, crashes, restarts, drops, delays.

One seed fixes everything: the cluster size, its configuration (message size limits, in-flight
window, heartbeat and election timeouts, pre-vote and check-quorum, disk latency, snapshots), the
schedule of faults and proposals, and the network's behaviour. About a third of the seeds take
snapshots every few applied entries, so that nodes compact their logs, restart from snapshots
and bring far-behind followers up with InstallSnapshot. About a third change the membership as
they go: nodes join (as learners the leader promotes once caught up, or that stay learners) and
members are removed, the leader included, among the faults. A run checks every safety property
after every step (the simulator does), then heals the cluster and checks that it makes progress
and that every member converges.

Varying the configuration is what exercises each guard on its own: a leader's whole log in one
AppendEntries hides bugs that split appends expose, and a guard only one setting reaches is a
guard the suite does not test. ``--fixed-config`` runs every seed with the default ``Config``
instead, as the fuzzer did before it drew configurations, so that old seeds still replay.

Replay one seed: ``python -m raftly.testing.fuzz --seed 17``; sweep: ``--seeds 0:1000``.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import time
from dataclasses import dataclass, field

from raftly.core.config import Config
from raftly.core.errors import RaftError
from raftly.progress import ProgressLine, add_progress_option, counting_line
from raftly.testing.safety import SafetyViolation
from raftly.testing.sim import SimCluster

_DEFAULT = Config()
_SLOWEST_DISK = (0.001, 0.3)
_DISKS: tuple[tuple[float, float] | None, ...] = (
    None, (0.0001, 0.002), (0.0005, 0.05), _SLOWEST_DISK)
"""Instant saves, or saves that take a uniform random time in (lo, hi) seconds."""


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
    setup: str
    """The drawn configuration, as ``describe_setup`` prints it."""
    changes: int = 0
    """Membership changes a leader accepted."""


def replay_command(seed: int, duration: float, fixed_config: bool = False) -> str:
    fixed = " --fixed-config" if fixed_config else ""
    return f"python -m raftly.testing.fuzz --seed {seed} --duration {duration:g}{fixed}"


def draw_config(seed: int, disk: tuple[float, float] | None) -> Config:
    """The cluster configuration of ``seed``, drawn from the seed alone.

    Each knob is drawn on its own, often at its default, so that a failure points at one.
    Only combinations a deployment could run are drawn. Every one keeps Raft safe: ReadIndex
    confirms each read with a heartbeat round, never a lease, so check-quorum off is safe. Two
    are tied to the disk, for liveness only: the election timeout stays at least three times
    the slowest save, as an election waits on two (the candidate's and its voters'); and with
    the slowest disk the in-flight window keeps its default, as a follower that persists one
    small message per save would catch up at a few entries per second, slower than the
    recovery check after healing allows.
    """
    # Its own stream, so the schedule's draws are those of --fixed-config for the same seed.
    rng = random.Random(f"fuzz/{seed}/config")
    tick = _DEFAULT.tick_interval
    election_ticks = rng.choice((15, 50, 50, 75, 75))
    if disk is not None:
        election_ticks = max(election_ticks, round(3 * disk[1] / tick))
    # A heartbeat every tick or two would cost up to twice the run for no guard that one every
    # three ticks does not reach; a short election timeout is where churn comes from.
    heartbeat_ticks = max(3, election_ticks // rng.choice((2, 3, 5, 10)))
    pre_vote = rng.random() < 0.7
    check_quorum = rng.random() < 0.7
    max_entries = rng.choice((1, 2, 3, 8) + (_DEFAULT.max_entries_per_message,) * 3)
    max_bytes = rng.choice((1, 16, 64) + (_DEFAULT.max_bytes_per_message,) * 3)
    inflight = rng.choice((1, 2, 4, _DEFAULT.max_inflight_messages))
    if disk == _SLOWEST_DISK:
        inflight = _DEFAULT.max_inflight_messages
    return Config(
        tick_interval=tick,
        heartbeat_interval=heartbeat_ticks * tick,
        election_timeout=election_ticks * tick,
        pre_vote=pre_vote,
        check_quorum=check_quorum,
        max_entries_per_message=max_entries,
        max_bytes_per_message=max_bytes,
        max_inflight_messages=inflight,
    )


def draw_snapshot_every(seed: int) -> int | None:
    """How often the nodes of ``seed`` snapshot (None: never), drawn from the seed alone.

    Its own stream, so seeds without snapshots run exactly as they did before snapshots.
    Small values, so that followers fall behind the log start and need InstallSnapshot.
    """
    rng = random.Random(f"fuzz/{seed}/snapshots")
    return rng.choice((2, 3, 5, 10, 25)) if rng.random() < 0.35 else None


def draw_membership(seed: int) -> random.Random | None:
    """The stream of membership changes of ``seed``, or None if it keeps its first members.

    Its own stream, drawn from the seed alone, so that seeds without changes run exactly as
    they did before membership changes existed.
    """
    rng = random.Random(f"fuzz/{seed}/membership")
    return rng if rng.random() < 0.3 else None


def describe_setup(config: Config, disk: tuple[float, float] | None,
                   snapshot_every: int | None = None, membership: bool = False) -> str:
    """One line naming every drawn knob, for the seed's report."""
    disk_text = "instant" if disk is None else f"{disk[0]:g}-{disk[1]:g}s"
    snapshots = "off" if snapshot_every is None else f"every-{snapshot_every}"
    return (f"entries={config.max_entries_per_message} bytes={config.max_bytes_per_message} "
            f"inflight={config.max_inflight_messages} heartbeat={config.heartbeat_ticks}t "
            f"election={config.election_ticks}t pre-vote={_on(config.pre_vote)} "
            f"check-quorum={_on(config.check_quorum)} disk={disk_text} snapshots={snapshots}"
            + (" membership=on" if membership else ""))


def _on(flag: bool) -> str:
    return "on" if flag else "off"


def run_seed(seed: int, duration: float = 30.0, fixed_config: bool = False) -> FuzzResult:
    """Run one randomized schedule of ``duration`` virtual seconds, then heal and check progress.

    With ``fixed_config`` the cluster runs the default ``Config`` rather than one drawn from
    the seed. Raises ``SafetyViolation`` (or ``AssertionError`` for lost liveness after healing)
    with the command that replays the seed.
    """
    rng = random.Random(f"fuzz/{seed}")
    n = rng.choice((3, 5))
    # Instant saves, or saves that take time (node keeps stepping meanwhile; a crash loses the
    # save under way), up to a disk slower than the election timeout.
    disk = rng.choice(_DISKS)
    config = _DEFAULT if fixed_config else draw_config(seed, disk)
    snapshot_every = None if fixed_config else draw_snapshot_every(seed)
    membership = None if fixed_config else draw_membership(seed)
    setup = describe_setup(config, disk, snapshot_every, membership is not None)
    hint = f"{replay_command(seed, duration, fixed_config)}  ({setup})"
    c = SimCluster(n=n, seed=seed, config=config, replay_hint=hint, disk_latency=disk,
                   snapshot_every=snapshot_every)
    schedule = _Schedule(c, rng, membership)
    while c.now < duration:
        schedule.step()
    schedule.heal_all()
    last = _check_recovered(c, hint)
    return FuzzResult(seed, n, c.now, c.steps, c.message_count(), schedule.proposals, last,
                      schedule.faults, setup, schedule.changes)


@dataclass(slots=True)
class _Schedule:
    """The random load and faults one seed puts on its cluster, and counts of what it did.

    Every choice comes from ``rng`` in a fixed order, so one seed always gives the same run.
    """

    c: SimCluster
    rng: random.Random
    membership: random.Random | None = None
    """Draws the membership changes (None: none), apart from ``rng`` so that the rest of a
    schedule without changes is what it always was."""
    proposals: int = 0
    changes: int = 0
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
        if self.membership is not None and self.membership.random() < 0.1:
            self._change(self.membership)

    def _change(self, rng: random.Random) -> None:
        """Add a node (up to 7 members) or remove one (keeping 2 voters): whatever the leader
        accepts; a change refused (no leader, one in flight, ...) is simply not made."""
        c = self.c
        conf = c.committed_conf()
        with contextlib.suppress(RaftError):
            if len(conf.ids) < 7 and (len(conf.voters) <= 2 or rng.random() < 0.5):
                c.add_node(promote=rng.random() < 0.85)
            elif len(conf.voters) > 2:
                c.remove_node(rng.choice(sorted(conf.ids)))
            else:
                return
            self.changes += 1

    def _load(self) -> None:
        c, rng, n = self.c, self.rng, self.c.n
        i = rng.randrange(n)
        if c.alive(i):
            for _ in range(rng.randint(1, 10)):
                self.proposals += 1
                c.start(i, f"{c.seed}:{self.proposals}".encode())
        # Reads on every live node, each checked not to be stale when its index arrives.
        self.reads += 1
        for j in range(n):
            if c.alive(j):
                with contextlib.suppress(RaftError):
                    c.read_index(j, f"read:{self.reads}".encode())

    def _fault(self) -> None:
        c, rng, n = self.c, self.rng, self.c.n
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


def _check_recovered(c: SimCluster, hint: str) -> int:
    """Check a healed cluster elects a leader, commits a new entry and converges; its index."""
    try:
        members = sorted(c.node(c.check_one_leader(timeout=15.0)).conf.ids)
        last = c.one(f"{c.seed}:final".encode(), len(members), retry=True)
    except SafetyViolation:
        raise  # a broken property while recovering is that, not a lack of progress
    except AssertionError as e:
        raise AssertionError(f"no progress after healing: {e}\n  replay: {hint}") from e
    # Every command each member's state machine holds, whether applied one by one or restored.
    logs = {tuple(c.commands(i)) for i in members}
    if len(logs) != 1:
        raise AssertionError(f"nodes applied different histories after healing\n  replay: {hint}")
    return last


PROGRESS_HELP = """\
progress:
  On a terminal, a line on stderr counts the seeds done out of the total, the failures so far,
  the time elapsed and an estimate of the time left, below the seed lines; it is erased at the
  end. Nothing is drawn when stderr is not a terminal (--progress / --no-progress override).
  The last line on stdout is the summary: "N passed, M failed (... virtual s in ... s real)".
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="raftly fuzz", description=__doc__,
                                     epilog=PROGRESS_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--seed", type=int, help="run this one seed")
    group.add_argument("--seeds", help="run seeds START:STOP (STOP excluded)")
    parser.add_argument("--duration", type=float, default=30.0, help="virtual seconds of faults")
    parser.add_argument("--fixed-config", action="store_true",
                        help="run the default Config instead of one drawn from each seed "
                             "(replays seeds found before configurations were drawn)")
    add_progress_option(parser)
    args = parser.parse_args(argv)
    if args.seed is not None:
        seeds = range(args.seed, args.seed + 1)
    else:
        start, _, stop = args.seeds.partition(":")
        seeds = range(int(start), int(stop))
    with ProgressLine(enabled=args.progress) as progress:
        return _sweep(seeds, args.duration, args.fixed_config, progress)


def _sweep(seeds: range, duration: float, fixed_config: bool, progress: ProgressLine) -> int:
    """Run ``seeds`` one after the other, a line per seed and a summary line; the exit status."""
    failures = 0
    began = time.perf_counter()
    virtual = 0.0
    for done, seed in enumerate(seeds):
        # The pace is wall-clock time: this line reports to a person, never to the simulation.
        progress.update(counting_line(
            "fuzz", done, len(seeds), "seeds", elapsed=time.perf_counter() - began,
            fields=[f"{failures} failed"]) + f" | seed {seed}")
        try:
            r = run_seed(seed, duration, fixed_config)
        except AssertionError as e:
            failures += 1
            progress.echo(f"seed {seed}: FAILED\n{e}", file=sys.stderr)
            continue
        virtual += r.virtual_seconds
        progress.echo(f"seed {seed}: ok  nodes={r.nodes} virtual={r.virtual_seconds:.1f}s "
                      f"steps={r.steps} messages={r.messages} proposals={r.proposals} "
                      f"committed={r.committed} faults={r.faults} changes={r.changes} "
                      f"{r.setup}")
    elapsed = time.perf_counter() - began
    progress.close()
    print(f"{len(seeds) - failures} passed, {failures} failed "
          f"({virtual:.0f} virtual s in {elapsed:.1f} s real)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

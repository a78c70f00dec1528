"""``raftly check``: run a real cluster under faults, record the history, check it, report.

One run, in order:

1. plan N nodes on loopback, start a proxy for every directed link (``proxy``), write each node
   its own cluster file pointing at those proxies, and start the node processes (``cluster``);
2. wait for a leader, then run the clients (``clients``) and the nemesis (``nemesis``) together
   for ``--time`` seconds, recording ``history.jsonl`` and ``nemesis.jsonl`` (``history``);
3. heal the network, resume paused nodes, restart killed ones, wait for the cluster to recover
   and read every key once more (the final reads, also part of the history);
4. check the history per key (``raftly.testing.linearizability``), check that no acknowledged
   write is missing from the final state, and write ``report.html`` (``report``).

With ``--nemesis powerloss`` every node's data dir is a lazy file system (``disks``), mounted
before the nodes start and unmounted after they stop, on every way out of the run.

The exit status is 0 only when every key is linearizable, no write was lost, every final read
succeeded, no node crashed on its own and every node started again after each power loss; 1
otherwise; 2 when the run itself could not be made
(bad arguments, a cluster that never elected a leader).

``raftly check --history FILE`` skips the run and checks a history recorded elsewhere.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import shutil
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from raftly.check.clients import ClientPool, Workload
from raftly.check.cluster import Timing, check_cluster, node_view
from raftly.check.disks import DiskError, LazyDisks
from raftly.check.history import HistoryWriter, NemesisLog
from raftly.check.leased import LeaseRounds, check_gone
from raftly.check.membership import ClusterMembers
from raftly.check.nemesis import Nemesis, parse_nemeses, schedule
from raftly.check.progress import UNDER_FAULTS, RunProgress
from raftly.check.proxy import Network
from raftly.check.report import format_reasons, reason_counts, write_report
from raftly.cli.common import add_log_format_option
from raftly.kv.cluster_file import ClusterSpec
from raftly.kv.protocol import MEMBERS_PATH
from raftly.localcluster import ProcessCluster, plan_loopback
from raftly.progress import ProgressLine, add_progress_option, clock_time
from raftly.testing.history import Event, pair_events
from raftly.testing.lazyfs.mount import Mode

logger = logging.getLogger("raftly.check")


class SetupError(Exception):
    """The run could not be made (as opposed to a run that found a problem)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="raftly check",
        description="Run a real raftly KV cluster under network and process faults, record "
                    "every client operation, and check that the history is linearizable and "
                    "that no acknowledged write was lost. With --history, only check a "
                    "history file (JSON lines, Jepsen model).",
        epilog="On a terminal, a progress line on stderr shows the phase of the run, the time "
               "done out of --time under faults, the ops done so far (ok, fail, info), the "
               "faults injected so far and the time elapsed; it is erased before the results. "
               "Nothing is drawn when stderr is not a terminal (--progress / --no-progress "
               "override). The last line of a run is its summary: PASS or FAIL, its time, ops, "
               "faults, verdict, lost writes, problems and the report's path.")
    p.add_argument("--nodes", type=int, default=5, help="cluster size (default 5)")
    p.add_argument("--time", type=float, default=60.0, metavar="SECONDS",
                   help="how long clients and faults run (default 60)")
    p.add_argument("--clients", type=int, default=10, help="concurrent clients (default 10)")
    p.add_argument("--keys", type=int, default=8, help="number of keys (default 8)")
    p.add_argument("--workload", choices=("kv", "txn"), default="kv",
                   help="kv: reads, writes and compare-and-sets of /v1/kv (default); txn: the "
                        "same ops as POST /v1/txn, the writes attached to a lease, plus short "
                        "leases (1 s, never kept alive) whose keys must vanish at expiry: each "
                        "expiry is checked as a delete at an unknown time between grant + TTL "
                        "and the moment the lease is seen gone")
    p.add_argument("--nemesis", default="partition,kill,pause",
                   help="comma-separated faults: partition, kill, pause, powerloss (SIGKILL "
                        "one node, the leader or all, drop what their disks had not fsynced, "
                        "restart them; each data dir is on a lazy FUSE file system, which needs "
                        "/dev/fuse, fuse3 and raftly[check]), membership (add a node, remove "
                        "one, replace the leader); 'none' for none (default: "
                        "partition,kill,pause)")
    p.add_argument("--lazyfs-mode", choices=("lazy", "strict"), default="strict",
                   help="with powerloss: strict (a power loss forgets unsynced file data, and "
                        "the creates, renames and unlinks whose directory was not fsynced) or "
                        "lazy (only the file data, as LazyFS); see docs/lazyfs.md (default "
                        "strict: it models more, and raftly's storage keeps to it)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the fault schedule and the workload (default: random, printed)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="where history.jsonl, nemesis.jsonl, report.html, node logs and data go "
                        "(default ./raftly-check/SEED)")
    p.add_argument("--rate", type=float, default=100.0,
                   help="offered operations per second over all clients (default 100)")
    p.add_argument("--op-timeout", type=float, default=1.5, metavar="SECONDS",
                   help="deadline of each operation (default 1.5)")
    p.add_argument("--fsync", choices=("always", "never"), default="always",
                   help="the nodes' fsync policy (default always)")
    p.add_argument("--snapshot-entries", type=int, default=None, metavar="N",
                   help="the nodes snapshot every N applied entries and keep N behind (default: "
                        "raftly serve's 10000); a small N makes faults meet compaction and "
                        "InstallSnapshot")
    p.add_argument("--check-budget", type=float, default=60.0, metavar="SECONDS",
                   help="time the linearizability search may take (default 60); keys left "
                        "undecided are reported unknown, which fails the run")
    add_log_format_option(p, "the nodes' logs (in OUT/logs): ")
    p.add_argument("--tls", action="store_true",
                   help="run the nodes with TLS on both ports (certificates made in "
                        "OUT/certs); the clients speak https and the proxies pass TLS through")
    p.add_argument("--history", type=Path, default=None, metavar="FILE",
                   help="check this history file instead of running a cluster")
    # Test-only: nodes serve GETs from local state without ReadIndex, a deliberately broken
    # build the harness must catch. Hidden from --help on purpose.
    p.add_argument("--unsafe-stale-reads", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("-v", "--verbose", action="store_true", help="log the runner's steps")
    add_progress_option(p)
    return p


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop the nodes and the proxies.
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    """Entry point of ``raftly check``; returns the exit status."""
    args = build_parser().parse_args(argv)
    on_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if on_main else None
    try:
        with ProgressLine(enabled=args.progress) as progress:  # erased on the way out
            return _main(args, progress)
    except KeyboardInterrupt:
        print("raftly check: interrupted; nodes and proxies stopped", file=sys.stderr)
        return 130
    finally:
        if on_main:
            signal.signal(signal.SIGTERM, previous)


def _main(args: argparse.Namespace, progress: ProgressLine) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    progress.clear_before_logging()
    try:
        if args.history is not None:
            return check_file(args.history, args.out, args.check_budget, progress=progress)
        if (args.nodes < 1 or args.clients < 1 or args.keys < 1 or args.time <= 0
                or (args.snapshot_entries is not None and args.snapshot_entries < 1)):
            raise SetupError("--nodes, --clients, --keys, --time and --snapshot-entries must be "
                             "positive")
        try:
            nemeses = parse_nemeses(args.nemesis)
        except ValueError as exc:
            raise SetupError(str(exc)) from None
        if "powerloss" in nemeses and "membership" in nemeses:
            raise SetupError("powerloss and membership cannot be combined (a node added during "
                             "the run would have no lazy disk)")
        seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
        out = args.out or Path("raftly-check") / str(seed)
        return asyncio.run(run(out, nodes=args.nodes, duration=args.time, clients=args.clients,
                               keys=args.keys, nemeses=nemeses, seed=seed, rate=args.rate,
                               op_timeout=args.op_timeout, fsync=args.fsync,
                               budget=args.check_budget,
                               unsafe_stale_reads=args.unsafe_stale_reads,
                               snapshot_entries=args.snapshot_entries, tls=args.tls,
                               txn=args.workload == "txn", progress=progress,
                               log_format=args.log_format, lazyfs_mode=args.lazyfs_mode))
    except SetupError as exc:
        progress.echo(f"raftly check: {exc}", file=sys.stderr)
        return 2


def _why(events: Sequence[Event]) -> str:
    """The summary's line on why ops failed: counts by reason, for fail and for info."""
    counts = reason_counts(pair_events(events))
    fails, infos = format_reasons(counts, "fail"), format_reasons(counts, "info")
    return (f"why: fail: {fails or 'none'}; info (may have taken effect): {infos or 'none'}")


def check_file(history: Path, out: Path | None, budget: float, *,
               progress: ProgressLine | None = None) -> int:
    """Check a history from elsewhere; write a report into ``out`` when given."""
    from raftly.testing.linearizability import HistoryError, check, load_history

    try:
        events = load_history(history)
    except (OSError, HistoryError) as exc:
        raise SetupError(f"cannot read {history}: {exc}") from None
    if progress is not None:
        progress.update(f"check: checking {len(events)} events (up to {budget:g} s)", force=True)
    result = check(events, time_budget=budget)
    if progress is not None:
        progress.close()
    print(result.summary())
    print(_why(events))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        ops = [e.to_dict() for e in events]
        path = write_report(out / "report.html", result.to_dict(), ops,
                            title=f"raftly check: {history.name}",
                            meta={"history": str(history), "events": len(ops)})
        print(f"report: {path}")
    return 0 if result.ok else 1


# -- the run --------------------------------------------------------------------------------------

RESTART_TIMEOUT = 30.0
"""How long a node started again after a power loss may take to answer (it replays its log)."""
LOG_LINES = 12
"""Lines of a node's log quoted in a problem about it."""


class _Target(ClusterMembers):
    """The nemesis acts through the proxies (network), the processes (kill, pause) and the
    membership API (``ClusterMembers``)."""

    def __init__(self, network: Network, cluster: ProcessCluster, pool: ClientPool,
                 disks: LazyDisks | None = None) -> None:
        super().__init__(cluster, pool)
        self.network = network
        self.disks = disks

    def apply_view(self, sees: dict[str, set[str]], cut: str) -> None:
        self.network.apply_view(sees, "reset" if cut == "reset" else "drop")

    def heal_network(self) -> None:
        self.network.heal()

    def kill(self, name: str) -> None:
        self.cluster.kill(name)

    def restart(self, name: str) -> None:
        self.cluster.start([name])

    def pause(self, name: str) -> None:
        self.cluster.pause(name)

    def resume(self, name: str) -> None:
        self.cluster.resume(name)

    def power_loss(self, names: Sequence[str]) -> None:
        assert self.disks is not None, "a power loss needs --nemesis powerloss's disks"
        self.disks.power_loss(names)

    async def restarted(self, name: str, timeout: float = RESTART_TIMEOUT) -> str | None:
        return await asyncio.to_thread(self._answers, name, timeout)

    def _answers(self, name: str, timeout: float) -> str | None:
        node = self.cluster.nodes[name]
        deadline = time.monotonic() + timeout
        while node.running:
            if self.cluster.status(name) is not None:
                return None
            if time.monotonic() > deadline:
                return (f"node {name} did not answer within {timeout:g}s of its restart after "
                        f"a power loss; last lines of its log:\n{node.log_tail(LOG_LINES)}")
            time.sleep(0.1)
        code = node.proc.returncode if node.proc is not None else None
        return (f"node {name} did not start again after a power loss (exit status {code}); "
                f"last lines of its log:\n{node.log_tail(LOG_LINES)}")


async def agreed_leader(cluster: ProcessCluster, timeout: float) -> str | None:
    """The leader every running, unpaused node names (a recovered cluster); None if they do not
    agree within ``timeout`` s. A node that exits meanwhile is left out (``exited`` reports it)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            leader, _ = await asyncio.to_thread(cluster.wait_for_leader,
                                                max(0.0, deadline - time.monotonic()))
            return leader
        except TimeoutError:
            return None
        except RuntimeError:  # a node exited: wait for the others, which no longer include it
            if time.monotonic() > deadline:
                return None


async def final_reads(pool: ClientPool, cluster: ProcessCluster, leader: str | None,
                      keys: list[str], attempts: int = 20
                      ) -> tuple[dict[str, str | None], list[str]]:
    """Read every key after the heal, as ordinary recorded ops of one fresh process.

    Each key is retried (a failed read is harmless) until one read succeeds.
    """
    final: dict[str, str | None] = {}
    problems = []
    process = pool.next_process()
    names = cluster.names
    async with pool.session() as s:
        for key in keys:
            for attempt in range(attempts):
                node = leader if leader is not None and attempt % 2 == 0 else names[
                    attempt % len(names)]
                outcome = await pool.invoke(s, process, "read", key, None, node)
                if outcome.type == "ok":
                    final[key] = outcome.value if isinstance(outcome.value, str) else None
                    break
                await asyncio.sleep(0.25)
            else:
                problems.append(f"final read of {key!r} never succeeded")
    return final, problems


def lost_writes(ops: list[dict[str, Any]], final: dict[str, str | None]) -> list[dict[str, Any]]:
    """Acknowledged writes the final state proves lost (values are unique per run).

    With final value F of a key, written by op W: an acknowledged write (or swapped cas) that was
    invoked after W had returned must be ordered after W, so F cannot be final: it is lost. If
    the final value is absent (there are no deletes), every acknowledged write is lost. An info W
    has no return time, so nothing is provably after it. The checker proves the same and more;
    this check says it in the plainest terms.
    """
    invoked: dict[int, dict[str, Any]] = {}
    writes: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for op in ops:
        if op["type"] == "invoke":
            invoked[op["process"]] = op
        elif op["f"] in ("write", "cas") and op["process"] in invoked:
            writes.append((invoked.pop(op["process"]), op))
    for inv in invoked.values():  # never completed: like info
        if inv["f"] in ("write", "cas"):
            writes.append((inv, {**inv, "type": "info", "time": None}))

    def written(op: dict[str, Any]) -> object:
        v = op["value"]
        return v[1] if op["f"] == "cas" and isinstance(v, list) else v

    lost = []
    for key, value in final.items():
        acked = [(i, d) for i, d in writes if i["key"] == key and d["type"] == "ok"]
        if value is None:
            lost += [{"key": key, "value": written(i), "invoked": i["time"]} for i, _ in acked]
            continue
        producers = [(i, d) for i, d in writes if i["key"] == key and written(i) == value
                     and d["type"] != "fail"]
        if not producers:
            lost.append({"key": key, "final": value, "problem": "final value was never written"})
            continue
        ret = producers[0][1]["time"] if producers[0][1]["type"] == "ok" else None
        if ret is None:
            continue
        lost += [{"key": key, "value": written(i), "invoked": i["time"], "final": value}
                 for i, _ in acked if i["time"] > ret and written(i) != value]
    return lost


async def run(out: Path, *, nodes: int, duration: float, clients: int, keys: int,
              nemeses: tuple[str, ...], seed: int, rate: float = 100.0,
              op_timeout: float = 1.5, fsync: str = "always", budget: float = 60.0,
              unsafe_stale_reads: bool = False, timing: Timing | None = None,
              recovery_timeout: float = 30.0, snapshot_entries: int | None = None,
              tls: bool = False, txn: bool = False, progress: ProgressLine | None = None,
              log_format: str = "text", lazyfs_mode: Mode = "strict") -> int:
    """One full run into ``out``; returns the exit status (see the module docstring).

    ``tls``: the nodes serve TLS on both ports with certificates in ``out/certs``. ``txn``:
    the txn workload (``Workload.txn``). ``progress``: where to show how far the run is (see
    ``raftly.check.progress``; default: nowhere). With ``powerloss`` among ``nemeses``, every
    data dir is on a lazy file system in ``lazyfs_mode`` (``raftly.check.disks``), unmounted
    on every way out.
    """
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("history.jsonl", "nemesis.jsonl", "report.html", "result.json"):
        (out / stale).unlink(missing_ok=True)
    rng = random.Random(f"raftly-check:{seed}")
    spec = plan_loopback(nodes, cluster_id="raftly-check")
    network = Network({n.name: (n.raft.host, n.raft.port) for n in spec.nodes},
                      reserved=[n.api.port for n in spec.nodes])
    history = HistoryWriter(out / "history.jsonl")
    nlog = NemesisLog(out / "nemesis.jsonl")
    cluster: ProcessCluster | None = None
    disks = (LazyDisks(out, [n.name for n in spec.nodes], lazyfs_mode, seed)
             if "powerloss" in nemeses else None)
    faults = schedule(seed, [n.name for n in spec.nodes], duration, nemeses)
    workload = Workload(clients=clients, keys=keys, rate=rate, op_timeout=op_timeout, txn=txn)
    print(f"raftly check: {nodes} nodes, {duration:g}s, {clients} clients, {keys} keys, "
          f"nemesis {','.join(nemeses) or 'none'}, seed {seed}, out {out}"
          + (", TLS" if tls else "") + (", txn workload" if txn else "")
          + (f", lazyfs {lazyfs_mode}" if disks is not None else ""), flush=True)
    started = time.time()
    shown = RunProgress(progress or ProgressLine(enabled=False), history, nlog, duration)
    shown.start_ticking()
    try:
        await network.start()
        if disks is not None:
            shown.enter("mounting the lazy disks")
            try:
                # On the loop, not in a thread: a Ctrl-C meanwhile must find every mount made
                # (disks.close below), not one a thread makes after the run is torn down.
                disks.start()
            except DiskError as exc:
                raise SetupError(str(exc)) from None
        cluster = _start_cluster(out, spec, network, timing=timing, fsync=fsync,
                                 unsafe_stale_reads=unsafe_stale_reads,
                                 snapshot_entries=snapshot_entries,
                                 tls_dir=out / "certs" if tls else None, log_format=log_format,
                                 keep_data=disks is not None)
        shown.enter("waiting for a leader")
        if await agreed_leader(cluster, 30.0) is None:
            raise SetupError(f"no leader within 30 s (node logs in {out / 'logs'})")
        pool = ClientPool({name: cluster.url(name) for name in cluster.names}, history,
                          workload, random.Random(rng.getrandbits(64)),
                          context=cluster.ssl_context())
        if txn:
            pool.lease = await _run_lease(cluster)
        target = _Target(network, cluster, pool, disks)
        nemesis = Nemesis(faults, target, nlog, _leader_guess(cluster))
        shown.enter(UNDER_FAULTS)
        await _run_under_faults(pool, nemesis, nlog, duration)
        shown.enter("healed, recovering")
        final, problems = await _recover(pool, cluster, nlog, workload.key_names,
                                         recovery_timeout)
        if pool.leases is not None:
            shown.enter("waiting for the short leases to end")
            problems += await _settle_leases(pool, pool.leases, cluster, recovery_timeout)
        problems += nemesis.problems
        if "membership" in nemeses:
            problems += await _membership_agrees(target)
        problems += [f"node {n} exited on its own with status {c}; last lines of its log:\n"
                     + cluster.nodes[n].log_tail(LOG_LINES)
                     for n, c in cluster.exited().items() if n not in nemesis.failed_restarts]
    finally:
        shown.stop_ticking()
        shown.enter("stopping the nodes")
        history.close()
        nlog.close()
        try:
            if cluster is not None:
                cluster.stop(grace=5.0)
        finally:
            if disks is not None:
                disks.close()  # after the nodes: nothing holds the mounts any more
            await network.close()
    return _judge(out, history, nlog, final, problems, budget=budget, shown=shown,
                  run_time=time.time() - started, unsafe_stale_reads=unsafe_stale_reads,
                  settings={"nodes": nodes, "time (s)": duration, "clients": clients,
                            "keys": keys, "nemesis": ",".join(nemeses) or "none",
                            "seed": seed, "fsync": fsync, "tls": tls,
                            "snapshot entries": snapshot_entries or "default",
                            **({"lazyfs": lazyfs_mode} if disks is not None else {}),
                            "workload": "txn" if txn else "kv"})


def _start_cluster(out: Path, spec: ClusterSpec, network: Network, *, timing: Timing | None,
                   fsync: str, unsafe_stale_reads: bool,
                   snapshot_entries: int | None, tls_dir: Path | None,
                   log_format: str = "text", keep_data: bool = False) -> ProcessCluster:
    """Fresh node processes (no data from an earlier run, unless ``keep_data``: the data dirs
    are fresh mounts), each talking through the proxies."""
    views = {n.name: node_view(spec, n.name, {link: network.address(*link)
                                              for link in network.links})
             for n in spec.nodes}
    if not keep_data:
        shutil.rmtree(out / "data", ignore_errors=True)
    cluster = check_cluster(spec, views, out, timing=timing, fsync=fsync,
                            unsafe_stale_reads=unsafe_stale_reads,
                            serve_options=(["--snapshot-entries", str(snapshot_entries)]
                                           if snapshot_entries is not None else [])
                            + (["--log-format", log_format] if log_format != "text" else []),
                            tls_dir=tls_dir)
    cluster.start()
    return cluster


async def _run_lease(cluster: ProcessCluster) -> int:
    """A lease for the txn workload's puts, longer than any run: it never expires meanwhile
    (a leader change restarts its countdown), so the keys behave as registers."""
    from raftly.kv.client import AsyncClient

    async with AsyncClient(cluster.urls, timeout=30,
                           ssl_context=cluster.ssl_context()) as client:
        return (await client.lease_grant(86400)).id


async def _settle_leases(pool: ClientPool, rounds: LeaseRounds, cluster: ProcessCluster,
                         timeout: float) -> list[str]:
    """After the heal: wait until every short lease has ended (a linearizable lease list
    without it), completing its keys' deletes; then read every leased key (recorded ops) and
    check each is gone (``raftly.check.leased``)."""
    from raftly.kv.client import AsyncClient, ClientError

    problems: list[str] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with AsyncClient(cluster.urls, timeout=10,
                           ssl_context=cluster.ssl_context()) as client:
        while rounds.pending() and loop.time() < deadline:
            try:
                problems += rounds.settle(info.id for info in await client.leases())
            except ClientError as exc:
                logger.info("lease list failed: %s", exc)
            if rounds.pending():
                await asyncio.sleep(0.25)
    problems += [f"lease {r.lease} (round {r.number}) never expired within {timeout:g}s of "
                 "the heal" for r in rounds.pending()]
    if rounds.pending():
        return problems  # a key of a lease still alive may rightly have a value
    final, read_problems = await final_reads(pool, cluster, await agreed_leader(cluster, 5.0),
                                             rounds.keys())
    return problems + read_problems + check_gone(final)


def _leader_guess(cluster: ProcessCluster) -> Callable[[], Awaitable[str | None]]:
    """How the nemesis finds the leader to hit: whoever claims it now (off the event loop)."""
    return lambda: asyncio.to_thread(cluster.claimed_leader)


async def _run_under_faults(pool: ClientPool, nemesis: Nemesis, nlog: NemesisLog,
                            duration: float) -> None:
    """The clients and the nemesis together for ``duration`` s; then every fault undone."""
    nem_task = asyncio.create_task(nemesis.run())
    try:
        await pool.run(duration)
    finally:
        nem_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await nem_task
        nemesis.heal_all()
        nlog.note("heal", "network healed, nodes resumed and restarted")
    await nemesis.check_restarts()


async def _membership_agrees(target: ClusterMembers) -> list[str]:
    """The cluster's final configuration must be the members the run added and kept."""
    status, answer = await target.call("GET", MEMBERS_PATH)
    if status != 200:
        return [f"final members list unavailable: {answer.get('error', status)}"]
    listed = {m.get("name"): m.get("role") for m in answer.get("members", [])}
    expected = {name: "voter" for name in target.members()}
    if listed != expected:
        return [f"final configuration {listed} is not the expected {expected}"]
    return []


async def _recover(pool: ClientPool, cluster: ProcessCluster, nlog: NemesisLog,
                   keys: list[str], timeout: float) -> tuple[dict[str, str | None], list[str]]:
    """Wait for the healed cluster to agree on a leader, then read every key: the final state
    and the problems met on the way."""
    leader = await agreed_leader(cluster, timeout)
    nlog.note("recovered" if leader else "not recovered", {"leader": leader})
    final, problems = await final_reads(pool, cluster, leader, keys)
    if leader is None:
        # What each node says, so that a stuck cluster shows where it is stuck.
        statuses = await asyncio.to_thread(cluster.statuses)
        said = ", ".join(f"{n}: " + (f"{s.get('role')} term {s.get('term')} leader "
                                     f"{s.get('leader')}" if s else "no answer")
                         for n, s in statuses.items())
        problems.insert(0, f"no agreed leader {timeout:g}s after the heal ({said})")
    return final, problems


def _judge(out: Path, history: HistoryWriter, nlog: NemesisLog, final: dict[str, str | None],
           problems: list[str], *, budget: float, shown: RunProgress, run_time: float,
           unsafe_stale_reads: bool, settings: dict[str, Any]) -> int:
    """Check the recorded history and the final state; write result.json and the report."""
    from raftly.testing.linearizability import check, load_history

    shown.enter(f"checking the history (up to {budget:g} s)")
    # From the writer's own records: the same lines history.jsonl holds, parsed once here.
    events = load_history(history.ops)
    result = check(events, time_budget=budget)
    lost = lost_writes(history.ops, final)
    ok = result.ok and not lost and not problems
    seed = settings["seed"]
    summary = {
        "ok": ok, "seed": seed, "verdict": str(result.verdict), "counts": result.counts,
        "lost": lost, "problems": problems, "final": final,
        "faults": sum(1 for e in nlog.events if e.get("phase") == "start"),
        "check_seconds": round(result.elapsed, 3), "run_seconds": round(run_time, 1),
    }
    (out / "result.json").write_text(json.dumps({**summary, "check": result.to_dict()},
                                                indent=1))
    write_report(out / "report.html", result.to_dict(), history.ops, nlog.events,
                 title=f"raftly check — seed {seed}",
                 meta={**settings, "faults": summary["faults"],
                       "checker time (s)": f"{result.elapsed:.2f}",
                       "unsafe stale reads (test build)": unsafe_stale_reads,
                       "problems": "; ".join(problems) or "none"},
                 lost={"final": final, "lost": lost, "problems": problems})
    shown.line.close()
    print(result.summary())
    c = result.counts
    print(f"ops: {c.get('ok', 0)} ok, {c.get('fail', 0)} fail, {c.get('info', 0)} info; "
          f"faults: {summary['faults']}; lost writes: {len(lost)}; "
          f"problems: {'; '.join(problems) or 'none'}")
    print(_why(events))
    # The one line to read: everything above, in short.
    print(f"{'PASS' if ok else 'FAIL'} in {clock_time(run_time + result.elapsed)}: "
          f"{sum(c.values())} ops ({c.get('ok', 0)} ok) under {summary['faults']} faults, "
          f"{'linearizable' if result.ok else result.verdict}, {len(lost)} lost writes, "
          f"{len(problems)} problems; report {out / 'report.html'}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


__all__ = ["build_parser", "check_file", "lost_writes", "main", "run"]

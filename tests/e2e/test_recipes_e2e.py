"""The coordination recipes and commands with real processes: ``raftly lock`` gives N processes
mutual exclusion and is released after a SIGKILL of its holder once the TTL has passed; it
hands its command the lock's key and revision and passes SIGTERM on to it; a holder cut off
from the cluster learns it lost the lock once the TTL has passed (and ``raftly lock`` then
stops its command); an election hands over; a txn counter under concurrent clients equals its
successes; ``raftly kv watch`` prints the changes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from e2e_helpers import cli
from polling import eventually, wait_until

from raftly.kv.client import AsyncClient, Client, Compare
from raftly.kv.client_coord import Put
from raftly.kv.recipes import AsyncElection, AsyncLock, Election, Lock
from raftly.localcluster import ProcessCluster

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

# The critical section of every contender: note the entry, work a while (the time another
# holder would need to overlap it), note the exit. O_APPEND: the notes of the processes
# interleave line by line.
CRITICAL = """
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
os.write(fd, f"enter {os.getpid()}\\n".encode())
time.sleep(0.2)
os.write(fd, f"exit {os.getpid()}\\n".encode())
sys.exit(7)
"""


def _env(endpoints: list[str]) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "RAFTLY_ENDPOINTS": ",".join(endpoints)}


def _lock_command(name: str, *command: str, ttl: int = 10) -> list[str]:
    return [sys.executable, "-m", "raftly.cli", "lock", "--ttl", str(ttl), name, "--", *command]


def test_raftly_lock_gives_n_processes_mutual_exclusion_and_passes_the_exit_code(
        shared_cluster: ProcessCluster, tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    procs = [subprocess.Popen(_lock_command("mutex", sys.executable, "-c", CRITICAL, str(notes)),
                              env=_env(shared_cluster.endpoints), stderr=subprocess.PIPE)
             for _ in range(5)]
    codes = [proc.wait(timeout=120) for proc in procs]
    errors = [proc.stderr.read().decode() for proc in procs if proc.stderr]
    assert codes == [7] * 5, errors
    lines = notes.read_text().splitlines()
    assert len(lines) == 10
    # Never two inside: every entry is followed by the same process's exit.
    for enter, leave in zip(lines[::2], lines[1::2], strict=True):
        assert enter.startswith("enter ") and leave == "exit " + enter.split()[1], lines
    with Client(shared_cluster.endpoints) as kv:
        assert kv.range("locks/mutex/").kvs == []  # every holder released on exit


@posix_only
def test_the_lock_of_a_sigkilled_holder_is_released_once_its_ttl_has_passed(
        shared_cluster: ProcessCluster, tmp_path: Path) -> None:
    ttl = 3
    holding = tmp_path / "holding"
    holder = subprocess.Popen(
        _lock_command("killed", sys.executable, "-c",
                      f"import pathlib, time; pathlib.Path({str(holding)!r}).touch(); "
                      "time.sleep(120)", ttl=ttl),
        env=_env(shared_cluster.endpoints), start_new_session=True)
    try:
        wait_until("the holder runs its command", holding.exists, timeout=30)
        acquired: list[float] = []
        with Client(shared_cluster.endpoints, timeout=30) as kv:
            waiter = Lock(kv.fork(), "killed", ttl=ttl)  # a Client per thread
            thread = threading.Thread(target=lambda: acquired.append(
                time.monotonic() if waiter.acquire() else 0.0), daemon=True)
            thread.start()
            # Held: the waiter queues behind the holder's key.
            wait_until("the waiter queued", lambda: len(kv.range("locks/killed/").kvs) == 2)
            assert not acquired
            killed = time.monotonic()
            os.killpg(holder.pid, signal.SIGKILL)  # the lock process and its command
            holder.wait(10)
            thread.join(30)
            assert acquired, "the lock was never released"
            # The holder's last keepalive came at most ttl/3 before the kill.
            assert acquired[0] - killed >= ttl * 2 / 3 - 0.1, acquired[0] - killed
            assert waiter.key is not None and not waiter.lost
            waiter.release()
            assert kv.range("locks/killed/").kvs == []
    finally:
        if holder.poll() is None:
            os.killpg(holder.pid, signal.SIGKILL)
            holder.wait(10)


def test_an_election_hands_over_when_the_leader_resigns_and_observers_follow(
        shared_cluster: ProcessCluster) -> None:
    eps = shared_cluster.endpoints
    seen: list[bytes | None] = []

    def observe() -> None:
        with Client(eps, timeout=30) as kv:
            for value in Election(kv, "workers").observe():
                seen.append(value)
                if value == b"w2":
                    return

    observer = threading.Thread(target=observe, daemon=True)
    observer.start()
    wait_until("the observer saw no leader", lambda: seen == [None])
    with Client(eps, timeout=30) as first, Client(eps, timeout=30) as second:
        one = Election(first, "workers", ttl=5)
        assert one.campaign(b"w1")
        two = Election(second, "workers", ttl=5)
        won: list[bool] = []
        contender = threading.Thread(target=lambda: won.append(two.campaign(b"w2")),
                                     daemon=True)
        contender.start()
        wait_until("the second one queued",
                   lambda: len(first.range("elections/workers/").kvs) == 2)
        leader = one.leader()
        assert leader is not None and leader.value == b"w1" and not won
        one.resign()
        contender.join(30)
        assert won == [True]
        leader = two.leader()
        assert leader is not None and leader.value == b"w2"
        observer.join(30)
        assert seen == [None, b"w1", b"w2"]
        two.resign()


def test_a_txn_counter_under_concurrent_clients_equals_the_successful_increments(
        shared_cluster: ProcessCluster) -> None:
    eps = shared_cluster.endpoints
    with Client(eps) as kv:
        kv.put("txn/counter", b"0")
    successes: list[int] = []

    def increment() -> None:
        done = 0
        with Client(eps, timeout=30) as kv:
            for _ in range(15):
                entry = kv.get_entry("txn/counter")
                assert entry is not None
                result = kv.txn([Compare("txn/counter", "mod_revision", "=", entry.mod_revision)],
                                [Put("txn/counter", str(int(entry.value) + 1).encode())])
                done += result.succeeded
        successes.append(done)

    workers = [threading.Thread(target=increment) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert len(successes) == 4
    with Client(eps) as kv:
        assert kv.get("txn/counter") == str(sum(successes)).encode()
    assert sum(successes) >= 15  # some contended, every round one of them wins


def test_raftly_kv_watch_prints_each_change_as_it_happens(shared_cluster: ProcessCluster) -> None:
    eps = shared_cluster.endpoints
    with Client(eps) as kv:
        start = kv.put("cfgw/start", b"before the watch")
        command = [sys.executable, "-m", "raftly.cli", "kv", "watch", "cfgw/",
                   "--from-revision", str(start + 1)]
        with subprocess.Popen(command, env=_env(eps), stdout=subprocess.PIPE, text=True) as watch:
            guard = threading.Timer(60, watch.kill)  # a hung watch fails the test, not the run
            guard.start()
            try:
                mode = kv.put("cfgw/mode", b"a\tb")
                kv.put("other/x", b"not watched")
                both = kv.txn([], [Put("cfgw/x", b"1"), Put("cfgw/y", b"\xff")]).revision
                kv.delete("cfgw/mode")
                assert watch.stdout is not None
                lines = [watch.stdout.readline() for _ in range(4)]
            finally:
                guard.cancel()
                watch.terminate()
    assert lines[:3] == [f"{mode}\tput\tcfgw/mode\ta\\tb\n", f"{both}\tput\tcfgw/x\t1\n",
                         f"{both}\tput\tcfgw/y\t\\xff\n"]
    assert lines[3].split("\t")[1:] == ["delete", "cfgw/mode", "\n"]


def test_a_txn_file_runs_from_the_cli_and_its_branch_is_the_exit_status(
        shared_cluster: ProcessCluster, tmp_path: Path) -> None:
    eps = shared_cluster.endpoints
    body = tmp_path / "txn.json"
    body.write_text('{"compare": [{"key": "clitxn", "target": "exists", "op": "=", '
                    '"value": false}], "success": [{"put": {"key": "clitxn", "value": "1"}}], '
                    '"failure": [{"get": {"key": "clitxn"}}]}')
    first = cli("kv", "txn", str(body), endpoints=eps)
    assert first.code == 0 and '"succeeded": true' in first.out, first.err
    second = cli("kv", "txn", str(body), endpoints=eps)
    assert second.code == 1 and '"value": "1"' in second.out
    lease = cli("lease", "grant", "5", endpoints=eps)
    assert lease.code == 0
    assert cli("kv", "put", "--lease", lease.out.strip(), "clileased", "x", endpoints=eps).code == 0
    listed = cli("lease", "list", endpoints=eps)
    assert f"{lease.out.strip()}\t5\t" in listed.out and "clileased" in listed.out
    assert cli("lease", "revoke", lease.out.strip(), endpoints=eps).out == "1\n"
    assert cli("kv", "get", "clileased", endpoints=eps).code == 1


def test_async_locks_exclude_each_other_within_one_loop(shared_cluster: ProcessCluster) -> None:
    async def scenario() -> list[str]:
        trace: list[str] = []
        async with AsyncClient(shared_cluster.endpoints, timeout=30) as kv:
            async def contender(name: str) -> None:
                async with AsyncLock(kv, "async", ttl=5):
                    trace.append(f"enter {name}")
                    await asyncio.sleep(0.1)  # the work another holder would overlap
                    trace.append(f"exit {name}")

            await asyncio.gather(*(contender(str(i)) for i in range(4)))
        return trace

    trace = asyncio.run(scenario())
    assert len(trace) == 8
    for enter, leave in zip(trace[::2], trace[1::2], strict=True):
        assert leave == "exit " + enter.split()[1], trace


def test_a_lock_wait_times_out_cleanly_and_a_holder_learns_when_its_lease_is_revoked(
        shared_cluster: ProcessCluster) -> None:
    eps = shared_cluster.endpoints
    with Client(eps, timeout=30) as kv, Client(eps, timeout=30) as other:
        holder = Lock(kv, "lost", ttl=3)
        assert holder.acquire()
        assert holder.key is not None and holder.revision is not None
        entry = kv.get_entry(holder.key)
        assert entry is not None and entry.create_revision == holder.revision
        fence = [Compare(holder.key, "create_revision", "=", holder.revision)]
        assert kv.txn(fence, [Put("fenced", b"by the holder")]).succeeded
        waiter = Lock(other, "lost", ttl=3)
        assert not waiter.acquire(timeout=1)  # held: gives up, and leaves no key behind
        assert [e.key for e in other.range("locks/lost/").kvs] == [holder.key]
        assert holder.lease_id is not None
        other.lease_revoke(holder.lease_id)  # as if it had expired
        # A holder that has not noticed yet is fenced off all the same.
        assert not kv.txn(fence, [Put("fenced", b"too late")]).succeeded
        wait_until("the holder's keepalive noticed", lambda: holder.lost, timeout=15)
        assert waiter.acquire(timeout=10)
        waiter.release()
        holder.release()  # its lease is gone already: nothing to undo, no error


def test_an_async_election_hands_over_and_its_observer_follows(
        shared_cluster: ProcessCluster) -> None:
    async def scenario() -> list[bytes | None]:
        async with AsyncClient(shared_cluster.endpoints, timeout=30) as kv:
            seen: list[bytes | None] = []

            async def observe() -> None:
                async for value in AsyncElection(kv, "async").observe():
                    seen.append(value)
                    if value == b"b":
                        return

            observer = asyncio.create_task(observe())
            await eventually(lambda: seen == [None], timeout=15)
            first, second = AsyncElection(kv, "async", ttl=5), AsyncElection(kv, "async", ttl=5)
            assert await first.campaign(b"a")
            contender = asyncio.create_task(second.campaign(b"b"))
            await eventually(lambda: seen == [None, b"a"], timeout=15)

            async def queued() -> bool:
                return len((await kv.range("elections/async/")).kvs) == 2

            await eventually(queued, timeout=15)  # else the resign leaves no leader a while
            assert not contender.done()
            await first.resign()
            assert await asyncio.wait_for(contender, 30)
            leader = await second.leader()
            assert leader is not None and leader.value == b"b"
            await asyncio.wait_for(observer, 30)
            await second.resign()
            return seen

    assert asyncio.run(scenario()) == [None, b"a", b"b"]


# A command that notes its lock environment, says it runs, and on SIGTERM notes it and exits 3.
TRAPS_TERM = """
import os, pathlib, signal, sys, time
notes = pathlib.Path(sys.argv[1])
def term(*_):
    notes.with_suffix(".term").write_text("SIGTERM")
    sys.exit(3)
signal.signal(signal.SIGTERM, term)
notes.write_text(os.environ["RAFTLY_LOCK_KEY"] + " " + os.environ["RAFTLY_LOCK_REV"])
time.sleep(120)
"""


@posix_only
def test_raftly_lock_exports_key_and_revision_and_passes_sigterm_on_to_its_command(
        shared_cluster: ProcessCluster, tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    holder = subprocess.Popen(_lock_command("termed", sys.executable, "-c", TRAPS_TERM,
                                            str(notes)),
                              env=_env(shared_cluster.endpoints), stderr=subprocess.PIPE)
    try:
        wait_until("the command runs", notes.exists, timeout=30)
        wait_until("the command wrote its environment", notes.read_text)
        key, revision = notes.read_text().split()
        with Client(shared_cluster.endpoints) as kv:
            entry = kv.get_entry(key)
            assert key.startswith("locks/termed/")
            assert entry is not None and entry.create_revision == int(revision)
            holder.send_signal(signal.SIGTERM)
            assert holder.wait(30) == 3  # the command's own exit status: it got the SIGTERM
            assert notes.with_suffix(".term").read_text() == "SIGTERM"
            assert kv.range("locks/termed/").kvs == []  # released on the way out
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)


@posix_only
def test_a_holder_cut_off_from_the_cluster_learns_the_lock_is_lost_once_the_ttl_has_passed(
        cluster: ProcessCluster, tmp_path: Path) -> None:
    ttl = 3
    notes = tmp_path / "notes"
    command = [sys.executable, "-m", "raftly.cli", "lock", "--timeout", "2", "--ttl", str(ttl),
               "cutoff-cli", "--", sys.executable, "-c", TRAPS_TERM, str(notes)]
    shell = subprocess.Popen(command, env=_env(cluster.endpoints), stderr=subprocess.PIPE,
                             text=True)
    with Client(cluster.endpoints, timeout=2, request_timeout=1) as kv:
        holder = Lock(kv, "cutoff", ttl=ttl)
        try:
            assert holder.acquire()
            wait_until("the command of raftly lock runs", notes.exists, timeout=30)
            wait_until("a keepalive succeeded", lambda: holder._renewed_at is not None
                       and holder._renewed_at > time.monotonic() - ttl / 2, timeout=10)
            for name in cluster.names:
                cluster.pause(name)  # every node freezes: no answer, no error, like a partition
            cut = time.monotonic()
            assert not holder.lost
            lost_at = wait_until("the holder noticed", lambda: holder.lost and time.monotonic(),
                                 timeout=ttl + 10)
            # Not before the lease could have expired, and about when it could.
            assert holder._renewed_at is not None
            assert lost_at >= holder._renewed_at + ttl
            assert lost_at - cut <= ttl + 1.0, lost_at - cut
            # raftly lock noticed too: it stopped its command and said why.
            assert shell.wait(ttl + 30) == 3
            assert notes.with_suffix(".term").read_text() == "SIGTERM"
            assert shell.stderr is not None
            assert "lock cutoff-cli lost" in shell.stderr.read()
        finally:
            for name in cluster.names:
                cluster.resume(name)
            if shell.poll() is None:
                shell.kill()
                shell.wait(10)
        holder.release()  # lost, and the cluster is back: the lease is gone or revoked now
        assert holder.key is None

"""RaftServer: the asyncio driver, on in-memory transports and storage (real time, fast timers).

Timers here are real, so every wait polls a condition with a generous deadline.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from polling import eventually
from snapshot_helpers import FAST, Counter

from raftly.core.errors import NotLeader
from raftly.core.messages import AppendEntries, Message
from raftly.server import Busy, OutcomeUnknown, RaftServer, ServerStopped
from raftly.storage import DiskStorage, MemoryStorage, Storage
from raftly.transport import MemoryNetwork


class Cluster:
    def __init__(self, n: int, storages: list[Storage] | None = None, **options: Any) -> None:
        self.options = options
        self.net = MemoryNetwork()
        self.ids = list(range(1, n + 1))
        self.storages = storages or [MemoryStorage() for _ in self.ids]
        self.servers: dict[int, RaftServer] = {}

    def make(self, i: int, storage: Storage | None = None) -> RaftServer:
        return RaftServer(i, storage=storage or self.storages[i - 1],
                          transport=self.net.transport(i), state_machine=Counter(),
                          bootstrap=frozenset(self.ids), config=FAST, rng=random.Random(i),
                          **self.options)

    async def start(self) -> None:
        for i in self.ids:
            self.servers[i] = self.make(i)
            await self.servers[i].start()

    async def leader(self, among: list[int] | None = None) -> RaftServer:
        candidates = among or self.ids
        await eventually(lambda: any(self.servers[i].is_leader for i in candidates))
        return next(self.servers[i] for i in candidates if self.servers[i].is_leader)

    async def close(self) -> None:
        for server in self.servers.values():
            await server.close()


@asynccontextmanager
async def cluster(n: int = 3, storages: list[Storage] | None = None,
                  **options: Any) -> AsyncIterator[Cluster]:
    c = Cluster(n, storages, **options)
    await c.start()
    try:
        yield c
    finally:
        await c.close()


@asynccontextmanager
async def single_node(state_machine: Counter | None = None,
                      **options: Any) -> AsyncIterator[RaftServer]:
    """A one-node cluster: it elects itself, so every proposal commits at once."""
    c = Cluster(1)
    server = RaftServer(1, storage=MemoryStorage(), transport=c.net.transport(1),
                        state_machine=state_machine or Counter(), bootstrap=frozenset({1}),
                        config=FAST, **options)
    c.servers[1] = server
    await server.start()
    try:
        await c.leader()
        yield server
    finally:
        await c.close()


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 60))


def test_proposals_are_applied_on_every_node_and_return_the_result() -> None:
    async def body() -> None:
        async with cluster() as c:
            leader = await c.leader()
            results = [await leader.propose(b"2") for _ in range(3)]
            assert results == [2, 4, 6]
            await eventually(lambda: all(s.state_machine.value == 6 for s in c.servers.values()))

    run(body)


def test_concurrent_proposals_are_batched_into_few_fsyncs() -> None:
    async def body() -> None:
        async with cluster() as c:
            leader = await c.leader()
            before = leader.stats["fsyncs"]
            results = await asyncio.gather(*(leader.propose(b"1") for _ in range(500)))
            assert sorted(results) == list(range(1, 501))
            assert leader.stats["fsyncs"] - before < 100  # far fewer than one per proposal

    run(body)


def test_propose_on_a_follower_raises_not_leader_naming_the_leader() -> None:
    async def body() -> None:
        async with cluster() as c:
            leader = await c.leader()
            follower = next(s for s in c.servers.values() if s is not leader)
            await eventually(lambda: follower.leader == leader.id)
            with pytest.raises(NotLeader) as info:
                await follower.propose(b"1")
            assert info.value.leader == leader.id

    run(body)


def test_linearizable_read_on_leader_and_follower_sees_the_last_write() -> None:
    async def body() -> None:
        async with cluster() as c:
            leader = await c.leader()
            await leader.propose(b"5")
            for server in c.servers.values():
                await eventually(lambda s=server: s.leader is not None)  # type: ignore[misc]
                value = await server.read(lambda sm: sm.value)  # type: ignore[attr-defined]
                assert value == 5

    run(body)


def test_read_on_an_isolated_leader_times_out_instead_of_serving_stale_data() -> None:
    async def body() -> None:
        async with cluster() as c:
            old = await c.leader()
            await old.propose(b"1")
            c.net.disconnect(old.id)
            with pytest.raises((OutcomeUnknown, NotLeader)):
                await old.read(lambda sm: sm.value, timeout=0.5)  # type: ignore[attr-defined]

    run(body)


def test_a_new_leader_takes_over_when_the_leader_is_cut_off() -> None:
    async def body() -> None:
        async with cluster() as c:
            old = await c.leader()
            await old.propose(b"1")
            c.net.disconnect(old.id)
            others = [i for i in c.ids if i != old.id]
            new = await c.leader(others)
            assert await new.propose(b"1") == 2
            c.net.connect(old.id)
            await eventually(lambda: not old.is_leader and old.state_machine.value == 2)

    run(body)


def test_a_proposal_whose_entry_is_lost_is_never_reported_as_applied() -> None:
    async def body() -> None:
        async with cluster() as c:
            old = await c.leader()
            c.net.disconnect(old.id)
            doomed = asyncio.ensure_future(old.propose(b"100", timeout=5.0))
            new = await c.leader([i for i in c.ids if i != old.id])
            await new.propose(b"1")
            c.net.connect(old.id)
            with pytest.raises(Exception) as info:  # replaced, or unknown: never a result
                await doomed
            assert type(info.value).__name__ in ("ProposalDropped", "OutcomeUnknown")
            await eventually(lambda: old.state_machine.value == 1)

    run(body)


def test_too_many_pending_proposals_get_busy() -> None:
    async def body() -> None:
        async with single_node(max_pending=3) as leader:
            tasks = [asyncio.ensure_future(leader.propose(b"1")) for _ in range(3)]
            await asyncio.sleep(0)
            with pytest.raises(Busy):
                await leader.propose(b"1")
            assert sorted(await asyncio.gather(*tasks)) == [1, 2, 3]

    run(body)


def test_restart_from_disk_reapplies_the_committed_log(tmp_path: Path) -> None:
    async def body() -> None:
        storages: list[Storage] = [DiskStorage(tmp_path / f"n{i}") for i in (1, 2, 3)]
        c = Cluster(3, storages)
        await c.start()
        leader = await c.leader()
        for _ in range(10):
            await leader.propose(b"3")
        await c.close()
        c2 = Cluster(3, [DiskStorage(tmp_path / f"n{i}") for i in (1, 2, 3)])
        await c2.start()
        try:
            leader = await c2.leader()
            assert await leader.propose(b"0") == 30
            await eventually(lambda: all(s.state_machine.value == 30 for s in c2.servers.values()))
        finally:
            await c2.close()

    run(body)


class Exploding(Counter):
    def apply(self, index: int, command: bytes) -> object:
        if command == b"boom":
            raise RuntimeError("state machine bug")
        return super().apply(index, command)


def test_a_crashing_state_machine_stops_the_node_loudly(caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        async with single_node(Exploding()) as server:
            with pytest.raises(ServerStopped):
                await server.propose(b"boom")
            with pytest.raises(ServerStopped):
                await server.propose(b"1")

    run(body)
    assert any("stopped" in r.message and r.levelname == "CRITICAL" for r in caplog.records)


def test_wait_failed_returns_the_error_that_stopped_the_node() -> None:
    async def body() -> None:
        async with single_node(Exploding()) as server:
            assert server.failure is None
            waiter = asyncio.ensure_future(server.wait_failed())
            with pytest.raises(ServerStopped):
                await server.propose(b"boom")
            error = await asyncio.wait_for(waiter, 5)
            assert isinstance(error, RuntimeError) and server.failure is error

    run(body)


class SlowDisk(MemoryStorage):
    """A storage whose saves can be made to hang, as a disk in trouble does."""

    def __init__(self) -> None:
        super().__init__()
        self.delay = 0.0

    def save(self, hard_state: object, entries: object) -> None:  # type: ignore[override]
        if self.delay and entries:
            time.sleep(self.delay)  # runs on the server's disk thread, as a real fsync would
        super().save(hard_state, entries)  # type: ignore[arg-type]


def test_a_slow_fsync_on_the_leader_does_not_stall_heartbeats_into_an_election() -> None:
    async def body() -> None:
        disks = [SlowDisk() for _ in range(3)]
        async with cluster(3, list(disks)) as c:
            leader = await c.leader()
            term = leader.status().term
            disks[leader.id - 1].delay = 1.0  # about seven election timeouts
            result = await leader.propose(b"7", timeout=10)
            assert result == 7
            assert leader.is_leader and all(s.status().term == term for s in c.servers.values())

    run(body)


def test_a_timed_out_proposal_is_unknown_and_stops_counting_as_pending() -> None:
    async def body() -> None:
        async with cluster(3, max_pending=1) as c:
            leader = await c.leader()
            c.net.disconnect(leader.id)
            with pytest.raises(OutcomeUnknown):
                await leader.propose(b"1", timeout=0.2)
            # Not Busy (checked first): the timed-out proposal no longer counts. By now the
            # cut-off leader may have stepped down, hence NotLeader is as good.
            with pytest.raises((OutcomeUnknown, NotLeader)):
                await leader.propose(b"1", timeout=0.2)

    run(body)


def test_slow_follower_disks_do_not_make_the_leader_step_down() -> None:
    async def body() -> None:
        disks = [SlowDisk() for _ in range(3)]
        async with cluster(3, list(disks)) as c:
            leader = await c.leader()
            term = leader.status().term
            for disk, server in zip(disks, c.servers.values(), strict=True):
                if server is not leader:
                    disk.delay = 0.5  # about three election timeouts per save
            for _ in range(3):
                await leader.propose(b"1", timeout=10)
            assert leader.is_leader and all(s.status().term == term for s in c.servers.values())

    run(body)


def test_a_commit_notice_is_dropped_when_the_next_append_carries_it_and_sent_when_none_does(
) -> None:
    async def body() -> None:
        async with cluster() as c:
            leader = await c.leader()
            await leader.propose(b"1")
            sent: list[AppendEntries] = []
            transport = leader._transport
            send = transport.send

            def record(msg: Message) -> None:
                if isinstance(msg, AppendEntries):
                    sent.append(msg)
                send(msg)

            transport.send = record  # type: ignore[method-assign]
            for _ in range(50):  # one client: each commit is followed by the next proposal
                await leader.propose(b"1")
            empty = [m for m in sent if not m.entries]
            # Without holding them, every commit sends each follower an empty append (100).
            assert len(empty) < 50, len(empty)
            last = leader.node.log.commit
            # Nothing supersedes the last commit's notice: it still goes out, to each follower.
            await eventually(lambda: {m.dst for m in sent if not m.entries and m.commit == last}
                             == set(c.ids) - {leader.id})
            await eventually(lambda: all(s.state_machine.value == 51
                                         for s in c.servers.values()))

    run(body)


def test_a_refused_construction_leaves_no_thread_behind() -> None:
    before = set(threading.enumerate())
    net = MemoryNetwork()
    for _ in range(3):
        with pytest.raises(ValueError):
            RaftServer(1, storage=MemoryStorage(), transport=net.transport(1),
                       state_machine=Counter(), bootstrap=frozenset({1}), config=FAST,
                       snapshot_entries=0)
    assert set(threading.enumerate()) == before


def test_an_error_sending_held_commit_notices_stops_the_node() -> None:
    async def body() -> None:
        async with cluster() as c:
            leader = await c.leader()
            send = leader._transport.send

            def broken(msg: Message) -> None:
                if isinstance(msg, AppendEntries) and not msg.entries:
                    raise RuntimeError("bug in transport")
                send(msg)

            leader._transport.send = broken  # type: ignore[method-assign]
            await leader.propose(b"1")  # its commit notices are held, then sent: they raise
            failure = await eventually(lambda: leader.failure, what="the node stopping")
            assert "bug in transport" in str(failure)

    run(body)

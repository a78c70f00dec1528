"""RaftServer's membership API on in-memory transports (real time, fast timers): changes that
wait for their commit, the core's refusals as MembershipError, the configuration in use and its
listeners, a removed leader that reports its removal, and leadership transfer that waits."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from polling import eventually

from raftly.core.config import Config
from raftly.core.errors import NotLeader
from raftly.core.types import ConfChange, ConfChangeType, ConfState, Member
from raftly.server import MembershipError, RaftServer, TransferTimedOut
from raftly.storage import MemoryStorage
from raftly.transport import MemoryNetwork

FAST = Config(tick_interval=0.005, heartbeat_interval=0.02, election_timeout=0.15)
BOOT = ConfState(frozenset({1, 2, 3}), frozenset(),
                 tuple(Member(i, f"n{i}", f"127.0.0.1:{7000 + i}", f"127.0.0.1:{8000 + i}")
                       for i in (1, 2, 3)))


class Sum:
    def __init__(self) -> None:
        self.value = 0

    def apply(self, index: int, command: bytes) -> object:
        self.value += int(command)
        return self.value


class Nodes:
    def __init__(self) -> None:
        self.net = MemoryNetwork()
        self.servers: dict[int, RaftServer] = {}

    async def start(self, node_id: int, bootstrap: ConfState) -> RaftServer:
        server = RaftServer(node_id, storage=MemoryStorage(), transport=self.net.transport(node_id),
                            state_machine=Sum(), bootstrap=bootstrap, config=FAST,
                            rng=random.Random(node_id))
        self.servers[node_id] = server
        await server.start()
        return server

    async def leader(self) -> RaftServer:
        await eventually(lambda: any(s.is_leader for s in self.servers.values()), 10.0)
        return next(s for s in self.servers.values() if s.is_leader)


@asynccontextmanager
async def three() -> AsyncIterator[Nodes]:
    nodes = Nodes()
    for i in (1, 2, 3):
        await nodes.start(i, BOOT)
    try:
        yield nodes
    finally:
        for server in nodes.servers.values():
            await server.close()


def run(coro: object) -> None:
    asyncio.run(asyncio.wait_for(coro, 60))  # type: ignore[arg-type]


async def ready_leader(nodes: Nodes) -> RaftServer:
    """A leader that has committed an entry of its term (so it may change the membership)."""
    leader = await nodes.leader()
    await leader.propose(b"1")
    return leader


def add(node_id: int, promote: bool = True) -> ConfChange:
    return ConfChange(ConfChangeType.ADD_LEARNER,
                      Member(node_id, f"n{node_id}", f"127.0.0.1:{7000 + node_id}",
                             f"127.0.0.1:{8000 + node_id}", promote))


def test_an_added_learner_catches_up_is_promoted_and_every_listener_hears_of_it() -> None:
    async def main() -> None:
        async with three() as nodes:
            leader = await ready_leader(nodes)
            seen: list[ConfState] = []
            leader.on_conf_change.append(seen.append)
            new = await nodes.start(4, ConfState())  # empty: never campaigns, waits for the log
            index = await leader.change_membership(add(4))
            assert leader.status().commit_index >= index
            assert 4 in seen[0].learners and seen[0].member(4) == add(4).member
            await leader.propose(b"2")
            await eventually(lambda: 4 in leader.conf.voters, 10.0, "n4 promoted")
            await eventually(lambda: new.state_machine.value == 3, 10.0, "n4 applied")  # type: ignore[attr-defined]
            assert seen[-1].voters == {1, 2, 3, 4}
            await eventually(lambda: new.conf.voters == {1, 2, 3, 4}, 10.0)
            assert new.status().learners == () and 4 in new.status().voters

    run(main())


def test_refusals_are_membership_errors_with_the_core_code_and_change_nothing() -> None:
    async def main() -> None:
        async with three() as nodes:
            leader = await ready_leader(nodes)
            before = leader.conf
            with pytest.raises(MembershipError) as exists:
                await leader.change_membership(add(2))
            assert exists.value.code == "exists"
            with pytest.raises(MembershipError) as unknown:
                await leader.change_membership(
                    ConfChange(ConfChangeType.REMOVE, Member(9)))
            assert unknown.value.code == "unknown"
            assert leader.conf == before
            # Two at once: the second is refused while the first is uncommitted.
            first, second = await asyncio.gather(
                leader.change_membership(add(5, promote=False)),
                leader.change_membership(add(6, promote=False)), return_exceptions=True)
            assert isinstance(first, int)
            assert isinstance(second, MembershipError) and second.code == "in_flight"
            follower = next(s for s in nodes.servers.values() if s is not leader)
            with pytest.raises(NotLeader):
                await follower.change_membership(add(7))

    run(main())


def test_a_removed_leader_reports_its_removal_once_it_commits_and_another_leads() -> None:
    async def main() -> None:
        async with three() as nodes:
            leader = await ready_leader(nodes)
            assert not leader.removed
            await leader.change_membership(ConfChange(ConfChangeType.REMOVE,
                                                      Member(leader.id)))
            await asyncio.wait_for(leader.wait_removed(), 10.0)
            rest = [s for s in nodes.servers.values() if s is not leader]
            await eventually(lambda: any(s.is_leader for s in rest), 10.0, "a new leader")
            assert all(not s.removed for s in rest)
            assert all(s.conf.voters == BOOT.voters - {leader.id} for s in rest)

    run(main())


def test_transfer_and_wait_returns_once_the_target_leads_or_times_out() -> None:
    async def main() -> None:
        async with three() as nodes:
            leader = await ready_leader(nodes)
            target = next(i for i in nodes.servers if i != leader.id)
            await leader.transfer_leadership_and_wait(target, timeout=5.0)
            assert nodes.servers[target].is_leader and leader.leader == target
            now = nodes.servers[target]
            down = next(i for i in nodes.servers if i not in (target, leader.id))
            nodes.net.disconnect(down)
            with pytest.raises(TransferTimedOut):
                await now.transfer_leadership_and_wait(down, timeout=0.5)

    run(main())

"""The server's observer hook: what metrics and the cluster page are told, and when."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from polling import eventually
from snapshot_helpers import SnapshottingCounter
from test_raft_server import cluster, single_node

from raftly.core.node import Role
from raftly.core.types import NodeId
from raftly.server import OutcomeUnknown
from raftly.server.observer import ProposalOutcome
from raftly.storage.snapshots import SnapshotStore


class Recorder:
    def __init__(self) -> None:
        self.proposals: list[tuple[float, ProposalOutcome]] = []
        self.saves: list[tuple[float, int]] = []
        self.roles: list[tuple[Role, int, NodeId | None]] = []
        self.snapshots: list[tuple[float, int, int]] = []

    def proposal_finished(self, seconds: float, outcome: ProposalOutcome) -> None:
        self.proposals.append((seconds, outcome))

    def saved(self, seconds: float, entries: int) -> None:
        self.saves.append((seconds, entries))

    def role_changed(self, role: Role, term: int, leader: NodeId | None) -> None:
        self.roles.append((role, term, leader))

    def snapshot_taken(self, seconds: float, size: int, index: int) -> None:
        self.snapshots.append((seconds, size, index))


def test_proposals_saves_and_the_campaign_are_reported_on_a_single_node() -> None:
    async def body() -> None:
        seen = Recorder()
        async with single_node(observers=[seen]) as server:
            for _ in range(5):
                await server.propose(b"1")
            term = server.status().term
        assert [o for _, o in seen.proposals] == [ProposalOutcome.OK] * 5
        assert all(0 <= s < 10 for s, _ in seen.proposals)
        # Every entry that went to disk was in one of the fsynced saves reported.
        assert sum(n for _, n in seen.saves) >= 5 + 1  # the 5 commands and the leader's entry
        # A single node wins its election within one step: it shows as leader in a new term.
        assert seen.roles == [(Role.LEADER, term, 1)]

    asyncio.run(body())


def test_a_proposal_without_a_quorum_is_reported_timed_out() -> None:
    async def body() -> None:
        seen = Recorder()
        async with cluster(3, observers=[seen]) as c:
            leader = await c.leader()
            c.net.disconnect(leader.id)
            with pytest.raises(OutcomeUnknown):
                await leader.propose(b"1", timeout=0.2)
        assert seen.proposals[-1][1] is ProposalOutcome.TIMED_OUT
        assert seen.proposals[-1][0] >= 0.2

    asyncio.run(body())


def test_a_snapshot_taken_is_reported_with_its_size_and_index(tmp_path: Path) -> None:
    async def body() -> None:
        seen = Recorder()
        store = SnapshotStore(tmp_path / "snapshots")
        async with single_node(SnapshottingCounter(), observers=[seen], snapshots=store,
                               snapshot_entries=3) as server:
            for _ in range(4):
                await server.propose(b"2")
            await eventually(lambda: bool(seen.snapshots))
        _, size, index = seen.snapshots[0]
        assert index >= 3
        files = [f for f in (tmp_path / "snapshots").rglob("*") if f.is_file()]
        assert size in {f.stat().st_size for f in files}, files

    asyncio.run(body())

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


class Boom(Recorder):
    """An observer with a bug: every call raises after being recorded."""

    def proposal_finished(self, seconds: float, outcome: ProposalOutcome) -> None:
        raise RuntimeError("observer bug")

    def saved(self, seconds: float, entries: int) -> None:
        raise RuntimeError("observer bug")


def test_an_observer_that_raises_is_logged_once_and_dropped_never_losing_a_write(
        caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        seen = Recorder()
        async with single_node(observers=[Boom(), seen]) as server:
            for i in range(3):
                # Each write is acknowledged: the observer's bug is not the caller's error.
                assert await server.propose(b"1") == i + 1
            # The node still saves and applies (the ready loop did not die after an fsync).
            await eventually(lambda: server.status().applied_index >= 4, what="applied")
        # The healthy observer heard everything; the broken one was reported once only.
        assert [o for _, o in seen.proposals] == [ProposalOutcome.OK] * 3
        logged = [r for r in caplog.records if "observer Boom raised" in r.getMessage()]
        assert len(logged) == 1 and logged[0].exc_info is not None

    asyncio.run(body())


class NoSaves(Recorder):
    wants_saves = False


def test_observers_that_do_not_want_saves_are_not_told_and_the_rest_still_are() -> None:
    async def body() -> None:
        quiet, seen = NoSaves(), Recorder()
        async with single_node(observers=[quiet]) as server:
            for _ in range(3):
                await server.propose(b"1")
        async with single_node(observers=[quiet, seen]) as server:
            await server.propose(b"1")
        # Proposals are still reported to it; only the (untimed) saves are not.
        assert [o for _, o in quiet.proposals] == [ProposalOutcome.OK] * 4
        assert quiet.saves == []
        assert sum(n for _, n in seen.saves) >= 2

    asyncio.run(body())

"""The leader's lease countdowns (raftly.kv.lease_manager) against a stand-in server whose
proposals wait until the test lets them commit: a keepalive is refused once the deadline has
passed or while the expiry revoke is in flight, so no holder hears "renewed" for a lease whose
revoke is already in the log.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from polling import eventually

from raftly.kv.commands import LeaseGrant, LeaseRevoke, decode, encode
from raftly.kv.lease_manager import LeaseExpired, LeaseManager
from raftly.kv.state_machine import KVStateMachine


class GatedServer:
    """A leader whose proposals are applied only once ``commit`` is set."""

    id = "n1"
    is_leader = True

    def __init__(self) -> None:
        self.node = SimpleNamespace(term=1)
        self.state_machine = KVStateMachine()
        self.index = 0
        self.proposed: list[Any] = []
        self.commit = asyncio.Event()

    def apply(self, command: bytes) -> None:
        self.index += 1
        self.state_machine.apply(self.index, command)

    async def propose(self, command: bytes, timeout: float) -> object:
        self.proposed.append(decode(command)[0])
        await self.commit.wait()
        self.apply(command)
        return None


def manager_with_lease(ttl: int) -> tuple[GatedServer, LeaseManager]:
    server = GatedServer()
    server.apply(encode(LeaseGrant(ttl, 7)))
    return server, LeaseManager(server, interval=0.01)  # type: ignore[arg-type]


def test_a_keepalive_racing_an_in_flight_expiry_revoke_is_refused() -> None:
    async def main() -> None:
        server, manager = manager_with_lease(1)
        manager.start()
        try:
            await eventually(lambda: bool(server.proposed), what="the expiry revoke")
            assert server.proposed == [LeaseRevoke(7, expired=True, grant=1)]  # the grant it means
            # The lease is still in the table (the revoke has not committed), yet renewing it
            # now would tell the holder it is kept while its keys are about to go.
            assert server.state_machine.lease(7) is not None
            loop = asyncio.get_running_loop()
            with pytest.raises(LeaseExpired):
                manager.renew(7, 1, loop.time())
            server.commit.set()
            await eventually(lambda: server.state_machine.lease(7) is None)
            assert manager.renew(7, 1, loop.time()) is None
        finally:
            await manager.close()

    asyncio.run(main())


def test_a_keepalive_after_the_deadline_is_refused_even_before_the_revoke() -> None:
    async def main() -> None:
        _, manager = manager_with_lease(1)  # not started: no revoke is proposed
        loop = asyncio.get_running_loop()
        assert 0 < manager.remaining()[7] <= 1
        await eventually(lambda: manager.expired() == [7], what="the deadline")
        with pytest.raises(LeaseExpired):
            manager.renew(7, 1, loop.time())

    asyncio.run(main())


def test_a_keepalive_that_arrived_before_the_deadline_is_not_refused_for_its_quorum_wait() -> None:
    async def main() -> None:
        _, manager = manager_with_lease(1)  # not started: no revoke is proposed
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        await eventually(lambda: manager.expired() == [7], what="the deadline")
        remaining = manager.renew(7, 1, arrived)  # its leadership check ended after the deadline
        assert remaining is not None and remaining <= 1

    asyncio.run(main())


def test_a_keepalive_before_the_deadline_restarts_the_countdown() -> None:
    async def main() -> None:
        _, manager = manager_with_lease(5)
        loop = asyncio.get_running_loop()
        remaining = manager.renew(7, 5, loop.time() + 2)
        assert remaining is not None and 6 < remaining <= 7

    asyncio.run(main())


def test_an_id_granted_again_is_counted_afresh_and_not_refused_for_the_old_revoke() -> None:
    async def main() -> None:
        server, manager = manager_with_lease(1)
        manager.start()
        try:
            await eventually(lambda: bool(server.proposed), what="the expiry revoke")
            # Before the expiry revoke commits, the client revokes lease 7 and grants it again.
            server.apply(encode(LeaseRevoke(7)))
            server.apply(encode(LeaseGrant(30, 7)))  # index 3
            loop = asyncio.get_running_loop()
            remaining = manager.renew(7, 30, loop.time())  # a new lease: not "expired"
            assert remaining is not None and 29 < remaining <= 30
            server.commit.set()  # the stale revoke (grant 1) commits now: it misses
            await eventually(lambda: server.index == 4)
            assert server.state_machine.lease(7) is not None
            assert 29 < manager.remaining()[7] <= 30
        finally:
            await manager.close()

    asyncio.run(main())

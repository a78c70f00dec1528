"""Lease expiry: the leader's countdown of every lease, and the revoke it proposes when one runs
out.

The state machine only records leases (raftly.kv.leases); time is this module's business, and
only on the leader: a follower's clock never expires anything. The leader keeps a deadline per
lease (monotonic clock): now + TTL when it first sees the lease (its grant applied here), when
a keepalive confirmed by a ReadIndex renews it, and for EVERY lease when this node becomes
leader (a new term): as etcd does, a new leader restarts each countdown, so a leader change
may only make a lease live longer, never expire it early. Every ``interval`` it proposes
``LeaseRevoke(id, expired=True)`` for each lease past its deadline, one at a time; a revoke
that fails (lost leadership, busy) is simply tried again on the next round while the lease
still exists and this node still leads. Once a lease's deadline has passed, or while its
revoke is in flight, a keepalive no longer renews it (``LeaseExpired``, as etcd's Renew): the
revoke may already be in the log, so telling the holder "renewed" would be a lie.
"""

from __future__ import annotations

import asyncio
import logging

from raftly.core.errors import NotLeader, ProposalDropped
from raftly.kv.commands import LeaseRevoke, encode
from raftly.kv.state_machine import KVStateMachine
from raftly.server.server import Busy, OutcomeUnknown, RaftServer, ServerStopped

logger = logging.getLogger("raftly.kv.lease_manager")

CHECK_INTERVAL = 0.1
"""Seconds between two looks for expired leases."""
REVOKE_TIMEOUT = 5.0


class LeaseExpired(Exception):
    """The lease ran out (or its revoke is under way) before a keepalive could renew it."""


class LeaseManager:
    """The countdowns of one node's leases, kept while (and only while) it leads."""

    def __init__(self, server: RaftServer, *, interval: float = CHECK_INTERVAL) -> None:
        self._server = server
        self._interval = interval
        self._deadlines: dict[int, float] = {}
        self._grants: dict[int, int] = {}
        """Each counted lease's grant index: an id granted again is a new lease, counted
        afresh, and the revoke of the old one must not match it."""
        self._term: int | None = None
        """The term these deadlines were counted in; None while not leading."""
        self._synced_index = -1
        """The machine's last applied index when the deadlines last followed its leases."""
        self._task: asyncio.Task[None] | None = None
        self._revoking: set[tuple[int, int]] = set()
        """(id, grant index) of the leases whose expiry revoke is proposed, not yet answered."""

    @property
    def _kv(self) -> KVStateMachine:
        sm = self._server.state_machine
        assert isinstance(sm, KVStateMachine)
        return sm

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"raftly {self._server.id}: leases")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def _sync(self) -> bool:
        """Bring the deadlines up to date with the lease table and this node's term; whether
        this node leads (deadlines exist only then)."""
        server = self._server
        if not server.is_leader:
            self._term = None
            self._deadlines.clear()
            self._grants.clear()
            return False
        term = server.node.term
        if term != self._term:
            # Leading in a new term: every countdown starts afresh (from the sync below).
            self._term = term
            self._deadlines, self._grants = {}, {}
            self._synced_index = -1
        # The lease table changes only when the machine applies (or restores) an entry.
        if self._kv.last_index == self._synced_index:
            return True
        self._synced_index = self._kv.last_index
        now = asyncio.get_running_loop().time()
        old, old_grants = self._deadlines, self._grants
        entries = self._kv.lease_entries()
        # A lease not counted yet (granted, granted again, or first seen in this term) starts
        # now.
        self._deadlines = {lease_id: old[lease_id] if old_grants.get(lease_id) == granted
                           else now + ttl for lease_id, ttl, granted in entries}
        self._grants = {lease_id: granted for lease_id, _, granted in entries}
        return True

    def remaining(self) -> dict[int, float]:
        """Seconds left before each lease expires, as this leader counts; empty on a
        follower."""
        if not self._sync():
            return {}
        now = asyncio.get_running_loop().time()
        return {lease_id: max(0.0, deadline - now)
                for lease_id, deadline in self._deadlines.items()}

    def renew(self, lease_id: int, ttl: int, since: float) -> float | None:
        """Restart ``lease_id``'s countdown of ``ttl`` seconds from ``since`` (the loop time when
        the renewal arrived, before its leadership check); the seconds left, or None when this
        node does not lead (or the lease is gone). Raises LeaseExpired when the deadline has
        already passed or the lease's revoke is in flight: it is not renewed then."""
        if not self._sync() or lease_id not in self._deadlines:
            return None
        # Judged at arrival (``since``), not after the leadership check: a keepalive that came in
        # time is not refused for the quorum round trip it then waited on; the revoke check
        # alongside covers an expiry that was proposed meanwhile.
        if ((lease_id, self._grants[lease_id]) in self._revoking
                or self._deadlines[lease_id] <= since):
            raise LeaseExpired(f"lease {lease_id} expired")
        deadline = max(self._deadlines[lease_id], since + ttl)
        self._deadlines[lease_id] = deadline
        return max(0.0, deadline - asyncio.get_running_loop().time())

    def expired(self) -> list[int]:
        """The leases past their deadline, in grant order (none on a follower)."""
        if not self._sync():
            return []
        now = asyncio.get_running_loop().time()
        return [lease_id for lease_id, deadline in self._deadlines.items() if deadline <= now]

    def _still_expired(self, lease_id: int) -> bool:
        server = self._server
        if not server.is_leader or server.node.term != self._term:
            return False
        deadline = self._deadlines.get(lease_id)
        return deadline is not None and deadline <= asyncio.get_running_loop().time()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                for lease_id in self.expired():
                    # Checked again before each: an earlier revoke took time, and a keepalive
                    # may have come, or leadership gone, meanwhile.
                    if self._still_expired(lease_id):
                        await self._revoke(lease_id)
            except Exception:  # one bad round must not end expiry for good
                logger.exception("node %s: checking lease expiry failed", self._server.id)

    async def _revoke(self, lease_id: int) -> None:
        # The revoke names the grant it means: if it commits late, after the lease was revoked
        # and its id granted again, the machine leaves the new lease alone.
        lease = (lease_id, self._grants[lease_id])
        # Until the answer, the revoke may be in the log: no keepalive renews the lease (its
        # deadline has passed, and a failed revoke is retried: it stays past).
        self._revoking.add(lease)
        try:
            await self._server.propose(encode(LeaseRevoke(lease_id, expired=True,
                                                          grant=lease[1])),
                                       timeout=REVOKE_TIMEOUT)
        except (NotLeader, Busy, ProposalDropped, OutcomeUnknown, ServerStopped) as exc:
            logger.info("node %s: revoking expired lease %d failed (%s); retrying while it "
                        "leads", self._server.id, lease_id, exc)
            return
        finally:
            self._revoking.discard(lease)
        logger.info("node %s: lease %d expired and was revoked", self._server.id, lease_id)
        if self._grants.get(lease_id) == lease[1]:
            self._deadlines.pop(lease_id, None)


__all__ = ["CHECK_INTERVAL", "LeaseExpired", "LeaseManager"]

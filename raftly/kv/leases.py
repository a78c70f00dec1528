"""The KV state machine's lease table: each lease's granted TTL and the keys attached to it.

Only data, replicated like the keys: nothing here reads a clock. Expiry is the leader's call
(``raftly.kv.lease_manager`` counts the TTL down and proposes ``LeaseRevoke(id, expired=True,
grant=...)``, naming the grant it expires).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """A lease as the machine lists it: its id, granted TTL in seconds and attached keys."""

    id: int
    ttl: int
    keys: tuple[str, ...]


@dataclass(slots=True)
class _Lease:
    ttl: int
    granted: int
    """The log index of its grant (0: unknown, restored from a snapshot older than that)."""
    keys: set[str] = field(default_factory=set)


class LeaseTable:
    """Leases by id, in grant order (so equal tables list and snapshot alike)."""

    __slots__ = ("_leases",)

    def __init__(self) -> None:
        self._leases: dict[int, _Lease] = {}

    def grant(self, lease_id: int, ttl: int, granted: int) -> None:
        assert lease_id not in self._leases
        self._leases[lease_id] = _Lease(ttl, granted)

    def granted(self, lease_id: int) -> int:
        """The index of ``lease_id``'s grant (0: unknown)."""
        return self._leases[lease_id].granted

    def revoke(self, lease_id: int) -> list[str]:
        """Forget the lease; return its keys, sorted (the order they are deleted in)."""
        return sorted(self._leases.pop(lease_id).keys)

    def attach(self, lease_id: int, key: str) -> None:
        self._leases[lease_id].keys.add(key)

    def detach(self, lease_id: int, key: str) -> None:
        self._leases[lease_id].keys.discard(key)

    def __contains__(self, lease_id: int) -> bool:
        return lease_id in self._leases

    def __len__(self) -> int:
        return len(self._leases)

    def get(self, lease_id: int) -> LeaseInfo | None:
        lease = self._leases.get(lease_id)
        return None if lease is None else LeaseInfo(lease_id, lease.ttl, tuple(sorted(lease.keys)))

    def infos(self) -> list[LeaseInfo]:
        return [LeaseInfo(i, lease.ttl, tuple(sorted(lease.keys)))
                for i, lease in self._leases.items()]

    def entries(self) -> list[tuple[int, int, int]]:
        """(id, ttl, grant index) of every lease in grant order: what a snapshot records (the
        keys record their own lease)."""
        return [(i, lease.ttl, lease.granted) for i, lease in self._leases.items()]


__all__ = ["LeaseInfo", "LeaseTable"]

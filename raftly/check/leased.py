"""The short leases of ``raftly check --workload txn``: keys that vanish when their lease
expires, modelled so that the register checker verifies them honestly.

Every ``Workload.lease_round`` seconds the workload grants a lease of ``Workload.lease_ttl``
seconds that nobody keeps alive, with fresh keys ``lease{n}-k{i}`` of its own: their writes and
compare-and-sets attach to that lease and to no other, so when it expires the leader deletes
them (in one revision). For the register model that deletion is, per key, a write of ``null``
by a process of its own:

- invoked at the grant's invocation + TTL. The leader starts the countdown when it applies
  the grant (after the invocation), and a new leader restarts it (later still), so the keys
  cannot vanish earlier. This assumes what the lease design assumes: the nodes and this
  runner count time at the same rate (here they share the machine's monotonic clock);
- completed ``ok`` once, after the run, a linearizable ``GET /v1/leases`` no longer lists the
  lease: the deletion had been applied by then. A lease still listed ``timeout`` seconds after
  the heal is a problem of the run ("never expired"), and its deletes stay ``info``.

A write on a lease that has ended is refused by the state machine (``404 lease_not_found``): a
sure ``fail``. What the checker then proves, per leased key: every read is explained by the
writes and the deletion placed inside those windows, so no key vanished before its TTL could
have run out, none came back after it vanished, and no acknowledged write was lost while the
lease lived. One thing the register model cannot see, because a write may be linearized after
the deletion: a write applied on an ended lease. ``check_gone`` says it plainly: once every
lease has ended, every leased key must read ``null`` (the final reads, recorded as ops too).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from raftly.check.history import HistoryWriter, now

__all__ = ["LeaseRound", "LeaseRounds", "check_gone"]

EXPIRY = "lease expiry"
"""The ``reason`` of the synthetic deletes, so that a reader of the history knows them."""


@dataclass(slots=True)
class LeaseRound:
    """One short lease and its keys; ``expiry`` maps each key to the process of its delete."""

    number: int
    lease: int
    keys: list[str]
    earliest: int
    """``history.now`` time before which the lease cannot expire."""
    expiry: dict[str, int] = field(default_factory=dict)
    settled: bool = False


@dataclass(slots=True)
class LeaseRounds:
    """The rounds granted so far, and the synthetic deletes they put into ``history``."""

    history: HistoryWriter
    ttl: int
    keys_per_round: int
    next_process: Callable[[], int]
    rounds: list[LeaseRound] = field(default_factory=list)
    _lease_of: dict[str, int] = field(default_factory=dict)

    def granted(self, lease: int, invoked_ns: int) -> LeaseRound:
        """A grant invoked at ``invoked_ns`` (``history.now``) answered ``lease``: its keys,
        and their deletes invoked at the earliest moment the lease can expire."""
        number = len(self.rounds)
        earliest = invoked_ns + self.ttl * 1_000_000_000
        round_ = LeaseRound(number, lease, [f"lease{number}-k{i}"
                                            for i in range(self.keys_per_round)], earliest)
        for key in round_.keys:
            process = self.next_process()
            self.history.record(process, "invoke", "write", key, None, at=round_.earliest,
                                reason=EXPIRY)
            round_.expiry[key] = process
            self._lease_of[key] = lease
        self.rounds.append(round_)
        return round_

    def live_keys(self) -> list[str]:
        """The keys ops go to: those of the last two rounds (the older one is expiring)."""
        return [key for round_ in self.rounds[-2:] for key in round_.keys]

    def lease_of(self, key: str) -> int | None:
        return self._lease_of.get(key)

    def pending(self) -> list[LeaseRound]:
        return [round_ for round_ in self.rounds if not round_.settled]

    def settle(self, listed: Iterable[int]) -> list[str]:
        """A linearizable lease list answered ``listed`` (just now): every pending round whose
        lease is not in it has ended, so its keys' deletes are complete. The problems: a lease
        that ended before its TTL could have run out (its deletes then stay open: a history
        cannot complete an op before its invocation)."""
        alive = set(listed)
        problems = []
        for round_ in self.pending():
            if round_.lease not in alive:
                round_.settled = True
                done = now()
                if done < round_.earliest:
                    problems.append(f"lease {round_.lease} ended before its TTL could pass")
                    continue
                for key, process in round_.expiry.items():
                    self.history.record(process, "ok", "write", key, None, reason=EXPIRY,
                                        at=done)
        return problems

    def keys(self) -> list[str]:
        return [key for round_ in self.rounds for key in round_.keys]


def check_gone(final: Mapping[str, str | None]) -> list[str]:
    """The problems of leased keys read after every lease ended: each must be gone."""
    return [f"leased key {key!r} still has {value!r} after its lease ended (a write applied "
            "on an ended lease, or a key its expiry missed)"
            for key, value in final.items() if value is not None]

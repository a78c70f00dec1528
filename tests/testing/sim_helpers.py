"""What the simulator scenario tests share: seeds, the default election timeout, and reading
back what a node applied."""

from __future__ import annotations

from collections.abc import Callable

from raftly.core import ConfChangeRefused, NotLeader
from raftly.core.config import Config
from raftly.testing import SimCluster

SEEDS = [1, 2, 3]
"""Each scenario runs on these seeds; a failure names its seed and the command to replay it."""

ELECTION = Config().election_timeout
"""1 s: a follower times out within [1 s, 2 s) of virtual time."""


def commands_applied(c: SimCluster, i: int) -> list[bytes]:
    """The commands node ``i`` applied, in order."""
    return [cmd for _, cmd in c.applied(i)]


def until_accepted(c: SimCluster, change: Callable[[], int], timeout: float = 20.0) -> int:
    """Run ``change`` (a membership change through the leader) until a leader takes it; return
    what it returned. Retried while there is no leader, or one not ready or with a change in
    flight: what an operator's client does."""
    deadline = c.now + timeout
    while True:
        try:
            return change()
        except NotLeader:
            pass
        except ConfChangeRefused as e:
            if e.code not in ("in_flight", "not_ready"):
                raise
        if c.now >= deadline:
            raise AssertionError(f"no leader took the change within {timeout}s (seed={c.seed})")
        c.run(0.1)


def wait_voter(c: SimCluster, i: int, timeout: float = 20.0) -> None:
    """Run until node ``i`` is a voter in a committed configuration (promoted by the leader)."""
    c.run_until(lambda: i in c.committed_conf().voters, timeout, step=0.05)


def wait_gone(c: SimCluster, i: int, timeout: float = 20.0) -> None:
    """Run until a committed configuration no longer holds node ``i``."""
    c.run_until(lambda: not c.is_member(i), timeout, step=0.05)

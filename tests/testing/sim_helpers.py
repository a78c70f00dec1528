"""What the simulator scenario tests share: seeds, the default election timeout, and reading
back what a node applied."""

from __future__ import annotations

from raftly.core.config import Config
from raftly.testing import SimCluster

SEEDS = [1, 2, 3]
"""Each scenario runs on these seeds; a failure names its seed and the command to replay it."""

ELECTION = Config().election_timeout
"""1 s: a follower times out within [1 s, 2 s) of virtual time."""


def commands_applied(c: SimCluster, i: int) -> list[bytes]:
    """The commands node ``i`` applied, in order."""
    return [cmd for _, cmd in c.applied(i)]

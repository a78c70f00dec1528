"""Tunable settings of a Raft node, in seconds, and their conversion to ticks."""

from __future__ import annotations

from dataclasses import dataclass


class ConfigError(ValueError):
    """A setting is out of range or inconsistent with another."""


@dataclass(slots=True, frozen=True)
class Config:
    """Settings shared by every node of a cluster.

    Times are seconds; the core counts them in ticks of ``tick_interval``. A follower's election
    timeout is drawn uniformly from [election_timeout, 2 * election_timeout) ticks each time it
    resets, so that nodes rarely time out together.
    """

    tick_interval: float = 0.02
    heartbeat_interval: float = 0.1
    election_timeout: float = 1.0
    pre_vote: bool = True
    check_quorum: bool = True
    max_entries_per_message: int = 1024
    max_bytes_per_message: int = 1 << 20
    max_inflight_messages: int = 64
    """Pipelined AppendEntries in flight to one follower; bounds a slow follower's memory."""
    promote_lag: int = 100
    """A learner is caught up, and may be promoted to voter, within this many entries of the
    leader's last index."""

    def __post_init__(self) -> None:
        if self.tick_interval <= 0:
            raise ConfigError("tick_interval must be positive")
        if self.heartbeat_ticks < 1:
            raise ConfigError("heartbeat_interval must be at least one tick_interval")
        if self.election_ticks <= self.heartbeat_ticks:
            raise ConfigError("election_timeout must be longer than heartbeat_interval")
        if self.max_entries_per_message < 1 or self.max_bytes_per_message < 1:
            raise ConfigError("message size limits must be positive")
        if self.max_inflight_messages < 1:
            raise ConfigError("max_inflight_messages must be positive")
        if self.promote_lag < 0:
            raise ConfigError("promote_lag must not be negative")

    @property
    def heartbeat_ticks(self) -> int:
        return round(self.heartbeat_interval / self.tick_interval)

    @property
    def election_ticks(self) -> int:
        return round(self.election_timeout / self.tick_interval)

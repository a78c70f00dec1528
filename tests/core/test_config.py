"""Config defaults, tick conversion and validation."""

from __future__ import annotations

import pytest

from raftly.core import Config, ConfigError


def test_defaults_match_the_documented_timings() -> None:
    cfg = Config()
    assert cfg.heartbeat_interval == pytest.approx(0.1)
    assert cfg.election_timeout == pytest.approx(1.0)
    assert cfg.pre_vote and cfg.check_quorum
    assert cfg.heartbeat_ticks == 5
    assert cfg.election_ticks == 50


def test_ticks_are_intervals_divided_by_tick_interval() -> None:
    cfg = Config(tick_interval=0.05, heartbeat_interval=0.2, election_timeout=1.5)
    assert (cfg.heartbeat_ticks, cfg.election_ticks) == (4, 30)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tick_interval": 0},
        {"tick_interval": -0.1},
        {"heartbeat_interval": 0.001},  # less than one tick
        {"election_timeout": 0.1},  # equal to the heartbeat interval
        {"election_timeout": 0.05},  # shorter than the heartbeat interval
        {"max_entries_per_message": 0},
        {"max_bytes_per_message": 0},
        {"max_inflight_messages": 0},
    ],
)
def test_invalid_settings_raise_config_error(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        Config(**kwargs)  # type: ignore[arg-type]


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)

"""Scenario tests of snapshots on ``SimCluster(snapshot_every=N)``: bounded logs, InstallSnapshot
for far-behind followers (reliable and unreliable networks, racing with appends and with a
leader change), restart from a snapshot and the log tail, crashes while a snapshot is written.

The safety checker runs throughout: it checks every snapshot's contents against what was
applied at the indexes it covers, and that a node only ever jumps forward. Virtual time only.
"""

from __future__ import annotations

import io

import pytest

from raftly.testing import SimCluster
from raftly.testing.sim import RecordingStateMachine, decode_recording

SEEDS = range(16)
EVERY = 10


def _fill(c: SimCluster, count: int, prefix: str, *, check: object = None) -> list[bytes]:
    """Commit ``count`` commands through whichever node leads, a few at a time; return them."""
    sent: list[bytes] = []
    while len(sent) < count:
        leader = c.check_one_leader(timeout=10.0)
        for _ in range(min(5, count - len(sent))):
            command = f"{prefix}{len(sent)}".encode()
            if c.start(leader, command)[0] == -1:
                break
            sent.append(command)
        c.run(0.05)
        if callable(check):
            check()
    return sent


def _leave_behind(c: SimCluster, count: int) -> tuple[int, list[bytes]]:
    """Cut a follower off while ``count`` commands commit (and get compacted) without it,
    then reconnect it with long delays on, so that what it is sent arrives out of order."""
    behind = (c.check_one_leader() + 1) % c.n
    c.disconnect(behind)
    sent = _fill(c, count, "c")
    c.set_long_delays(True)
    c.connect(behind)
    return behind, sent


def _converged(c: SimCluster, nodes: range | list[int] | None = None) -> bool:
    nodes = range(c.n) if nodes is None else nodes
    return len({tuple(c.commands(i)) for i in nodes}) == 1


def _settle(c: SimCluster, timeout: float = 30.0) -> list[tuple[int, bytes]]:
    """Commit one more command on every node and wait until all hold the same history."""
    c.one(b"sync", c.n, retry=True)
    c.run_until(lambda: _converged(c), timeout)
    return c.commands(0)


def _holds_in_order(history: list[tuple[int, bytes]], commands: list[bytes]) -> bool:
    held = [cmd for _, cmd in history]
    return [cmd for cmd in held if cmd in set(commands)] == commands


@pytest.mark.parametrize("seed", SEEDS)
def test_the_log_stays_short_while_hundreds_of_commands_commit(seed: int) -> None:
    c = SimCluster(n=3, seed=seed, snapshot_every=EVERY)
    longest = [0]

    def measure() -> None:
        longest[0] = max([longest[0]] + [c.log_length(i) for i in range(3)])

    sent = _fill(c, 400, "c", check=measure)
    history = _settle(c)
    assert _holds_in_order(history, sent)
    # Up to EVERY entries behind the snapshot, EVERY more before the next one, and what is
    # still being replicated.
    assert longest[0] <= 3 * EVERY, longest[0]
    assert all(c.snapshot_index(i) >= 400 for i in range(3))
    assert all(c.node(i).status().first_index > 350 for i in range(3))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("unreliable", [False, True], ids=["reliable", "unreliable"])
def test_a_follower_far_behind_is_brought_up_by_install_snapshot(seed: int,
                                                                 unreliable: bool) -> None:
    c = SimCluster(n=3, seed=seed, snapshot_every=EVERY)
    c.one(b"first", 3, retry=True)
    leader = c.check_one_leader()
    behind = (leader + 1) % 3
    c.disconnect(behind)
    applied_before = len(c.applied(behind))
    sent = _fill(c, 120, "c")
    assert c.node(c.check_one_leader()).log.snapshot_index > 2  # "first" is compacted away
    c.set_unreliable(unreliable)
    c.connect(behind)
    c.run_until(lambda: _holds_in_order(c.commands(behind), [b"first", *sent]), 30.0)
    installed = c.snapshots_installed(behind)
    assert installed and installed[0] > 100
    # What the snapshot brought was not applied one by one.
    assert all(index > installed[0] for index, _ in c.applied(behind)[applied_before:])
    c.set_unreliable(False)
    _settle(c)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_node_restarts_from_its_snapshot_and_the_log_after_it(seed: int) -> None:
    c = SimCluster(n=3, seed=seed, snapshot_every=EVERY)
    sent = _fill(c, 55, "c")
    c.one(b"synced", 3, retry=True)
    victim = (c.check_one_leader() + 1) % 3
    before = c.commands(victim)
    snapshot = c.snapshot_index(victim)
    assert snapshot >= 50
    c.restart(victim)
    # Restored from the snapshot; the entries after it re-applied one by one from its log.
    assert c.snapshots_installed(victim) == [snapshot]
    c.run_until(lambda: c.commands(victim) == before, 5.0)
    assert [index for index, _ in c.applied(victim)] == [i for i, _ in before if i > snapshot]
    more = _fill(c, 20, "d")
    assert _holds_in_order(_settle(c), [*sent, b"synced", *more])


@pytest.mark.parametrize("seed", SEEDS)
def test_a_crash_while_a_snapshot_is_written_loses_only_that_snapshot(seed: int) -> None:
    c = SimCluster(n=3, seed=seed, snapshot_every=5, disk_latency=(0.01, 0.2))
    sent = _fill(c, 23, "c")
    victim = (c.check_one_leader() + seed) % 3
    while not c.writing_snapshot(victim):
        sent += _fill(c, 1, "x")
        assert len(sent) < 100, "no snapshot was ever in progress when looked at"
    older = c.snapshot_index(victim)
    c.crash(victim)
    assert c.snapshot_index(victim) == older  # the snapshot being written never became durable
    c.run(0.5)
    c.restart(victim)
    assert c.snapshots_installed(victim) == ([older] if older else [])
    history = _settle(c)
    assert _holds_in_order(history, sent)


@pytest.mark.parametrize("seed", SEEDS)
def test_all_nodes_crash_and_restart_from_their_snapshots(seed: int) -> None:
    c = SimCluster(n=3, seed=seed, snapshot_every=5, disk_latency=(0.0005, 0.01))
    sent = _fill(c, 42, "c")
    c.one(b"synced", 3, retry=True)
    for i in range(3):
        c.crash(i)
    c.run(1.0)
    for i in range(3):
        c.restart(i)
        assert c.snapshots_installed(i) == [c.snapshot_index(i)] and c.snapshot_index(i) > 0
    more = _fill(c, 10, "d")
    assert _holds_in_order(_settle(c), [*sent, b"synced", *more])


@pytest.mark.parametrize("seed", SEEDS)
def test_a_leader_restarted_from_its_snapshot_sends_it_to_a_follower_that_was_down(
        seed: int) -> None:
    c = SimCluster(n=3, seed=seed, snapshot_every=5)
    c.one(b"first", 3, retry=True)
    down = (c.check_one_leader() + 1) % 3
    c.crash(down)
    sent = _fill(c, 40, "c")
    for i in range(3):
        if i != down:
            c.restart(i)  # both keep only their snapshot and the log after it
    c.restart(down)
    c.run_until(lambda: _holds_in_order(c.commands(down), [b"first", *sent]), 30.0)
    assert c.snapshots_installed(down)[-1] > 40  # from a leader that booted from its own
    _settle(c)


@pytest.mark.parametrize("seed", SEEDS)
def test_install_snapshot_races_with_new_appends(seed: int) -> None:
    c = SimCluster(n=3, seed=seed, snapshot_every=3)
    behind, sent = _leave_behind(c, 60)
    sent += _fill(c, 150, "d")  # snapshots keep being taken and sent while it catches up
    c.set_long_delays(False)
    c.run_until(lambda: bool(c.snapshots_installed(behind)), 30.0)
    assert _holds_in_order(_settle(c), sent)


@pytest.mark.parametrize("seed", SEEDS)
def test_install_snapshot_races_with_a_leader_change(seed: int) -> None:
    c = SimCluster(n=5, seed=seed, snapshot_every=4)
    behind, sent = _leave_behind(c, 60)
    leader = c.check_one_leader()

    def sending_snapshot() -> bool:
        pr = c.node(leader).progress(behind)
        return pr is not None and pr.state.value == "snapshot"

    # Once the leader sends the snapshot, it is cut off with the follower alone: the others
    # elect a new leader and go on, and both leaders' messages reach the follower, late.
    c.run_until(sending_snapshot, 10.0, step=0.0002)
    others = [i for i in range(5) if i not in (leader, behind)]
    c.partition([leader, behind], others)
    c.run_until(lambda: any(c.is_leader(i) for i in others), 10.0)
    sent += _fill(c, 30, "d")
    c.heal()
    c.set_long_delays(False)
    assert _holds_in_order(_settle(c), sent)
    assert c.snapshots_installed(behind)


def test_recording_snapshots_round_trip_and_refuse_malformed_input() -> None:
    sm = RecordingStateMachine()
    sm.apply(3, b"a")
    sm.apply(5, b"")
    sink = io.BytesIO()
    sm.capture().persist(sink)
    sm.apply(6, b"after the capture")
    data = sink.getvalue()
    assert decode_recording(data) == [(3, b"a"), (5, b"")]
    copy = RecordingStateMachine()
    copy.restore(io.BytesIO(data))
    assert copy.commands == [(3, b"a"), (5, b"")]
    for bad in (b"", data[:-1], data + b"x", b"XXXX" + data[4:], data[:8]
                + data[8 + 12 + 1:8 + 24 + 1] + data[8:8 + 12 + 1]):
        with pytest.raises(ValueError):
            decode_recording(bad)


def test_snapshot_every_needs_a_state_machine_with_the_hooks() -> None:
    class Plain:
        def apply(self, index: int, command: bytes) -> object:
            return None

    with pytest.raises(ValueError, match="capture"):
        SimCluster(n=3, snapshot_every=5, state_machine=Plain)
    with pytest.raises(ValueError):
        SimCluster(n=3, snapshot_every=0)

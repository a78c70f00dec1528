"""The simulator's determinism: one seed gives one run, step for step, and the same run as the
code gave when the digests below were pinned (main at e4a88c8, before the simulator was made
faster). A change that alters what a seed does (the order of events, the random draws, what a
node sends or applies) changes a digest: such a change must be deliberate, and re-pin them."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from raftly.testing import SimCluster
from raftly.testing.fuzz import run_seed


def _cluster_digest(c: SimCluster) -> str:
    """Every node's log, hard state and applied commands, and how many steps and messages the
    run took: any change to the sequence of events shows in one of them."""
    h = hashlib.sha256(repr((c.steps, c.message_count(), round(c.now, 9))).encode())
    for i in range(c.n):
        if not c.alive(i):
            h.update(b"crashed")
            continue
        node = c.node(i)
        log = node.log
        entries = [(e.index, e.term, int(e.type), e.data)
                   for e in log.slice(log.first_index, log.last_index)]
        h.update(repr((node.term, node.vote, node.leader, log.commit, log.applied,
                       log.snapshot_index, entries, c.applied(i))).encode())
    return h.hexdigest()[:16]


def _loaded_run(seed: int, unreliable: bool) -> str:
    """Two virtual seconds of the simulator benchmark's load (500 commands/s, 5 nodes)."""
    c = SimCluster(n=5, seed=seed)
    c.set_unreliable(unreliable)
    c.check_one_leader(timeout=10.0)
    for _ in range(200):
        leader = c.leader()
        if leader is not None:
            for k in range(5):
                c.start(leader, b"cmd%d" % k)
        c.run(0.01)
    return _cluster_digest(c)


PINNED_LOADED = {
    (0, False): "7bcf682a6089d3d2",
    (1, True): "9e8ef4862124da4a",
}

PINNED_FUZZ = "af85dccea2a39272"
"""sha256 of the results of fuzz seeds 0-29 (30 virtual seconds each), which between them draw
disk latency, snapshots, membership changes, partitions, crashes and an unreliable network."""


def _fuzz_digest() -> str:
    results = [dataclasses.astuple(run_seed(seed, duration=30.0)) for seed in range(30)]
    return hashlib.sha256(repr(results).encode()).hexdigest()[:16]


@pytest.mark.parametrize(("seed", "unreliable"), sorted(PINNED_LOADED))
def test_a_loaded_run_replays_step_for_step_as_pinned(seed: int, unreliable: bool) -> None:
    first = _loaded_run(seed, unreliable)
    assert _loaded_run(seed, unreliable) == first
    assert first == PINNED_LOADED[(seed, unreliable)]


def test_different_seeds_give_different_runs() -> None:
    assert _loaded_run(0, False) != _loaded_run(2, False)


def test_fuzz_seeds_replay_as_pinned() -> None:
    assert _fuzz_digest() == PINNED_FUZZ

"""Progress: the leader's probe / replicate bookkeeping for one follower."""

from __future__ import annotations

from raftly.core.progress import Progress, ProgressState


def test_new_progress_probes_one_message_at_a_time() -> None:
    pr = Progress(next_index=5)
    assert (pr.state, pr.match, pr.next) == (ProgressState.PROBE, 0, 5)
    assert pr.can_send(max_inflight=8)
    pr.sent(7, had_entries=True)
    assert not pr.can_send(max_inflight=8)
    assert pr.next == 5  # a probe does not move next: it is resent from the same point


def test_first_acknowledgement_switches_to_replicate() -> None:
    pr = Progress(next_index=5)
    pr.sent(7, had_entries=True)
    assert pr.acknowledge(7)
    assert (pr.state, pr.match, pr.next) == (ProgressState.REPLICATE, 7, 8)
    assert pr.can_send(max_inflight=1)


def test_replicate_pipelines_up_to_max_inflight() -> None:
    pr = Progress(next_index=1)
    pr.become_replicate()
    for last in (3, 6, 9):
        assert pr.can_send(max_inflight=3)
        pr.sent(last, had_entries=True)
        assert pr.next == last + 1
    assert not pr.can_send(max_inflight=3)
    assert list(pr.inflight) == [3, 6, 9]


def test_acknowledgement_frees_every_inflight_message_it_covers() -> None:
    pr = Progress(next_index=1)
    pr.become_replicate()
    for last in (3, 6, 9):
        pr.sent(last, had_entries=True)
    assert pr.acknowledge(6)
    assert list(pr.inflight) == [9]
    assert pr.can_send(max_inflight=3)


def test_stale_acknowledgement_does_not_move_match() -> None:
    pr = Progress(next_index=1)
    pr.become_replicate()
    pr.sent(5, had_entries=True)
    assert pr.acknowledge(5)
    assert not pr.acknowledge(3)
    assert (pr.match, pr.next) == (5, 6)


def test_empty_message_in_replicate_is_not_counted_in_flight() -> None:
    pr = Progress(next_index=1)
    pr.acknowledge(3)
    pr.sent(3, had_entries=False)  # only the commit index
    assert not pr.inflight and pr.next == 4


def test_become_probe_restarts_from_match() -> None:
    pr = Progress(next_index=1)
    pr.acknowledge(4)
    pr.sent(8, had_entries=True)
    pr.become_probe()
    assert (pr.state, pr.next, pr.probe_sent, list(pr.inflight)) == (
        ProgressState.PROBE, 5, False, [])

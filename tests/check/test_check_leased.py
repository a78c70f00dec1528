"""The short leases of the txn workload as the checker sees them: a leased key's expiry is a
delete between grant + TTL and the moment the lease is seen gone, so a key that vanishes
before its TTL, or shows a value after it vanished, is an anomaly; a write on an ended lease
is a sure fail; a leased key with a value once every lease ended is a problem."""

from __future__ import annotations

from itertools import count

import pytest

from raftly.check import leased
from raftly.check.clients import LEASE_GONE, ClientPool
from raftly.check.history import HistoryWriter
from raftly.check.leased import LeaseRounds, check_gone
from raftly.testing.linearizability import check, load_history

S = 1_000_000_000  # ns per second


def _rounds() -> tuple[HistoryWriter, LeaseRounds]:
    history = HistoryWriter()
    return history, LeaseRounds(history, ttl=1, keys_per_round=1,
                                next_process=count(100).__next__)


def _op(history: HistoryWriter, process: int, f: str, value: object, start: float,
        end: float, output: object = None) -> None:
    history.record(process, "invoke", f, "lease0-k0", value, at=int(start * S))
    history.record(process, "ok", f, "lease0-k0", output if f == "read" else value,
                   at=int(end * S))


def _settled_at(monkeypatch: pytest.MonkeyPatch, rounds: LeaseRounds,
                seconds: float) -> list[str]:
    monkeypatch.setattr(leased, "now", lambda: int(seconds * S))
    return rounds.settle([])


def _linearizable(history: HistoryWriter) -> bool:
    return check(load_history(history.ops), time_budget=None).ok


def test_a_leased_key_gone_after_its_ttl_and_seen_gone_is_linearizable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    history, rounds = _rounds()
    assert rounds.granted(7, invoked_ns=0).keys == ["lease0-k0"]
    assert rounds.lease_of("lease0-k0") == 7
    _op(history, 1, "write", "v1", 0.1, 0.2)
    _op(history, 2, "read", None, 0.5, 0.6, output="v1")
    _op(history, 3, "read", None, 1.5, 1.6, output=None)  # expired by now
    assert _settled_at(monkeypatch, rounds, 2.0) == []
    _op(history, 4, "read", None, 2.1, 2.2, output=None)
    assert _linearizable(history)


def test_a_leased_key_that_vanishes_before_its_ttl_is_an_anomaly(
        monkeypatch: pytest.MonkeyPatch) -> None:
    history, rounds = _rounds()
    rounds.granted(7, invoked_ns=0)
    _op(history, 1, "write", "v1", 0.1, 0.2)
    _op(history, 2, "read", None, 0.5, 0.6, output=None)  # gone at 0.6 < grant + 1 s
    _settled_at(monkeypatch, rounds, 2.0)
    assert not _linearizable(history)


def test_a_leased_value_read_after_the_lease_was_seen_gone_is_an_anomaly(
        monkeypatch: pytest.MonkeyPatch) -> None:
    history, rounds = _rounds()
    rounds.granted(7, invoked_ns=0)
    _op(history, 1, "write", "v1", 0.1, 0.2)
    _settled_at(monkeypatch, rounds, 2.0)
    _op(history, 2, "read", None, 2.1, 2.2, output="v1")  # the deletion had happened by 2.0
    assert not _linearizable(history)


def test_an_unsettled_expiry_may_not_have_happened_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    history, rounds = _rounds()
    rounds.granted(7, invoked_ns=0)
    _op(history, 1, "write", "v1", 0.1, 0.2)
    monkeypatch.setattr(leased, "now", lambda: 3 * S)
    assert rounds.settle([7]) == []  # still listed: its deletes stay open
    assert [r.lease for r in rounds.pending()] == [7]
    _op(history, 2, "read", None, 3.1, 3.2, output="v1")
    assert _linearizable(history)


def test_a_lease_seen_gone_before_its_ttl_could_pass_is_a_problem(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _, rounds = _rounds()
    rounds.granted(7, invoked_ns=0)
    assert _settled_at(monkeypatch, rounds, 0.5) == [
        "lease 7 ended before its TTL could pass"]


def test_only_the_keys_of_the_last_two_rounds_get_ops() -> None:
    _, rounds = _rounds()
    for lease in (7, 8, 9):
        rounds.granted(lease, invoked_ns=0)
    assert rounds.live_keys() == ["lease1-k0", "lease2-k0"]
    assert rounds.keys() == ["lease0-k0", "lease1-k0", "lease2-k0"]


def test_a_leased_key_with_a_value_after_every_lease_ended_is_a_problem() -> None:
    assert check_gone({"lease0-k0": None}) == []
    assert len(check_gone({"lease0-k0": None, "lease1-k1": "v3-4"})) == 1


def test_a_write_on_an_ended_lease_is_a_sure_fail_and_other_404s_are_not() -> None:
    gone = b'{"error": "lease 7 does not exist", "code": "lease_not_found"}'
    outcome = ClientPool._classify_txn("write", 404, gone, "n1")
    assert (outcome.type, outcome.reason) == ("fail", LEASE_GONE)
    assert ClientPool._classify_txn("cas", 404, gone, "n1").type == "fail"
    assert ClientPool._classify_txn("write", 404, b'{"error": "no"}', "n1").type == "info"

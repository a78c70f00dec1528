"""The peer-wire fuzzer: a short fixed-seed run is clean, and the harness catches what it hunts."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftly.core.messages import AppendEntries, Heartbeat
from raftly.testing import wirefuzz
from raftly.testing.wirefuzz import TARGETS, Invalid, Target, check_message, run, run_sockets
from raftly.transport import codec, tcp
from raftly.transport.framing import read_frame


def test_a_short_fixed_seed_run_over_every_decoder_finds_nothing() -> None:
    report = run(16_000, seed=0, alloc_every=50)
    assert report.inputs == 16_000
    assert not report.findings, "\n".join(report.lines())
    for name in TARGETS:  # the mutations reach past the first check of every decoder
        assert report.outcomes[f"{name} accepted"] > 0, name
        assert report.outcomes[f"{name} refused"] > 0, name
    assert report.alloc_checked >= 16_000 // 50


def _only(name: str, decode: Any, check: Any = None) -> dict[str, Target]:
    return {name: Target(decode, check or TARGETS[name].check)}


def test_the_harness_reports_a_decoder_that_raises_something_else_than_codec_error() -> None:
    def broken(data: bytes) -> Any:
        if len(data) % 3 == 0:
            raise ValueError("not a CodecError")
        return codec.decode_message(data)

    report = run(300, seed=1, targets=_only("message", broken))
    kinds = {f.kind for f in report.findings.values()}
    assert kinds == {"crash"}
    assert any("ValueError" in f.detail for f in report.findings.values())


def test_the_harness_reports_an_allocation_sized_by_a_declared_length() -> None:
    def trusting(data: bytes) -> Any:
        if len(data) >= 4:
            bytearray(min(int.from_bytes(data[:4], "big"), 8 << 20))  # buffers the claim
        return codec.decode_message(data)

    report = run(300, seed=2, alloc_every=1, targets=_only("message", trusting))
    assert any(f.kind == "alloc" for f in report.findings.values())


def test_the_harness_reports_a_decoded_message_the_core_must_not_see() -> None:
    def lax(data: bytes) -> Any:  # skips validation: a negative commit slips through
        codec.decode_message(data)
        return Heartbeat(term=1, src=2, dst=1, commit=-1)

    report = run(300, seed=3, targets=_only("message", lax))
    assert any(f.kind == "invalid" and "commit" in f.detail for f in report.findings.values())


def test_check_message_refuses_what_a_correct_leader_never_sends() -> None:
    check_message(AppendEntries(term=2, src=1, dst=2, prev_index=0, prev_term=2))
    with pytest.raises(Invalid):
        check_message(AppendEntries(term=2, src=1, dst=2, prev_index=0, prev_term=3))
    with pytest.raises(Invalid):
        check_message(Heartbeat(term=1, src=1, dst=2, commit=True))  # a bool is not an int


def test_the_harness_reports_a_slow_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wirefuzz, "SLOW_INPUT", 0.02)

    def slow(data: bytes) -> Any:
        time.sleep(0.03)  # every time: the harness retries once before it reports
        return codec.decode_message(data)

    report = run(10, seed=4, alloc_every=0, targets=_only("message", slow))
    assert [f.kind for f in report.findings.values()] == ["slow"]
    assert next(iter(report.findings.values())).count == 10


def test_the_harness_reports_a_frame_reader_that_waits_on_an_ended_stream() -> None:
    loop = asyncio.new_event_loop()
    try:
        reader = asyncio.StreamReader(loop=loop)
        reader.feed_data(b"\x00\x00\x00\x05ab")  # and no end of stream: read_frame must wait
        with pytest.raises(Invalid, match="waited"):
            wirefuzz._run_to_end(read_frame(reader))
    finally:
        loop.close()


@settings(derandomize=True, max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), name=st.sampled_from(sorted(TARGETS)))
def test_hypothesis_drives_the_mutator_over_every_decoder(seed: int, name: str) -> None:
    rng = random.Random(seed)
    corpus = wirefuzz.seed_corpus(random.Random(seed % 7))
    everything = [d for ds in corpus.values() for d in ds]
    data = wirefuzz.mutate(rng, rng.choice(corpus[name]), everything,
                           name in ("frame_decoder", "read_frame"))
    report = wirefuzz.Report()
    wirefuzz.check_input(report, name, TARGETS[name], data, alloc=seed % 10 == 0)
    assert not report.findings, "\n".join(report.lines())


@settings(derandomize=True, max_examples=300, deadline=None)
@given(data=st.binary(max_size=200), name=st.sampled_from(sorted(TARGETS)))
def test_hypothesis_random_bytes_give_codec_error_or_a_valid_value(data: bytes, name: str) -> None:
    report = wirefuzz.Report()
    wirefuzz.check_input(report, name, TARGETS[name], data)
    assert not report.findings, "\n".join(report.lines())


def test_hostile_connections_each_get_one_refusal_line_and_a_peer_is_still_served() -> None:
    report = asyncio.run(asyncio.wait_for(run_sockets(70, seed=0, concurrency=35), 60))
    assert not report.findings, "\n".join(report.lines())
    assert report.connections == 70
    assert report.legit_rounds == 2
    assert all(", 1 refusal line(s)" in outcome and "closed" in outcome
               for outcome in report.outcomes)


def test_the_socket_harness_reports_a_transport_that_crashes_on_a_frame(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(data: bytes, **kwargs: Any) -> Any:
        raise ValueError("a decoder bug")  # not a CodecError: the receiving task dies

    monkeypatch.setattr(tcp, "decode_message", broken)
    report = asyncio.run(asyncio.wait_for(run_sockets(40, seed=0, concurrency=40, timeout=2), 60))
    assert any("crashed" in f or "ERROR" in f for f in report.findings)

"""The comparison's ratios and targets on fake figures: each threshold just met and just missed,
and "not measured" when a figure is absent."""

from __future__ import annotations

from raftly.bench.stats import Row
from raftly.bench.verdicts import Extras, Target, ratios, targets


def row(clients: int, rate: float, p50: float = 1.0) -> Row:
    return Row(clients, rate, p50, p50 * 2, 0, 1.0, 1.0)


def verdicts(found: list[Target]) -> dict[str, bool | None]:
    return {t.target: t.met for t in found}


def test_ratios_divide_each_pair_per_level_measured_by_both() -> None:
    rows = {"raftly-http": {1: row(1, 300, 3.0), 16: row(16, 1500, 8.0)},
            "etcd-http": {1: row(1, 600, 1.5), 16: row(16, 1000, 16.0)},
            "raftly-lib": {1: row(1, 500)}}
    found = {(r.pair, r.clients): (r.throughput, r.p50) for r in ratios(rows)}
    assert found == {("raftly-http / etcd-http", 1): (0.5, 2.0),
                     ("raftly-http / etcd-http", 16): (1.5, 0.5)}, "no pysyncobj: no lib ratio"


def test_one_client_library_p50_target_is_four_raw_fsyncs() -> None:
    fsync = 0.25
    met = verdicts(targets({"raftly-lib": {1: row(1, 900, p50=1.0)}}, fsync))
    missed = verdicts(targets({"raftly-lib": {1: row(1, 900, p50=1.01)}}, fsync))
    name = "1 client: raftly-lib p50 <= 4x raw fsync median"
    assert met[name] is True and missed[name] is False
    assert met["1 client: raftly-lib-3proc p50 <= 4x raw fsync median"] is None
    assert verdicts(targets({"raftly-lib": {1: row(1, 900)}}, None))[name] is None


def test_http_targets_compare_with_etcd_at_one_client_and_by_throughput_from_16() -> None:
    def http(ours: float, theirs: float, p50: float) -> dict[str, bool | None]:
        return verdicts(targets({"raftly-http": {1: row(1, 1, p50), 16: row(16, ours)},
                                 "etcd-http": {1: row(1, 1, 2.0), 16: row(16, theirs)}}, 0.2))

    name = "16 clients: raftly-http throughput >= 1.5x etcd-http"
    assert http(1500, 1000, 2.0)[name] is True
    assert http(1499, 1000, 2.0)[name] is False
    one = "1 client: raftly-http p50 <= etcd-http p50"
    assert http(1, 1, 2.0)[one] is True and http(1, 1, 2.01)[one] is False
    assert http(1, 1, 2.0)["64 clients: raftly-http throughput >= 1.5x etcd-http"] is None


def test_library_targets_are_2x_pysyncobj_at_16_and_5x_at_256_for_both_layouts() -> None:
    theirs = {16: row(16, 1000), 256: row(256, 1000)}
    just = {16: row(16, 2000), 256: row(256, 5000)}
    short = {16: row(16, 1999), 256: row(256, 4999)}
    met = verdicts(targets({"raftly-lib": just, "raftly-lib-3proc": just,
                            "pysyncobj": theirs}, 0.2))
    missed = verdicts(targets({"raftly-lib": short, "raftly-lib-3proc": short,
                               "pysyncobj": theirs}, 0.2))
    for system in ("raftly-lib", "raftly-lib-3proc"):
        for clients, factor in ((16, 2), (256, 5)):
            name = f"{clients} clients: {system} throughput >= {factor}x pysyncobj"
            assert met[name] is True and missed[name] is False, name


def test_reads_overload_and_simulator_targets() -> None:
    rows = {"raftly-http": {64: row(64, 1000)}}
    met = verdicts(targets(rows, 0.2, Extras(linearizable_reads=3000, stale_reads=8000,
                                             http_ceiling=10000, overload_goodput_ratio=0.9,
                                             overload_leader_changes=0, overload_p99_ms=200,
                                             overload_peak_p99_ms=100, overload_unruly=0,
                                             sim_x_real_time=100)))
    missed = verdicts(targets(rows, 0.2, Extras(linearizable_reads=2999, stale_reads=7999,
                                                http_ceiling=10000,
                                                overload_goodput_ratio=0.89,
                                                overload_leader_changes=1,
                                                overload_p99_ms=200.1,
                                                overload_peak_p99_ms=100, overload_unruly=0,
                                                sim_x_real_time=99.9)))
    names = ["64 clients: linearizable reads/s >= 3x raftly-http puts/s",
             "64 clients: stale reads/s >= 80% of the HTTP ceiling (GET /v1/status/s)",
             "overload (4x peak clients): goodput >= 90% of peak", "overload: no leader change",
             "overload: p99 <= 2x the peak's, every refusal a 503 with Retry-After",
             "simulator: 5 nodes, 500 cmd/virtual s >= 100x real time"]
    for name in names:
        assert met[name] is True and missed[name] is False, name
    unruly = verdicts(targets(rows, 0.2, Extras(overload_p99_ms=100, overload_peak_p99_ms=100,
                                                overload_unruly=1)))
    assert unruly["overload: p99 <= 2x the peak's, every refusal a 503 with Retry-After"] is False
    nothing = verdicts(targets(rows, 0.2))
    assert all(nothing[name] is None for name in names)
    assert Target("x", "-", None).verdict == "not measured"
    assert Target("x", "1", False).verdict == "NOT met"

"""Prometheus metrics of real ``raftly serve`` processes: across a SIGKILL of the leader the
survivors count the leader change and the new leader's election, and the new leader reports
each follower's lag; ``serve --no-metrics`` answers 404."""

from __future__ import annotations

import contextlib
import json
import signal
from pathlib import Path

from e2e_helpers import new_cluster, request, started
from polling import wait_until
from scrape import Scrape

from raftly.kv.client import Client
from raftly.localcluster import ProcessCluster


def scrape(cluster: ProcessCluster, name: str) -> Scrape:
    reply = request(cluster.nodes[name].api, "GET", "/metrics")
    assert reply.status == 200, reply.body
    return Scrape.parse(reply.body.decode())


def test_a_leader_kill_moves_the_survivors_counters_and_the_new_leader_reports_lag(
        cluster: ProcessCluster) -> None:
    old_leader, _ = cluster.wait_for_leader()
    with Client(cluster.endpoints, timeout=15) as kv:
        for i in range(10):
            kv.put(f"before/{i}", b"v")
    survivors = [n for n in cluster.nodes if n != old_leader]
    before = {n: scrape(cluster, n) for n in survivors}
    for name in survivors:
        assert before[name].value("raftly_leader_changes_seen_total") >= 1

    cluster.kill(old_leader, signal.SIGKILL)
    new_leader, _ = cluster.wait_for_leader(timeout=30, among=survivors)
    with Client([cluster.nodes[n].api for n in survivors], timeout=15) as kv:
        for i in range(25):
            kv.put(f"after/{i}", b"v")

    after = {n: scrape(cluster, n) for n in survivors}
    for name in survivors:
        assert after[name].value("raftly_leader_changes_seen_total") > \
            before[name].value("raftly_leader_changes_seen_total"), name
        assert after[name].value("raftly_term") > before[name].value("raftly_term"), name
    # The new leader won an election it started.
    assert after[new_leader].value("raftly_elections_started_total") > \
        before[new_leader].value("raftly_elections_started_total")
    assert after[new_leader].value("raftly_role", role="leader") == 1
    assert after[new_leader].value("raftly_proposals_total", outcome="ok") >= 25
    follower = next(n for n in survivors if n != new_leader)
    assert after[follower].value("raftly_role", role="follower") == 1
    lags = after[new_leader].label_values("raftly_follower_lag_entries", "follower")
    assert lags == {old_leader, follower}
    # The new leader never heard from the dead node, so it knows no match for it: its lag is
    # the whole log (more than the 25 entries written since it died), as docs/metrics.md says.
    assert after[new_leader].value("raftly_follower_lag_entries", follower=old_leader) == \
        after[new_leader].value("raftly_last_index")
    # The live follower catches up with everything once the writes stop.
    wait_until("the live follower's lag to reach 0", lambda: scrape(
        cluster, new_leader).value("raftly_follower_lag_entries", follower=follower) == 0)
    # Traffic is counted per peer name, the dead one too (what it was sent before dying).
    sent = after[new_leader].label_values("raftly_peer_sent_messages_total", "peer")
    assert sent == {old_leader, follower}
    assert after[new_leader].value("raftly_peer_received_bytes_total", peer=follower) > 0


def test_serve_no_metrics_answers_404_and_serves_the_rest(tmp_path: Path) -> None:
    one = new_cluster(tmp_path, nodes=1, serve_options=["--no-metrics"])
    with contextlib.contextmanager(started)(one):
        leader, _ = one.wait_for_leader()
        api = one.nodes[leader].api
        reply = request(api, "GET", "/metrics")
        assert reply.status == 404
        assert reply.headers["content-type"].startswith("application/json")
        assert "--no-metrics" in json.loads(reply.body)["error"]
        assert request(api, "PUT", "/v1/kv/k", b"v").status == 200

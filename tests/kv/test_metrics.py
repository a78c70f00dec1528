"""Prometheus metrics of a node (raftly.kv.metrics): what ``GET /metrics`` shows after real
writes on an in-process cluster, parsed as Prometheus would; the observer's counting of
elections and leader changes; bounded labels; the read role; a node without metrics."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from kv_helpers import AUTH, FAST, READ, SecureCluster, bearer, call, followers, run
from polling import eventually
from scrape import Scrape

from raftly.core.node import Role
from raftly.kv.cluster_file import ClusterSpec
from raftly.kv.metrics import NodeMetrics
from raftly.kv.service import LocalCluster, RunningNode, start_node
from raftly.server.observer import ProposalOutcome
from raftly.server.snapshots import SnapshotSettings
from raftly.storage import MemoryStorage
from raftly.transport import Transport


async def scrape(session: aiohttp.ClientSession, node: RunningNode,
                 token: str | None = None) -> Scrape:
    async with session.get(node.url + "/metrics",
                           headers=bearer(token) if token else None) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/plain; version=")
        return Scrape.parse(await resp.text())


def observed(metrics: NodeMetrics) -> Scrape:
    return Scrape.parse(metrics.exposition().decode())


def test_writes_move_the_proposal_fsync_and_request_counters_of_the_leader() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST) as cluster, aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            before = await scrape(s, leader)
            for i in range(20):
                status, _, _ = await call(s, "PUT", f"{leader.url}/v1/kv/key/{i}", data=b"v")
                assert status == 200
            after = await scrape(s, leader)
            ok = ("raftly_proposals_total", {"outcome": "ok"})
            assert after.value(ok[0], **ok[1]) - before.value(ok[0], **ok[1]) == 20
            assert after.value("raftly_proposals_total", outcome="timed_out") == 0
            count = "raftly_proposal_duration_seconds_count"
            assert after.value(count) - before.value(count) == 20
            assert after.value("raftly_proposal_duration_seconds_sum") > 0
            # Every entry reached the disk in some fsynced save, some carrying several.
            entries = "raftly_fsync_entries_sum"
            assert after.value(entries) - before.value(entries) >= 20
            assert after.value("raftly_fsync_duration_seconds_count") > \
                before.value("raftly_fsync_duration_seconds_count")
            assert after.types["raftly_fsync_duration_seconds"] == "histogram"
            # Requests are counted by the route they matched, never by the raw path.
            put = {"method": "PUT", "route": "/v1/kv/{key}", "status": "200"}
            assert after.value("raftly_http_requests_total", **put) == 20
            assert after.value("raftly_http_request_duration_seconds_count", method="PUT",
                               route="/v1/kv/{key}") == 20
            assert after.label_values("raftly_http_requests_total", "route") == {
                "/v1/kv/{key}", "/metrics"}
            # A follower made no proposal, but saves the same entries (perhaps a moment later:
            # the leader answered once one follower had them).
            follower = followers(cluster, leader)[0]

            async def saved_all() -> Scrape | None:
                seen = await scrape(s, follower)
                return seen if seen.value("raftly_fsync_entries_sum") >= 20 else None

            seen = await eventually(saved_all, what="the follower's saves")
            assert seen.value("raftly_proposals_total", outcome="ok") == 0

    run(main())


def test_role_term_indexes_lag_and_peer_traffic_are_read_at_scrape_time() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST) as cluster, aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            for i in range(5):
                await call(s, "PUT", f"{leader.url}/v1/kv/k{i}", data=b"v")
            st = leader.server.status()
            seen = await scrape(s, leader)
            assert seen.value("raftly_role", role="leader") == 1
            assert seen.value("raftly_role", role="follower") == 0
            assert seen.value("raftly_term") == st.term
            assert seen.value("raftly_leader_known") == 1
            assert seen.value("raftly_commit_index") >= 6  # the leader's entry, the 5 writes
            assert seen.value("raftly_last_index") >= seen.value("raftly_commit_index")
            assert seen.value("raftly_first_index") == 1
            assert seen.value("raftly_pending_proposals") == 0
            others = {n.name for n in followers(cluster, leader)}
            assert seen.label_values("raftly_follower_lag_entries", "follower") == others
            # Each follower's lag is what the leader still has to send it: nothing, once idle.
            for name in others:
                await eventually(lambda name=name: _lag(s, leader, name), what="lag 0")
            assert seen.label_values("raftly_peer_sent_bytes_total", "peer") == others
            for name in others:
                assert seen.value("raftly_peer_sent_messages_total", peer=name) > 0
                assert seen.value("raftly_peer_received_bytes_total", peer=name) > 0
            assert seen.types["raftly_peer_sent_bytes"] == "counter"
            follower = followers(cluster, leader)[0]
            theirs = await scrape(s, follower)
            assert theirs.value("raftly_role", role="follower") == 1
            assert theirs.value("raftly_applied_index") <= theirs.value("raftly_commit_index")
            assert not theirs.label_values("raftly_follower_lag_entries", "follower")
            assert theirs.value("raftly_leader_changes_seen_total") >= 1

    run(main())


async def _lag(s: aiohttp.ClientSession, node: RunningNode, follower: str) -> bool:
    return (await scrape(s, node)).value("raftly_follower_lag_entries", follower=follower) == 0


def test_elections_and_leader_changes_are_counted_from_role_changes() -> None:
    metrics = NodeMetrics()
    # A follower of node 1 in term 3, then it loses the leader (a pre-vote keeps the term).
    metrics.role_changed(Role.FOLLOWER, 3, None)
    metrics.role_changed(Role.FOLLOWER, 3, 1)
    metrics.role_changed(Role.PRE_CANDIDATE, 3, None)
    metrics.role_changed(Role.FOLLOWER, 3, 1)  # the same leadership found again: no change
    seen = observed(metrics)
    assert seen.value("raftly_elections_started_total") == 0
    assert seen.value("raftly_leader_changes_seen_total") == 1
    # It campaigns in term 4 and loses to node 3, campaigns in term 6 and wins.
    metrics.role_changed(Role.CANDIDATE, 4, None)
    metrics.role_changed(Role.FOLLOWER, 5, 3)
    metrics.role_changed(Role.CANDIDATE, 6, None)
    metrics.role_changed(Role.LEADER, 6, 2)
    # A single voter wins within one step: leader in a new term at once.
    metrics.role_changed(Role.LEADER, 7, 2)
    seen = observed(metrics)
    assert seen.value("raftly_elections_started_total") == 3
    assert seen.value("raftly_leader_changes_seen_total") == 4


def test_proposal_outcomes_fsyncs_and_snapshots_land_in_their_series() -> None:
    metrics = NodeMetrics()
    for outcome, seconds in ((ProposalOutcome.OK, 0.002), (ProposalOutcome.OK, 0.004),
                             (ProposalOutcome.DROPPED, 0.001), (ProposalOutcome.TIMED_OUT, 5)):
        metrics.proposal_finished(seconds, outcome)
    metrics.saved(0.0003, 0)
    metrics.saved(0.0007, 100)
    metrics.snapshot_taken(0.2, 4096, 50)
    metrics.snapshot_taken(0.3, 8192, 90)
    seen = observed(metrics)
    assert seen.value("raftly_proposals_total", outcome="ok") == 2
    assert seen.value("raftly_proposals_total", outcome="dropped") == 1
    assert seen.value("raftly_proposals_total", outcome="timed_out") == 1
    assert seen.value("raftly_proposal_duration_seconds_bucket", le="0.0025") == 2
    assert seen.value("raftly_proposal_duration_seconds_bucket", le="+Inf") == 4
    assert seen.value("raftly_fsync_entries_bucket", le="0.0") == 1
    assert seen.value("raftly_fsync_entries_bucket", le="64.0") == 1
    assert seen.value("raftly_fsync_entries_sum") == 100
    assert seen.value("raftly_fsync_duration_seconds_bucket", le="0.0005") == 1
    assert seen.value("raftly_snapshots_taken_total") == 2
    assert seen.value("raftly_snapshot_last_size_bytes") == 8192
    assert seen.value("raftly_snapshot_duration_seconds_count") == 2
    # Not watching a node yet: no gauge is made up.
    assert "raftly_term" not in seen.types


def test_a_snapshot_taken_by_a_node_shows_in_its_metrics(tmp_path: Path) -> None:
    async def main() -> None:
        async with LocalCluster(1, config=FAST, data_dir=tmp_path,
                                snapshot=SnapshotSettings(5, 0)) as cluster, \
                aiohttp.ClientSession() as s:
            node = await cluster.wait_for_leader()
            for i in range(12):
                await call(s, "PUT", f"{node.url}/v1/kv/k{i}", data=b"v" * 100)

            async def snapshotted() -> Scrape | None:
                seen = await scrape(s, node)
                return seen if seen.value("raftly_snapshot_index") > 0 else None

            seen = await eventually(snapshotted, what="a snapshot")
            assert seen.value("raftly_snapshots_taken_total") >= 1
            # The first snapshot (at index ~5) may be the one scraped: it covers the leader's
            # entry and at least 4 of the keys, not all 12.
            assert seen.value("raftly_snapshot_last_size_bytes") > 4 * 100
            assert seen.value("raftly_snapshot_duration_seconds_count") >= 1
            assert seen.value("raftly_first_index") > 1  # the log was compacted behind it
            # A single voter starts its own elections and leads at once.
            assert seen.value("raftly_elections_started_total") == 1

    run(main())


def test_request_labels_stay_bounded_whatever_the_client_sends() -> None:
    async def main() -> None:
        async with LocalCluster(1, config=FAST) as cluster, aiohttp.ClientSession() as s:
            node = await cluster.wait_for_leader()
            for path in ("/nothing/here", "/v1/kv/a/b/c?consistency=stale", "/v1/kv/x%2Fy"):
                await call(s, "GET", node.url + path)
            await call(s, "PROPFIND", node.url + "/v1/kv/pot")  # a method no route takes
            await call(s, "GET", node.url + "/v1/kv/k?bogus=1")  # refused 400 by the query check
            seen = await scrape(s, node)
            assert seen.label_values("raftly_http_requests_total", "route") == {
                "unmatched", "/v1/kv/{key}"}
            assert seen.label_values("raftly_http_requests_total", "method") == {"GET", "other"}
            assert seen.value("raftly_http_requests_total", method="GET", route="unmatched",
                              status="404") == 1
            assert seen.value("raftly_http_requests_total", method="other", route="unmatched",
                              status="405") == 1
            assert seen.value("raftly_http_requests_total", method="GET", route="/v1/kv/{key}",
                              status="400") == 1
            assert seen.value("raftly_http_requests_total", method="GET", route="/v1/kv/{key}",
                              status="404") == 2

    run(main())


def test_metrics_need_the_read_role_with_an_auth_file() -> None:
    async def main() -> None:
        async with SecureCluster(1, config=FAST, auth=AUTH) as cluster, \
                aiohttp.ClientSession() as s:
            node = await cluster.wait_for_leader()
            status, body, headers = await call(s, "GET", node.url + "/metrics")
            assert status == 401 and body["code"] == "unauthorized"
            assert headers["WWW-Authenticate"] == "Bearer"
            seen = await scrape(s, node, READ)
            # The refusal was counted too, under the route it asked for.
            assert seen.value("raftly_http_requests_total", method="GET", route="/metrics",
                              status="401") == 1

    run(main())


class _NoMetricsCluster(LocalCluster):
    async def start_node(self, cluster: ClusterSpec, name: str, transport: Transport, *,
                         bootstrap: bool = True) -> RunningNode:
        return await start_node(cluster, name, storage=MemoryStorage(), transport=transport,
                                config=self.config, bootstrap=bootstrap, metrics=False)


def test_a_node_started_without_metrics_answers_404_with_a_json_error() -> None:
    async def main() -> None:
        async with _NoMetricsCluster(1, config=FAST) as cluster, aiohttp.ClientSession() as s:
            node = await cluster.wait_for_leader()
            assert node.api.metrics is None
            status, body, _ = await call(s, "GET", node.url + "/metrics")
            assert status == 404
            assert "--no-metrics" in body["error"]
            assert (await call(s, "PUT", node.url + "/v1/kv/k", data=b"v"))[0] == 200

    run(main())

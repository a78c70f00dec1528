"""Prometheus metrics of one key-value node: what ``GET /metrics`` answers.

``NodeMetrics`` owns a ``CollectorRegistry`` of its own (never prometheus-client's global one:
tests and ``LocalCluster`` run several nodes in one process) and is its one collector: it
builds every metric family at scrape time from:

- counts kept as things happen: as the ``RaftServer``'s observer (proposal outcomes and
  latency, fsynced saves, role/term/leader changes, snapshots taken) and from the KV API's
  middleware, for every answer as it leaves (requests by method, route pattern and status, and
  their duration). They are plain ints and bucket arrays, not prometheus-client's
  ``Counter``/``Histogram``: those take a lock per update (a histogram several): 2-5 us an
  event where this takes under 1 us, measured side by side. Every update here runs on the
  event loop, which the scrape runs on too;
- the node itself, read at scrape time: role, term, indexes, pending proposals, each follower's
  lag on the leader, the traffic with each peer (which the transport counts anyway).

Label values are bounded, so a client cannot grow the registry: a request's route is the
pattern it matched (``/v1/kv/{key}``, never the raw path; ``unmatched`` for a 404 or 405), an
unusual method counts as ``other``, and a peer is a member the transport was configured with
(what an id claimed by a stranger sends is not counted). docs/metrics.md lists every metric.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from typing import Protocol, runtime_checkable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from raftly.core.node import Role
from raftly.core.types import NodeId
from raftly.kv.cluster_file import ClusterSpec
from raftly.kv.http_common import Reply
from raftly.server.observer import ProposalOutcome
from raftly.server.server import RaftServer, ServerStopped
from raftly.transport.base import PeerTraffic

METRICS_PATH = "/metrics"

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds, for proposals, fsyncs and HTTP requests: an fsync or a commit on a fast disk takes
a fraction of a millisecond, so the defaults (from 5 ms) would put them all in one bucket."""
ENTRY_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
"""Entries carried by one fsynced save (group commit); 0 is a term or vote change alone."""
SNAPSHOT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

UNMATCHED = "unmatched"
"""The route label of a request that matched no route (404, 405)."""
METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"})
"""Methods counted under their own name; any other is ``other`` (a client may send anything)."""

@runtime_checkable
class TrafficCounting(Protocol):
    """A transport that counts its traffic per peer (``TcpTransport``)."""

    def traffic(self) -> dict[int, PeerTraffic]: ...


class _Histogram:
    """One histogram's counts: a bucket per bound (Prometheus's ``le``: value <= bound) and one
    past the last, and the sum; made cumulative only when scraped."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        cumulative = 0
        out: list[tuple[str, float]] = []
        # Bounds written as prometheus-client writes them (repr of the float), then +Inf.
        for le, count in zip((*map(repr, self.bounds), "+Inf"), self.counts, strict=True):
            cumulative += count
            out.append((le, float(cumulative)))
        return out


class NodeMetrics:
    """The metrics of one node: its registry, the server observer, the HTTP request counts, and the
    ``/metrics`` handler.

    Made before the ``RaftServer`` (which takes it in ``observers=[...]``); ``watch`` then hands
    it the server, transport and cluster view its scrape-time gauges read. Everything runs on
    the node's event loop: updates and scrapes never race.
    """

    __slots__ = ("_leadership", "_node", "_term", "elections", "fsync_entries", "fsync_seconds",
                 "http_requests", "http_seconds", "leader_changes", "proposal_seconds",
                 "proposals", "registry", "snapshot_bytes", "snapshot_seconds", "snapshots")

    def __init__(self) -> None:
        self.proposals = dict.fromkeys(ProposalOutcome, 0)
        self.proposal_seconds = _Histogram(LATENCY_BUCKETS)
        self.fsync_seconds = _Histogram(LATENCY_BUCKETS)
        self.fsync_entries = _Histogram(ENTRY_BUCKETS)
        self.leader_changes = 0
        self.elections = 0
        self.snapshots = 0
        self.snapshot_seconds = _Histogram(SNAPSHOT_BUCKETS)
        self.snapshot_bytes = 0
        self.http_requests: dict[tuple[str, str, int], int] = {}
        """Answers by (method, route, status)."""
        self.http_seconds: dict[tuple[str, str], _Histogram] = {}
        self._term = 0
        self._leadership: tuple[int, NodeId] | None = None
        self._node: _NodeReader | None = None
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def watch(self, server: RaftServer, transport: object,
              cluster: Callable[[], ClusterSpec]) -> None:
        """Read the gauges from ``server``, the per-peer traffic from ``transport`` (if it counts
        it) and the members' names from ``cluster()`` (the current view) at each scrape."""
        if self._node is not None:
            raise RuntimeError("NodeMetrics.watch: already watching a node")
        self._node = _NodeReader(server, transport, cluster)

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)

    def collect(self) -> Iterable[Metric]:
        """Every family, built now (the registry calls it at each scrape)."""
        proposals = CounterMetricFamily(
            "raftly_proposals", "Proposals this node made as leader, by outcome (ok, dropped: "
            "certainly not applied, timed_out: may be applied)", labels=["outcome"])
        for outcome, count in self.proposals.items():
            proposals.add_metric([outcome.value], float(count))
        yield proposals
        yield _histogram("raftly_proposal_duration_seconds", "Time from a proposal to its "
                         "outcome (every outcome: what the caller waited)", self.proposal_seconds)
        yield _histogram("raftly_fsync_duration_seconds", "Duration of each save that had to "
                         "reach the disk (entries and hard state, one fsync)", self.fsync_seconds)
        yield _histogram("raftly_fsync_entries", "Log entries carried by each fsynced save "
                         "(group commit)", self.fsync_entries)
        yield CounterMetricFamily("raftly_leader_changes_seen", "Times this node learned of a "
                                  "new leadership (a leader in a newer term)",
                                  value=self.leader_changes)
        yield CounterMetricFamily("raftly_elections_started", "Elections this node started (a "
                                  "new term as candidate, or as leader at once)",
                                  value=self.elections)
        yield CounterMetricFamily("raftly_snapshots_taken", "Snapshots this node wrote of its "
                                  "own state", value=self.snapshots)
        yield _histogram("raftly_snapshot_duration_seconds", "Time to write a snapshot of this "
                         "node's state", self.snapshot_seconds)
        yield GaugeMetricFamily("raftly_snapshot_last_size_bytes", "Size of the last snapshot "
                                "this node wrote", value=self.snapshot_bytes)
        requests = CounterMetricFamily(
            "raftly_http_requests", "API requests answered, by method, route pattern and "
            "status", labels=["method", "route", "status"])
        for (method, route, status), count in sorted(self.http_requests.items()):
            requests.add_metric([method, route, str(status)], float(count))
        yield requests
        durations = HistogramMetricFamily(
            "raftly_http_request_duration_seconds", "Time to answer an API request (a watch: "
            "the whole stream), by method and route pattern", labels=["method", "route"])
        for (method, route), values in sorted(self.http_seconds.items()):
            durations.add_metric([method, route], values.buckets(), values.sum)
        yield durations
        if self._node is not None:
            yield from self._node.collect()

    # -- the server observer (on the event loop, on the commit path: keep it cheap) ----------

    def proposal_finished(self, seconds: float, outcome: ProposalOutcome) -> None:
        self.proposals[outcome] += 1
        self.proposal_seconds.observe(seconds)

    def saved(self, seconds: float, entries: int) -> None:
        self.fsync_seconds.observe(seconds)
        self.fsync_entries.observe(entries)

    def role_changed(self, role: Role, term: int, leader: NodeId | None) -> None:
        # See the observer's docstring: an election started shows as a new term with the role
        # CANDIDATE, or LEADER when it was won within one step (a single voter).
        if term > self._term and role in (Role.CANDIDATE, Role.LEADER):
            self.elections += 1
        # A term has at most one leader, so (term, leader) names a leadership: losing sight of
        # the leader and finding it again in the same term is no change.
        if leader is not None and (term, leader) != self._leadership:
            self.leader_changes += 1
            self._leadership = (term, leader)
        self._term = max(self._term, term)

    def snapshot_taken(self, seconds: float, size: int, index: int) -> None:
        self.snapshots += 1
        self.snapshot_seconds.observe(seconds)
        self.snapshot_bytes = size

    # -- HTTP -----------------------------------------------------------------------------------

    def count_request(self, request: web.Request, status: int, elapsed: float) -> None:
        """Count one answer of ``status`` to ``request``, which took ``elapsed`` seconds (the KV
        API's middleware calls it for every answer, refusals and errors included)."""
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else UNMATCHED
        method = request.method if request.method in METHODS else "other"
        key = (method, route, status)
        self.http_requests[key] = self.http_requests.get(key, 0) + 1
        durations = self.http_seconds.get(key[:2])
        if durations is None:
            durations = self.http_seconds[key[:2]] = _Histogram(LATENCY_BUCKETS)
        durations.observe(elapsed)

    async def scrape(self, request: web.Request) -> web.Response:
        """``GET /metrics``: the Prometheus text format."""
        return web.Response(body=self.exposition(),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})


async def metrics_off(request: web.Request) -> web.Response:
    """``GET /metrics`` on a node started without metrics (``serve --no-metrics``)."""
    raise Reply(404, "metrics are off on this node (it was started with --no-metrics)")


def add_metrics_route(app: web.Application, metrics: NodeMetrics | None) -> None:
    """``GET /metrics``: the metrics, or a JSON 404 saying they are off."""
    app.router.add_get(METRICS_PATH, metrics.scrape if metrics is not None else metrics_off)


def _histogram(name: str, text: str, values: _Histogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, text, buckets=values.buckets(), sum_value=values.sum)


class _NodeReader:
    """The gauges and the transport's counters, read from the node at each scrape (on the
    event loop, like every other reader of the node)."""

    __slots__ = ("_cluster", "_server", "_transport")

    def __init__(self, server: RaftServer, transport: object,
                 cluster: Callable[[], ClusterSpec]) -> None:
        self._server = server
        self._transport = transport if isinstance(transport, TrafficCounting) else None
        self._cluster = cluster

    def _name(self, node_id: int) -> str:
        spec = self._cluster().by_id(node_id)
        return spec.name if spec is not None else str(node_id)

    def collect(self) -> Iterable[Metric]:
        yield from self._raft()
        if self._transport is not None:
            yield from self._traffic(self._transport.traffic())

    def _raft(self) -> Iterable[Metric]:
        server = self._server
        try:
            node = server.node
            st = server.status()
        except ServerStopped:  # not started yet: nothing to read
            return
        role = GaugeMetricFamily("raftly_role", "1 for the role this node has now, else 0",
                                 labels=["role"])
        for each in Role:
            role.add_metric([each.value], 1.0 if node.role is each else 0.0)
        yield role
        for name, text, value in (
            ("raftly_term", "The current term", st.term),
            ("raftly_leader_known", "1 if this node knows a leader", st.leader is not None),
            ("raftly_commit_index", "The highest log index known committed", st.commit_index),
            ("raftly_applied_index", "The highest log index applied to the state machine",
             st.applied_index),
            ("raftly_last_index", "The last index in this node's log", st.last_index),
            ("raftly_first_index", "The first index this node's log holds (those before it "
             "are only in the snapshot)", st.first_index),
            ("raftly_snapshot_index", "The last index the newest snapshot covers (0: none)",
             st.snapshot_index),
            ("raftly_log_size_bytes", "What the log's segments occupy in storage",
             st.log_bytes),
            ("raftly_pending_proposals", "Proposals accepted and waiting for their outcome",
             server.pending_proposals),
        ):
            yield GaugeMetricFamily(name, text, value=float(value))
        if node.is_leader:
            lag = GaugeMetricFamily("raftly_follower_lag_entries", "On the leader: entries the "
                                    "follower does not hold yet (last index - its match)",
                                    labels=["follower"])
            for peer in (*st.voters, *st.learners):
                progress = node.progress(peer) if peer != st.id else None
                if progress is not None:
                    lag.add_metric([self._name(peer)],
                                   float(max(0, st.last_index - progress.match)))
            yield lag

    def _traffic(self, traffic: dict[int, PeerTraffic]) -> Iterable[Metric]:
        families = [
            (CounterMetricFamily(f"raftly_peer_{what}", f"Raft {text} (snapshot transfers not "
                                 "included)", labels=["peer"]), field)
            for what, text, field in (
                ("sent_messages", "messages sent to the peer", "messages_sent"),
                ("sent_bytes", "bytes of message frames sent to the peer", "bytes_sent"),
                ("received_messages", "messages received from the peer", "messages_received"),
                ("received_bytes", "bytes of message frames received from the peer",
                 "bytes_received"),
            )
        ]
        for peer, counts in sorted(traffic.items()):
            name = self._name(peer)
            for family, field in families:
                family.add_metric([name], float(getattr(counts, field)))
        for family, _ in families:
            yield family


__all__ = ["METRICS_PATH", "NodeMetrics", "add_metrics_route", "metrics_off"]

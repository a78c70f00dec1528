"""Running key-value nodes: ``serve`` for one real node, ``LocalCluster`` for N in one process.

A node is DiskStorage (or MemoryStorage) + a transport + ``RaftServer`` + the HTTP API. With
TLS both ports use the node's certificate: mutual TLS on the peer port (``peer_transport``), HTTPS
on the API, and https with that certificate (and the node's token) for its own calls to the other
members' APIs (``NodeCalls``).

On shutdown the Raft server closes first, so requests still waiting on it are answered at once
(504/503) instead of holding the HTTP shutdown up, then the HTTP site closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import secrets
import signal
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import aiohttp
from aiohttp import web

from raftly.core.config import Config
from raftly.core.types import ConfState, Member
from raftly.eventloop import running_loop_name
from raftly.kv.activity import ActivityLog, indexes_of
from raftly.kv.admission import DEFAULT_MAX_INFLIGHT_WRITES
from raftly.kv.cluster_file import Address, ClusterSpec, NodeSpec, load_cluster, parse_address
from raftly.kv.connections import raise_fd_limit
from raftly.kv.exposure import exposure_warning
from raftly.kv.http import KVApi, Limits, make_runner
from raftly.kv.identity import (
    IdentityError,
    NodeIdentity,
    check_identity,
    claim_data_dir,
    read_identity,
)
from raftly.kv.join import Joined, request_join, stored_conf
from raftly.kv.members_http import bootstrap_conf, cluster_view
from raftly.kv.metrics import NodeMetrics
from raftly.kv.node_calls import NodeCalls, PeerNames
from raftly.kv.protocol import MEMBERS_PATH, STATUS_PATH
from raftly.kv.state_machine import KVStateMachine
from raftly.kv.ui_http import ClusterPage
from raftly.kv.unsafe_reads import node_api_class
from raftly.localproc import free_ports
from raftly.security.auth import Authorizer
from raftly.security.certs import CertError, add_certs, init_certs, read_certificate
from raftly.security.tls import (
    TlsError,
    TlsFiles,
    api_server_context,
    peer_client_context,
    peer_server_context,
)
from raftly.server.server import RaftServer, ServerStopped, wait_for_agreed_leader
from raftly.server.snapshots import SnapshotSettings
from raftly.storage import DiskStorage, MemoryStorage, Storage
from raftly.storage.disk.fsio import FsyncPolicy
from raftly.storage.disk.storage import DEFAULT_SEGMENT_SIZE
from raftly.storage.snapshots import SnapshotStore
from raftly.transport import MemoryNetwork, TcpTransport, Transport

logger = logging.getLogger("raftly.kv")


@dataclass(slots=True)
class RunningNode:
    """One started node; ``url`` is its HTTP API base."""

    spec: NodeSpec
    server: RaftServer
    api: KVApi
    runner: web.AppRunner
    api_address: Address
    calls: NodeCalls
    """How it calls the other members' APIs."""
    closed: bool = False
    watcher: asyncio.Task[None] | None = None
    lookup: asyncio.Task[None] | None = None
    """An address look-up under way, which a close cancels."""
    sampler: asyncio.Task[None] | None = None
    """The cluster page's once-a-second sampler (raftly.kv.activity)."""

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def url(self) -> str:
        return self.api_address.base_url(self.api.tls)

    @property
    def kv(self) -> KVStateMachine:
        return self.api.kv

    async def close(self) -> None:
        self.closed = True
        tasks = [t for t in (self.watcher, self.lookup, self.sampler) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.api.close()  # watch streams end with a line saying where to resume
        await self.server.close()
        await self.runner.cleanup()


async def start_node(cluster: ClusterSpec, name: str, *, storage: Storage, transport: Transport,
                     config: Config | None = None, limits: Limits | None = None,
                     api_address: Address | None = None, snapshots: SnapshotStore | None = None,
                     snapshot: SnapshotSettings | None = None,
                     bootstrap: bool = True, tls: TlsFiles | None = None,
                     client_cert_auth: bool = False,
                     auth: Authorizer | None = None, token: str | None = None,
                     peer_names: PeerNames | None = None, metrics: bool = True
                     ) -> RunningNode:
    """Start the Raft server and the HTTP API of node ``name`` of ``cluster``.

    ``api_address`` overrides the cluster file's (tests bind port 0, then publish the real one).
    With ``snapshots``, the log is compacted as ``snapshot`` says (see ``RaftServer``).
    ``bootstrap=False``: an empty storage stays empty until the leader sends the log (a node
    that joined a running cluster). With ``tls`` the API is HTTPS (``client_cert_auth``: only
    clients with a certificate of the cluster CA get through the handshake); with ``auth`` it
    wants bearer tokens. ``token`` is what the node shows other members' APIs (see
    ``NodeCalls``). ``peer_names``, the transport's ``peer_name`` (see ``peer_transport``), is
    kept up to date with the configurations the node uses and the members it looks up.
    ``metrics=False``: no Prometheus metrics (no observer, no request middleware; ``GET
    /metrics`` answers 404), see raftly.kv.metrics.
    """
    spec = cluster.node(name)
    ssl_context = (api_server_context(tls, require_client_cert=client_cert_auth)
                   if tls is not None else None)
    limits = limits or Limits()
    snapshot = snapshot or SnapshotSettings()
    node_metrics = NodeMetrics() if metrics else None
    activity = ActivityLog()
    server = RaftServer(spec.id, storage=storage, transport=transport,
                        state_machine=KVStateMachine(max_key_bytes=limits.max_key_bytes,
                                                    history_limit=limits.watch_history,
                                                    history_bytes=limits.watch_history_bytes),
                        # A joining node starts empty: no member, so it never campaigns.
                        bootstrap=bootstrap_conf(cluster) if bootstrap else ConfState(),
                        config=config, snapshots=snapshots,
                        snapshot_entries=snapshot.entries, snapshot_retain=snapshot.retain,
                        observers=[activity] + ([node_metrics] if node_metrics is not None else []))
    if peer_names is not None:
        # Before the server starts: starting applies the stored configuration, whose members
        # (some perhaps added after the cluster file was written) must be named at once.
        server.on_conf_change.append(peer_names.learn_conf)
    api = node_api_class()(server, cluster, spec, limits, auth=auth, tls=tls is not None,
                           metrics=node_metrics)
    if node_metrics is not None:
        node_metrics.watch(server, transport, lambda: api.cluster)
    calls = NodeCalls.routine(tls, token)
    app = api.app()
    ClusterPage(api, activity, calls).add_routes(app)
    runner = make_runner(app, limits, ssl_context)
    await runner.setup()
    bind = api_address or spec.api
    try:
        # Without its own ssl_context: the runner does TLS per connection (make_runner).
        # A backlog for as many connections as the cap admits: aiohttp's 128 drops the SYNs of
        # a burst of new clients, each then retried by the kernel a whole second later.
        site = web.TCPSite(runner, bind.host, bind.port, backlog=limits.max_connections)
        await site.start()
        await server.start()
        api.start()
    except BaseException:
        await runner.cleanup()
        await server.close()
        raise
    host, port = runner.addresses[0][:2]
    actual = Address(bind.host if bind.port else str(host), int(port))
    logger.info("node %s (raft id %d) serving the KV API on %s (event loop: %s)", name, spec.id,
                actual.base_url(tls is not None), running_loop_name())
    node = RunningNode(spec, server, api, runner, actual, calls)
    node.sampler = activity.start_sampler(indexes_of(server), name=f"raftly {name}: activity")
    node.watcher = asyncio.create_task(_watch_removal(node), name=f"raftly {name}: removal")
    if isinstance(transport, TcpTransport):
        transport.on_unknown_peer = _AddressFinder(node, peer_names).wanted
    return node


def peer_transport(cluster: ClusterSpec, node_id: int, listen: tuple[str, int],
                   tls: TlsFiles | None = None, *, peers: bool = True
                   ) -> tuple[TcpTransport, PeerNames]:
    """The TCP transport of node ``node_id`` of ``cluster`` (mutual TLS with ``tls``), and the
    names its peers' certificates must show, for ``start_node``. ``peers=False``: no addresses
    yet (they are published once every node has bound its port)."""
    names = PeerNames(cluster)
    server_ssl = peer_server_context(tls) if tls is not None else None
    client_ssl = peer_client_context(tls) if tls is not None else None
    transport = TcpTransport(node_id, listen=listen,
                             peers=_peers(cluster, node_id) if peers else {},
                             cluster_id=cluster.cluster_id, server_ssl=server_ssl,
                             client_ssl=client_ssl, peer_name=names)
    return transport, names


class _AddressFinder:
    """Finds the Raft address of a node this one must answer but has no address for: a node
    whose log lags may hear from a leader added after it. Asks the other members' APIs
    (``GET /v1/members``), at most once a second. With TLS it also learns the members' names: a
    peer whose id this node has no name for is refused until then."""

    def __init__(self, node: RunningNode, names: PeerNames | None) -> None:
        self._node = node
        self._names = names
        self._next = 0.0
        self._task: asyncio.Task[None] | None = None

    def wanted(self, node_id: int) -> None:
        loop = asyncio.get_running_loop()
        if (self._task is None or self._task.done()) and loop.time() >= self._next \
                and not self._node.closed:
            self._next = loop.time() + 1.0
            self._task = asyncio.create_task(self._look_up(),
                                             name=f"raftly {self._node.name}: addresses")
            self._node.lookup = self._task

    async def _look_up(self) -> None:
        node = self._node
        async with node.calls.session(2 * node.server.config.election_timeout) as session:
            for peer in node.api.cluster.nodes:
                if peer.id == node.server.id:
                    continue
                try:
                    async with session.get(node.calls.url(peer.api) + MEMBERS_PATH) as resp:
                        body = await resp.json(content_type=None)
                    members = [Member(int(m["id"]), str(m["name"]), str(m["raft"]),
                                      str(m["api"])) for m in body["members"]]
                except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError):
                    continue
                if self._names is not None:  # before the addresses: a dial checks the name
                    self._names.learn(members)
                node.server.learn_addresses(members)
                return


async def _watch_removal(node: RunningNode) -> None:
    """Ask the leader whether this node is still a member, while it hears from no leader.

    The leader stops replicating to a node as soon as it appends the configuration that removes
    it, so a removed follower may never learn of its removal from the log: it only sees the
    leader fall silent. Then it asks the other members' APIs; a leader that lists the members
    without it settles it.
    """
    server = node.server
    interval = 2 * server.config.election_timeout
    loop = asyncio.get_running_loop()
    async with node.calls.session(interval) as session:
        while not server.removed:
            await asyncio.sleep(interval)
            # Silence, not "no leader": a learner never campaigns, so it keeps naming the
            # leader that stopped talking to it.
            # Also when its own log already drops it: the removal may be appended here and
            # never seen to commit, as the leader stopped sending to it.
            if loop.time() - server.last_leader_contact <= 2 * interval:
                continue
            for peer in node.api.cluster.nodes:
                if peer.id != server.id and await _leader_dropped(session,
                                                                  node.calls.url(peer.api),
                                                                  node.api.cluster.cluster_id,
                                                                  server.id):
                    server.note_removed(f"leader {peer.name} lists the members without it")
                    break


async def _leader_dropped(session: aiohttp.ClientSession, url: str, cluster_id: str,
                          own: int) -> bool:
    """Whether the node at ``url`` leads ``cluster_id`` and its members leave out ``own``."""
    try:
        status = await _get_json(session, url + STATUS_PATH)
        if status.get("cluster_id") != cluster_id or status.get("role") != "leader":
            return False
        body = await _get_json(session, url + MEMBERS_PATH)
        # Only a committed configuration settles it: an uncommitted removal may be undone.
        members = body["members"]
        return body.get("committed") is True and bool(members) and all(
            m["id"] != own for m in members)
    except (_Refused, aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError):
        return False


@dataclass(frozen=True, slots=True)
class JoinSpec:
    """``raftly serve --join``: this node's name and addresses, and where the cluster is."""

    endpoints: tuple[str, ...]
    name: str
    raft: Address
    api: Address
    learner: bool = False
    timeout: float = 30.0
    """How long to keep asking before giving up (JoinError)."""


@dataclass(frozen=True, slots=True)
class _Start:
    """What a node starts as, once its cluster file, join or data dir was read."""

    cluster: ClusterSpec
    name: str
    bootstrap: bool


async def serve(cluster_file: str | Path | None, node_name: str | None, data_dir: str | Path, *,
                join: JoinSpec | None = None, raft: Address | None = None,
                api: Address | None = None,
                fsync: FsyncPolicy = "always", config: Config | None = None,
                limits: Limits | None = None, stop: asyncio.Event | None = None,
                snapshot: SnapshotSettings | None = None,
                segment_size: int = DEFAULT_SEGMENT_SIZE, tls: TlsFiles | None = None,
                client_cert_auth: bool = False, auth: Authorizer | None = None,
                token: str | None = None, max_connections: int = 1024,
                max_watches: int = 1000, metrics: bool = True,
                max_inflight_writes: int = DEFAULT_MAX_INFLIGHT_WRITES) -> None:
    """Run one node until SIGINT or SIGTERM, or until a configuration without it commits.

    The node is node ``node_name`` of ``cluster_file``; or, with ``join``, a new node that
    asks the cluster to add it; or, with neither, the node whose data ``data_dir`` holds (its
    name, id, cluster and addresses come from there: ``node_name``, ``raft`` and ``api``, if
    given, must agree). Snapshots go to ``data_dir/snapshots`` as ``snapshot`` says; the log's
    segment files roll at ``segment_size`` bytes (compaction deletes whole segments).

    ``stop``, when given, is the event to wait for instead of signals (embedding, tests).
    ``IdentityError`` when ``data_dir`` belongs to another node or cluster, or a flag
    contradicts it (nothing is changed); ``JoinError`` when the cluster cannot be joined.

    ``tls``, ``client_cert_auth`` and ``auth`` are as for ``start_node``; ``max_connections``
    caps the API's open connections, ``max_watches`` its watch streams,
    ``max_inflight_writes`` its writes in flight (raftly.kv.admission). ``token`` is this
    node's bearer token for other members' APIs. ``metrics=False``: no ``GET /metrics``.
    """
    raise_fd_limit()  # before make_runner reads it to clamp the connection cap
    limits = replace(limits or Limits(), max_connections=max_connections,
                     max_watches=max_watches, max_inflight_writes=max_inflight_writes)
    own_name = join.name if join is not None else node_name
    if tls is not None and own_name is not None:
        check_own_certificate(tls, own_name)
    if join is not None and read_identity(data_dir) is None:
        joined = await request_join(join.endpoints, join.name, join.raft, join.api,
                                    learner=join.learner, timeout=join.timeout,
                                    calls=NodeCalls.of(tls, token))
        cluster = _joined_cluster(joined, join.name, join.raft, join.api)
        start = _Start(cluster, join.name, bootstrap=False)
        identity = NodeIdentity(joined.cluster_id, join.name, joined.raft_id, (), tuple(
            (n.name, n.id, str(n.raft), str(n.api)) for n in cluster.nodes))
        source = f"the cluster at {', '.join(join.endpoints)}"
    elif cluster_file is not None and node_name is not None:
        cluster = load_cluster(cluster_file)
        start = _Start(cluster, node_name, bootstrap=True)
        identity, source = NodeIdentity.of(cluster, node_name), f"cluster file {cluster_file}"
        if read_identity(data_dir) is None:
            await _refuse_a_lost_disk(cluster, node_name, data_dir,
                                      NodeCalls.routine(tls, token))
    else:
        if join is not None:
            node_name, raft, api = join.name, join.raft, join.api
        start, identity = _restart(data_dir, node_name, raft, api)
        source = f"data dir {data_dir}"
    if tls is not None and own_name is None:  # named by its data dir
        check_own_certificate(tls, start.name)
    # Before the storage opens: a refused start must leave the directory as it was.
    check_identity(data_dir, identity, source)
    storage = DiskStorage(data_dir, fsync=fsync, segment_size=segment_size)
    try:
        if start.bootstrap:
            # With the storage's lock held, so that two processes cannot both claim it.
            stored = storage.snapshot.conf.voters if storage.bootstrapped else None
            claim_data_dir(data_dir, identity, source, stored_voters=stored)
        else:
            claim_data_dir(data_dir, identity, source)
    except BaseException:
        storage.close()
        raise
    spec = start.cluster.node(start.name)
    warning = exposure_warning(spec, tls=tls is not None, auth=auth is not None)
    if warning is not None:
        logger.warning("%s", warning)
    if auth is not None and tls is None and not token:
        # With TLS a node's certificate is its read pass to the others' APIs; without, only a
        # token is: address look-ups and the removal check would be refused, silently.
        logger.warning("node %s: --auth-file without TLS and without --token: the other "
                       "members' APIs will refuse this node's look-ups, and a start on an empty "
                       "data dir is refused while another member answers (give every node a "
                       "read token in $RAFTLY_TOKEN)",
                       start.name)
    transport, names = peer_transport(start.cluster, spec.id, (spec.raft.host, spec.raft.port),
                                      tls)
    try:
        node = await start_node(start.cluster, start.name, storage=storage, transport=transport,
                                config=config, limits=limits, bootstrap=start.bootstrap,
                                snapshots=SnapshotStore(data_dir, fsync=fsync), snapshot=snapshot,
                                tls=tls, client_cert_auth=client_cert_auth, auth=auth,
                                token=token, peer_names=names, metrics=metrics)
    except BaseException:
        storage.close()
        raise
    await _run_until_stopped(node, stop)


EXPIRY_WARNING = datetime.timedelta(days=30)
"""A node whose certificate expires sooner warns at start (`raftly certs renew`)."""


def check_own_certificate(tls: TlsFiles, name: str,
                          now: datetime.datetime | None = None) -> None:
    """Refuse to start node ``name`` with a certificate every peer would refuse: one naming
    another node, or expired. Log its expiry; warn when it is near or not yet valid."""
    peer_server_context(tls)  # every file there and usable, or a TlsError naming the file
    try:
        facts = read_certificate(tls.cert)
    except CertError as exc:
        raise TlsError(str(exc)) from None
    now = now or datetime.datetime.now(datetime.UTC)
    if facts.name != name:
        raise TlsError(f"{tls.cert} names {facts.name!r}, not this node {name!r}: every peer "
                       f"would refuse it (give node {name} its own certificate)")
    if facts.not_after <= now:
        raise TlsError(f"{tls.cert} expired on {facts.not_after:%Y-%m-%d %H:%M} UTC: every "
                       "peer would refuse it (raftly certs renew)")
    left = facts.not_after - now
    if facts.not_before > now:
        logger.warning("node %s: certificate %s is not valid before %s UTC (is the clock "
                       "right?): peers refuse it until then", name, tls.cert,
                       f"{facts.not_before:%Y-%m-%d %H:%M}")
    elif left < EXPIRY_WARNING:
        logger.warning("node %s: certificate %s expires in %d days, on %s UTC: renew it "
                       "(raftly certs renew) and restart the node", name, tls.cert, left.days,
                       f"{facts.not_after:%Y-%m-%d %H:%M}")
    else:
        logger.info("node %s: certificate %s expires on %s UTC (in %d days)", name, tls.cert,
                    f"{facts.not_after:%Y-%m-%d %H:%M}", left.days)


async def _refuse_a_lost_disk(cluster: ClusterSpec, name: str, data_dir: str | Path,
                              calls: NodeCalls) -> None:
    """Refuse to start ``name`` on an empty data dir if the cluster's leader holds entries
    acknowledged by it: that node lost its disk, and with it its votes (it could vote twice in
    a term and elect two leaders). A first start, or a cluster not running, passes; a cluster
    that runs but refuses to answer (401/403, a certificate it does not trust or one this node
    does not trust) is refused too: the check cannot be made, so the start is not safe."""
    own = cluster.node(name)
    refusals: list[str] = []
    async with calls.session(2.0) as session:
        for peer in cluster.nodes:
            if peer.name == name:
                continue
            try:
                status = await _get_json(session, calls.url(peer.api) + STATUS_PATH)
                leader_api = status.get("leader_api")
                if status.get("cluster_id") != cluster.cluster_id or not leader_api:
                    continue
                members = (await _get_json(session, leader_api + MEMBERS_PATH))["members"]
            except _Refused as exc:
                refusals.append(f"{peer.name}: {exc}")
                continue
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError):
                continue
            for member in members:
                if member.get("id") == own.id and member.get("match", 0) > 0:
                    raise IdentityError(
                        f"node {name} holds entries of cluster {cluster.cluster_id} (its leader "
                        f"has them up to index {member['match']}), but its data dir {data_dir} "
                        "is empty: a node that lost its disk forgot its votes and must not "
                        f"come back under its old id. Remove it (raftly member remove {name}) "
                        "and start it as a new member (raftly serve --join ...)")
            return
    if refusals:
        raise IdentityError(
            f"node {name} starts with an empty data dir {data_dir} and cannot check with the "
            f"running cluster that it did not lose its disk ({'; '.join(refusals)}): give it a "
            "token with read role (--token or $RAFTLY_TOKEN), or its certificate of the "
            "cluster CA (--tls-dir)")


class _Refused(Exception):
    """A member's API would not answer this node: 401/403, or TLS verification failed."""


async def _get_json(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    """The JSON object at ``url``; ``_Refused`` when the API will not tell this node."""
    try:
        async with session.get(url) as resp:
            if resp.status in (401, 403):
                raise _Refused(f"{resp.status} {resp.reason}")
            body = await resp.json(content_type=None)
    except aiohttp.ClientSSLError as exc:
        raise _Refused(f"TLS: {exc}") from None
    if not isinstance(body, dict):
        raise ValueError(f"{url}: not a JSON object")
    return body


def _joined_cluster(joined: Joined, name: str, raft: Address, api: Address) -> ClusterSpec:
    """The cluster a joining node starts with: the members the leader named, and itself."""
    own = NodeSpec(name, joined.raft_id, raft, api)
    others = tuple(n for n in joined.peers if n.id != joined.raft_id)
    return ClusterSpec(joined.cluster_id, (own, *others))


def _peers(cluster: ClusterSpec, own: int) -> dict[int, tuple[str, int]]:
    return {n.id: (n.raft.host, n.raft.port) for n in cluster.nodes if n.id != own}


def _restart(data_dir: str | Path, name: str | None, raft: Address | None,
             api: Address | None) -> tuple[_Start, NodeIdentity]:
    """A node restarted from its data dir alone: who it is comes from there."""
    identity = read_identity(data_dir)
    if identity is None:
        raise IdentityError(f"data dir {data_dir} holds no node: start a new node with "
                            "--cluster FILE --id NAME, or --join HOST:PORT --id NAME --raft "
                            "HOST:PORT --api HOST:PORT")
    # Only a look at the stored configuration, not the node's start: the storage's opening
    # line is logged once, by the start, and a refusal stays one line.
    disk_log = logging.getLogger("raftly.storage.disk")
    level = disk_log.level
    disk_log.setLevel(logging.WARNING)
    try:
        storage = DiskStorage(data_dir, fsync="never")
        try:
            conf = stored_conf(storage) if storage.bootstrapped else None
        finally:
            storage.close()
    finally:
        disk_log.setLevel(level)
    member = conf.member(identity.raft_id) if conf is not None else None
    joined = tuple(NodeSpec(n, i, parse_address(r, "raft"), parse_address(a, "api"))
                   for n, i, r, a in identity.joined)
    if member is not None:
        spec = NodeSpec(identity.name, identity.raft_id, parse_address(member.raft, "raft"),
                        parse_address(member.api, "api"))
    elif any(n.id == identity.raft_id for n in joined):
        # Joined, but stopped before its log held the configuration that added it.
        spec = next(n for n in joined if n.id == identity.raft_id)
    else:
        raise IdentityError(f"data dir {data_dir}: node {identity.name}'s addresses are not in "
                            "its stored configuration; start it with its cluster file "
                            "(--cluster FILE --id NAME)")
    for flag, given, stored in (("--id", name, spec.name), ("--raft", raft, spec.raft),
                                ("--api", api, spec.api)):
        if given is not None and str(given) != str(stored):
            raise IdentityError(f"data dir {data_dir} holds node {spec.name} with {flag} "
                                f"{stored}, not {given}: drop the flag, or give this node a "
                                "new --data-dir")
    others = tuple(n for n in joined if n.id != spec.id)
    cluster = cluster_view(ClusterSpec(identity.cluster_id, (spec, *others)), conf or ConfState())
    if cluster.by_id(spec.id) is None:  # a configuration from before it joined
        cluster = replace(cluster, nodes=tuple(sorted((*cluster.nodes, spec),
                                                      key=lambda n: n.name)))
    return _Start(cluster, spec.name, bootstrap=False), identity


async def _run_until_stopped(node: RunningNode, stop: asyncio.Event | None) -> None:
    """Serve until ``stop`` (or SIGINT/SIGTERM), a fatal error, or this node's removal."""
    name = node.name
    signals = (signal.SIGINT, signal.SIGTERM) if stop is None else ()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in signals:
        # Not available on every platform's loop (Windows): then Ctrl-C raises as usual.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    waits = {asyncio.ensure_future(stop.wait()),
             asyncio.ensure_future(node.server.wait_failed()),
             asyncio.ensure_future(node.server.wait_removed())}
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if node.server.failure is not None:
            # The server already logged the cause; the process must not linger half-alive.
            raise ServerStopped(f"node {name} stopped: {node.server.failure}")
        if node.server.removed:
            await _hand_over(node)
        else:
            logger.info("node %s shutting down", name)
    finally:
        for waiting in waits:
            waiting.cancel()
        for sig in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        await node.close()
        logger.info("node %s stopped", name)


async def _hand_over(node: RunningNode) -> None:
    """A removed leader hands leadership over (the core does it) before its process ends."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + node.server.config.election_timeout
    while node.server.is_leader and loop.time() < deadline:
        await asyncio.sleep(node.server.config.tick_interval)


class LocalCluster:
    """N nodes ``n1``..``nN`` in this process on 127.0.0.1, every port chosen by the OS.

    ``transport="memory"`` uses a ``MemoryNetwork`` (``self.network``, for partitions) instead
    of TCP. With ``data_dir`` each node keeps a DiskStorage and its snapshots in
    ``data_dir/NAME`` (compacting as ``snapshot`` says); without it, MemoryStorage and no
    snapshots. Use as ``async with LocalCluster(3) as cluster: ...``.

    ``members=True`` (TCP only) chooses free ports before the nodes start, so that the bootstrap
    configuration carries every member's addresses: membership changes (``add_node``) need them.

    ``tls_dir`` (TCP only) turns TLS on for both ports, with the certificates of a ``raftly certs``
    directory: those of nodes it lacks are issued there (the CA too, if it has none). ``auth``
    makes the APIs want tokens (``token`` is what the nodes show each other's APIs), and
    ``client_cert_auth`` client certificates.
    """

    def __init__(self, size: int = 3, *, data_dir: str | Path | None = None,
                 transport: Literal["tcp", "memory"] = "tcp", config: Config | None = None,
                 limits: Limits | None = None, fsync: FsyncPolicy = "never",
                 host: str = "127.0.0.1", snapshot: SnapshotSettings | None = None,
                 segment_size: int = DEFAULT_SEGMENT_SIZE, members: bool = False,
                 tls_dir: str | Path | None = None, auth: Authorizer | None = None,
                 token: str | None = None, client_cert_auth: bool = False) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        if tls_dir is not None and transport == "memory":
            raise ValueError("tls_dir needs the TCP transport")
        self.size = size
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.transport_kind = transport
        self.config = config
        self.limits = limits
        self.fsync: FsyncPolicy = fsync
        self.host = host
        self.snapshot = snapshot
        self.segment_size = segment_size
        self.network = MemoryNetwork() if transport == "memory" else None
        if members and self.network is not None:
            raise ValueError("members=True needs the TCP transport (addresses)")
        self.members = members
        self.tls_dir = Path(tls_dir) if tls_dir is not None else None
        self.auth = auth
        self.token = token
        self.client_cert_auth = client_cert_auth
        self.nodes: list[RunningNode] = []
        self.cluster: ClusterSpec | None = None
        self._names: dict[str, PeerNames] = {}

    async def __aenter__(self) -> LocalCluster:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        zero = Address(self.host, 0)
        names = [f"n{i}" for i in range(1, self.size + 1)]
        ports = free_ports(2 * self.size, self.host) if self.members else [0] * (2 * self.size)
        cluster = ClusterSpec("raftly-local-" + secrets.token_hex(4),
                              tuple(NodeSpec(name, i, Address(self.host, ports[2 * i - 2]),
                                             Address(self.host, ports[2 * i - 1]))
                                    for i, name in enumerate(names, start=1)))
        transports: dict[str, Transport] = {}
        for spec in cluster.nodes:
            if self.network is not None:
                transports[spec.name] = self.network.transport(spec.id)
            else:
                transports[spec.name], self._names[spec.name] = peer_transport(
                    cluster, spec.id, (self.host, spec.raft.port), self.tls(spec.name),
                    peers=False)
            node = await self.start_node(cluster, spec.name, transports[spec.name])
            self.nodes.append(node)
        # Every port is known only now: publish the real addresses to the redirects and peers.
        real: list[NodeSpec] = []
        for node in self.nodes:
            transport = transports[node.name]
            raft = (Address(*transport.listen_address) if isinstance(transport, TcpTransport)
                    else zero)
            real.append(replace(node.spec, raft=raft, api=node.api_address))
        self.cluster = replace(cluster, nodes=tuple(real))
        for node in self.nodes:
            node.api.cluster = self.cluster
            node.spec = node.api.node = self.cluster.node(node.name)
            transport = transports[node.name]
            if isinstance(transport, TcpTransport):
                transport.set_peers({n.id: (n.raft.host, n.raft.port) for n in real})

    async def add_node(self, name: str, *, learner: bool = False,
                       timeout: float = 10.0) -> RunningNode:
        """Start a new empty node ``name`` and have the cluster add it (as ``serve --join``).

        It joins as a learner; the leader promotes it once caught up unless ``learner``.
        """
        if not self.members:
            raise ValueError("add_node needs LocalCluster(members=True)")
        raft_port, api_port = free_ports(2, self.host)
        raft, api = Address(self.host, raft_port), Address(self.host, api_port)
        tls = self.tls(name)
        joined = await request_join([n.url for n in self.nodes if not n.closed], name, raft,
                                    api, learner=learner, timeout=timeout,
                                    calls=NodeCalls.of(tls, self.token))
        cluster = _joined_cluster(joined, name, raft, api)
        transport, self._names[name] = peer_transport(cluster, joined.raft_id,
                                                      (self.host, raft_port), tls)
        node = await self.start_node(cluster, name, transport, bootstrap=False)
        self.nodes.append(node)
        return node

    async def start_node(self, cluster: ClusterSpec, name: str,
                         transport: Transport, *, bootstrap: bool = True) -> RunningNode:
        """Start (or, after its ``close``, restart from its data dir) node ``name``."""
        storage: Storage = MemoryStorage()
        snapshots = None
        if self.data_dir is not None:
            storage = DiskStorage(self.data_dir / name, fsync=self.fsync,
                                  segment_size=self.segment_size)
            snapshots = SnapshotStore(self.data_dir / name, fsync=self.fsync)
        return await start_node(cluster, name, storage=storage, transport=transport,
                                config=self.config, limits=self.limits, snapshots=snapshots,
                                snapshot=self.snapshot, bootstrap=bootstrap, tls=self.tls(name),
                                client_cert_auth=self.client_cert_auth, auth=self.auth,
                                token=self.token, peer_names=self._names.get(name))

    def tls(self, name: str) -> TlsFiles | None:
        """Node ``name``'s TLS files (issued if ``tls_dir`` lacks them), or None without TLS."""
        folder = self.tls_dir
        if folder is None:
            return None
        if not (folder / "ca.crt").exists():
            init_certs(folder, [name])
        elif not (folder / f"{name}.crt").exists():
            add_certs(folder, [name])
        return TlsFiles.from_dir(folder, name)

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def node(self, name: str) -> RunningNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    async def wait_for_leader(self, timeout: float = 10.0) -> RunningNode:
        """The node that leads and whose leadership every other running node agrees on."""
        running = [n for n in self.nodes if not n.closed]
        leader = await wait_for_agreed_leader([n.server for n in running], timeout)
        return next(n for n in running if n.server is leader)

    async def close(self) -> None:
        for node in self.nodes:
            await node.close()


__all__ = ["JoinSpec", "LocalCluster", "RunningNode", "check_own_certificate", "serve",
           "start_node"]

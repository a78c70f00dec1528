"""Running key-value nodes: ``serve`` for one real node, ``LocalCluster`` for N in one process.

A node is DiskStorage (or MemoryStorage) + a transport + ``RaftServer`` + the HTTP API. On
shutdown the Raft server closes first, so requests still waiting on it are answered at once
(504/503) instead of holding the HTTP shutdown up, then the HTTP site closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from aiohttp import web

from raftly.core.config import Config
from raftly.kv.cluster_file import Address, ClusterSpec, NodeSpec, load_cluster
from raftly.kv.http import KVApi, Limits, make_runner
from raftly.kv.members_http import bootstrap_conf
from raftly.kv.identity import NodeIdentity, check_identity, claim_data_dir
from raftly.kv.state_machine import KVStateMachine
from raftly.kv.unsafe_reads import node_api_class
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
    closed: bool = False

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def url(self) -> str:
        return self.api_address.url

    @property
    def kv(self) -> KVStateMachine:
        return self.api.kv

    async def close(self) -> None:
        self.closed = True
        await self.server.close()
        await self.runner.cleanup()


async def start_node(cluster: ClusterSpec, name: str, *, storage: Storage, transport: Transport,
                     config: Config | None = None, limits: Limits | None = None,
                     api_address: Address | None = None, snapshots: SnapshotStore | None = None,
                     snapshot: SnapshotSettings | None = None) -> RunningNode:
    """Start the Raft server and the HTTP API of node ``name`` of ``cluster``.

    ``api_address`` overrides the cluster file's (tests bind port 0, then publish the real one).
    With ``snapshots``, the log is compacted as ``snapshot`` says (see ``RaftServer``).
    """
    spec = cluster.node(name)
    limits = limits or Limits()
    snapshot = snapshot or SnapshotSettings()
    server = RaftServer(spec.id, storage=storage, transport=transport,
                        state_machine=KVStateMachine(max_key_bytes=limits.max_key_bytes),
                        bootstrap=bootstrap_conf(cluster), config=config, snapshots=snapshots,
                        snapshot_entries=snapshot.entries, snapshot_retain=snapshot.retain)
    api = node_api_class()(server, cluster, spec, limits)
    runner = make_runner(api.app(), limits)
    await runner.setup()
    bind = api_address or spec.api
    try:
        site = web.TCPSite(runner, bind.host, bind.port)
        await site.start()
        await server.start()
    except BaseException:
        await runner.cleanup()
        await server.close()
        raise
    host, port = runner.addresses[0][:2]
    actual = Address(bind.host if bind.port else str(host), int(port))
    logger.info("node %s (raft id %d) serving the KV API on %s", name, spec.id, actual.url)
    return RunningNode(spec, server, api, runner, actual)


async def serve(cluster_file: str | Path, node_name: str, data_dir: str | Path, *,
                fsync: FsyncPolicy = "always", config: Config | None = None,
                limits: Limits | None = None, stop: asyncio.Event | None = None,
                snapshot: SnapshotSettings | None = None,
                segment_size: int = DEFAULT_SEGMENT_SIZE) -> None:
    """Run node ``node_name`` of the cluster file until SIGINT or SIGTERM, then stop cleanly.

    Snapshots go to ``data_dir/snapshots`` as ``snapshot`` says; the log's segment files roll
    at ``segment_size`` bytes (compaction deletes whole segments).

    ``stop``, when given, is the event to wait for instead of signals (embedding, tests).
    ``IdentityError`` when ``data_dir`` belongs to another node or cluster (nothing is changed).
    """
    cluster = load_cluster(cluster_file)
    spec = cluster.node(node_name)
    identity, source = NodeIdentity.of(cluster, node_name), f"cluster file {cluster_file}"
    # Before the storage opens: a refused start must leave the directory as it was.
    check_identity(data_dir, identity, source)
    storage = DiskStorage(data_dir, fsync=fsync, segment_size=segment_size)
    try:
        # With the storage's lock held, so that two processes cannot both claim the directory.
        stored = storage.snapshot.conf.voters if storage.bootstrapped else None
        claim_data_dir(data_dir, identity, source, stored_voters=stored)
    except BaseException:
        storage.close()
        raise
    peers = {n.id: (n.raft.host, n.raft.port) for n in cluster.nodes if n.id != spec.id}
    transport = TcpTransport(spec.id, listen=(spec.raft.host, spec.raft.port), peers=peers,
                             cluster_id=cluster.cluster_id)
    try:
        node = await start_node(cluster, node_name, storage=storage, transport=transport,
                                config=config, limits=limits,
                                snapshots=SnapshotStore(data_dir, fsync=fsync), snapshot=snapshot)
    except BaseException:
        storage.close()
        raise
    signals = (signal.SIGINT, signal.SIGTERM) if stop is None else ()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in signals:
        # Not available on every platform's loop (Windows): then Ctrl-C raises as usual.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    stopping = asyncio.ensure_future(stop.wait())
    failing = asyncio.ensure_future(node.server.wait_failed())
    try:
        await asyncio.wait({stopping, failing}, return_when=asyncio.FIRST_COMPLETED)
        if node.server.failure is not None:
            # The server already logged the cause; the process must not linger half-alive.
            raise ServerStopped(f"node {node_name} stopped: {node.server.failure}")
        logger.info("node %s shutting down", node_name)
    finally:
        stopping.cancel()
        failing.cancel()
        for sig in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        await node.close()
        logger.info("node %s stopped", node_name)


class LocalCluster:
    """N nodes ``n1``..``nN`` in this process on 127.0.0.1, every port chosen by the OS.

    ``transport="memory"`` uses a ``MemoryNetwork`` (``self.network``, for partitions) instead
    of TCP. With ``data_dir`` each node keeps a DiskStorage and its snapshots in
    ``data_dir/NAME`` (compacting as ``snapshot`` says); without it, MemoryStorage and no
    snapshots. Use as ``async with LocalCluster(3) as cluster: ...``.
    """

    def __init__(self, size: int = 3, *, data_dir: str | Path | None = None,
                 transport: Literal["tcp", "memory"] = "tcp", config: Config | None = None,
                 limits: Limits | None = None, fsync: FsyncPolicy = "never",
                 host: str = "127.0.0.1", snapshot: SnapshotSettings | None = None,
                 segment_size: int = DEFAULT_SEGMENT_SIZE) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
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
        self.nodes: list[RunningNode] = []
        self.cluster: ClusterSpec | None = None

    async def __aenter__(self) -> LocalCluster:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        zero = Address(self.host, 0)
        names = [f"n{i}" for i in range(1, self.size + 1)]
        cluster = ClusterSpec("raftly-local-" + secrets.token_hex(4),
                              tuple(NodeSpec(name, i, zero, zero)
                                    for i, name in enumerate(names, start=1)))
        transports: dict[str, Transport] = {}
        for spec in cluster.nodes:
            if self.network is not None:
                transports[spec.name] = self.network.transport(spec.id)
            else:
                transports[spec.name] = TcpTransport(spec.id, listen=(self.host, 0), peers={},
                                                     cluster_id=cluster.cluster_id)
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

    async def start_node(self, cluster: ClusterSpec, name: str,
                         transport: Transport) -> RunningNode:
        """Start (or, after its ``close``, restart from its data dir) node ``name``."""
        storage: Storage = MemoryStorage()
        snapshots = None
        if self.data_dir is not None:
            storage = DiskStorage(self.data_dir / name, fsync=self.fsync,
                                  segment_size=self.segment_size)
            snapshots = SnapshotStore(self.data_dir / name, fsync=self.fsync)
        return await start_node(cluster, name, storage=storage, transport=transport,
                                config=self.config, limits=self.limits, snapshots=snapshots,
                                snapshot=self.snapshot)

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


__all__ = ["LocalCluster", "RunningNode", "serve", "start_node"]

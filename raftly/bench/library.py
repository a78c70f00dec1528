"""The library benchmark: three ``RaftServer`` in this process over TCP loopback, no HTTP."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from raftly.bench.load import LEADER_TIMEOUT, VALUE, WARMUP, Op, closed_loop, split_stats
from raftly.bench.places import temp_dir
from raftly.bench.stats import Sample
from raftly.storage.disk.fsio import FsyncPolicy

if TYPE_CHECKING:
    from raftly.server.server import RaftServer


@dataclass(slots=True)
class BenchMachine:
    """A trivial state machine: counts commands and keeps the last one."""

    count: int = 0
    last: bytes = b""

    def apply(self, index: int, command: bytes) -> object:
        self.count += 1
        self.last = command
        return index


def propose_op(servers: Sequence[RaftServer], current: dict[str, RaftServer], value: bytes,
               timeout: float) -> Op:
    """One write as a closed-loop op: ``current["leader"].propose(value)``; on a refusal, the
    op fails and ``current`` moves to whichever of ``servers`` now leads."""
    from raftly.core.errors import NotLeader, ProposalDropped
    from raftly.server.server import ServerError

    async def op(client: int, seq: int) -> bool:
        try:
            await current["leader"].propose(value, timeout=timeout)
            return True
        except (NotLeader, ProposalDropped, ServerError):
            for s in servers:
                if s.is_leader:
                    current["leader"] = s
            return False

    return op


async def bench_library(clients: Sequence[int], seconds: float, *, fsync: FsyncPolicy = "always",
                        base_dir: str | Path | None = None, warmup: float = WARMUP,
                        timeout: float = 10.0,
                        measured: Callable[[Sample], None] | None = None,
                        value: bytes = VALUE) -> list[Sample]:
    """One run of the library benchmark: a fresh 3-node cluster, one Sample per level;
    ``measured`` is called with each as soon as it is taken (progress); every command is
    ``value``."""
    from raftly.server.server import RaftServer, wait_for_agreed_leader
    from raftly.storage import DiskStorage
    from raftly.transport import TcpTransport

    ids = (1, 2, 3)
    samples: list[Sample] = []
    with temp_dir(base_dir, "raftly-bench-lib-") as root:
        storages = [DiskStorage(root / f"n{i}", fsync=fsync) for i in ids]
        transports = [TcpTransport(i, listen=("127.0.0.1", 0), peers={},
                                   cluster_id="raftly-bench") for i in ids]
        servers = [RaftServer(i, storage=s, transport=t, state_machine=BenchMachine(),
                              bootstrap=frozenset(ids))
                   for i, s, t in zip(ids, storages, transports, strict=True)]
        started: list[RaftServer] = []
        try:
            for server in servers:
                await server.start()
                started.append(server)
            book = {i: t.listen_address for i, t in zip(ids, transports, strict=True)}
            for t in transports:
                t.set_peers(book)

            current = {"leader": servers[0]}
            op = propose_op(servers, current, value, timeout)

            async def probe() -> tuple[int, int, int, int]:
                stats = {str(s.id): (s.stats["fsyncs"], s.stats["entries_persisted"])
                         for s in servers}
                return split_stats(stats, str(current["leader"].id))

            for level in clients:
                current["leader"] = await wait_for_agreed_leader(servers, LEADER_TIMEOUT)
                samples.append(await closed_loop(op, level, seconds, warmup=warmup,
                                                 probe=probe))
                if measured is not None:
                    measured(samples[-1])
        finally:
            for server in started:
                with contextlib.suppress(Exception):
                    await server.close()
            for storage, server in zip(storages, servers, strict=True):
                if server not in started:
                    with contextlib.suppress(Exception):
                        storage.close()
    return samples


__all__ = ["BenchMachine", "bench_library", "propose_op"]

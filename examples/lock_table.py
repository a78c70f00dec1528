"""A replicated lock table on raftly's library API: your own state machine, three nodes.

Run it: ``python examples/lock_table.py``. It starts three Raft nodes in this process, talking
over real TCP on 127.0.0.1 and logging to real files with fsync, takes and releases locks through
the leader, reads the table linearizably on a follower, stops the leader, and shows the lock
table surviving on a new leader.

The state machine is the part you write: ``apply`` gets every committed command, in the same
order on every node, and must be deterministic. ``RaftServer.propose`` returns what ``apply``
returned on the node you proposed to. ``capture`` and ``restore`` are optional: with them, raftly
can snapshot the table and compact the log behind it.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from raftly.core.config import Config
from raftly.core.state_machine import SupportsRead, SupportsWrite
from raftly.server import RaftServer
from raftly.storage import DiskStorage
from raftly.transport import TcpTransport


class LockTable:
    """Named locks with owners. Commands are JSON: {"op": "acquire"|"release", "lock", "owner"}."""

    def __init__(self) -> None:
        self.owners: dict[str, str] = {}

    def apply(self, index: int, command: bytes) -> object:
        try:
            request = json.loads(command)
            op, lock, owner = request["op"], str(request["lock"]), str(request["owner"])
        except (ValueError, KeyError, TypeError):
            return {"ok": False, "error": "malformed command"}  # never raise: all nodes apply it
        holder = self.owners.get(lock)
        if op == "acquire":
            if holder not in (None, owner):
                return {"ok": False, "holder": holder}
            self.owners[lock] = owner
            return {"ok": True}
        if op == "release" and holder == owner:
            del self.owners[lock]
            return {"ok": True}
        return {"ok": False, "holder": holder}

    # Snapshots: ``capture`` runs between two applies, so it only copies; ``persist`` writes the
    # copy later from a worker thread; ``restore`` replaces the table with a persisted one.

    def capture(self) -> LockTableImage:
        return LockTableImage(dict(self.owners))

    def restore(self, source: SupportsRead) -> None:
        try:
            image = json.loads(source.read())
        except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
            raise ValueError(f"lock table snapshot is not JSON: {exc!r}") from None
        if not isinstance(image, dict) or image.get("version") != 1:
            raise ValueError("not a version 1 lock table snapshot")
        owners = image.get("owners")
        if not isinstance(owners, dict) or not all(isinstance(o, str) for o in owners.values()):
            raise ValueError("lock table snapshot: owners must map lock names to owner names")
        self.owners = owners  # swapped in whole, only once it is known to be valid


@dataclass(frozen=True, slots=True)
class LockTableImage:
    owners: dict[str, str]

    def persist(self, sink: SupportsWrite) -> None:
        # A lock table is small enough to write as one document; a large state should stream
        # (see raftly/kv/state_machine.py).
        sink.write(json.dumps({"version": 1, "owners": self.owners}).encode())


def command(op: str, lock: str, owner: str) -> bytes:
    return json.dumps({"op": op, "lock": lock, "owner": owner}).encode()


async def start_cluster(data: Path, ids: list[int]) -> dict[int, RaftServer]:
    config = Config(tick_interval=0.01, heartbeat_interval=0.05, election_timeout=0.5)
    transports = {i: TcpTransport(i, listen=("127.0.0.1", 0), peers={}, cluster_id="locks")
                  for i in ids}
    servers = {i: RaftServer(i, storage=DiskStorage(data / f"node{i}"), transport=transports[i],
                             state_machine=LockTable(), bootstrap=frozenset(ids), config=config)
               for i in ids}
    for server in servers.values():
        await server.start()
    # Ports were chosen by the OS: now tell every transport where its peers listen.
    for i, transport in transports.items():
        transport.set_peers({j: t.listen_address for j, t in transports.items() if j != i})
    return servers


async def leader_of(servers: dict[int, RaftServer], deadline: float = 10.0) -> RaftServer:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while loop.time() < end:
        for server in servers.values():
            if server.is_leader:
                return server
        await asyncio.sleep(0.01)
    raise RuntimeError("no leader elected")


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="raftly-locks-") as tmp:
        servers = await start_cluster(Path(tmp), [1, 2, 3])
        try:
            leader = await leader_of(servers)
            print(f"node {leader.id} leads term {leader.status().term}")
            for op, lock, owner in [("acquire", "printer", "alice"),
                                    ("acquire", "printer", "bob"),
                                    ("acquire", "scanner", "bob")]:
                print(f"{owner} {op}s {lock!r}:", await leader.propose(command(op, lock, owner)))

            follower = next(s for s in servers.values() if s is not leader)
            table = await follower.read(lambda sm: dict(sm.owners))  # type: ignore[attr-defined]
            print(f"linearizable read on follower {follower.id}: {table}")

            print(f"stopping the leader, node {leader.id}")
            await leader.close()
            del servers[leader.id]
            leader = await leader_of(servers)
            print(f"node {leader.id} took over in term {leader.status().term}")
            for op, lock, owner in [("release", "printer", "alice"),
                                    ("acquire", "printer", "bob")]:
                print(f"{owner} {op}s {lock!r}:", await leader.propose(command(op, lock, owner)))
            table = await leader.read(lambda sm: dict(sm.owners))  # type: ignore[attr-defined]
            print(f"lock table now: {table}")
        finally:
            for server in servers.values():
                await server.close()


if __name__ == "__main__":
    asyncio.run(main())

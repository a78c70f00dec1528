"""serve(): nodes started from a cluster file on DiskStorage, restarted, and stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from kv_helpers import FAST, run
from polling import eventually

from raftly.core.types import ConfState
from raftly.kv.client import AsyncClient, Client, UnavailableError
from raftly.kv.cluster_file import Address, ClusterFileError, NodeSpec
from raftly.kv.identity import IdentityError, NodeIdentity, claim_data_dir
from raftly.kv.service import _restart, serve
from raftly.localproc import free_ports
from raftly.storage import DiskStorage


def write_cluster_file(path: Path, names: list[str]) -> list[str]:
    """Write a cluster file for ``names`` on free loopback ports; return the API endpoints."""
    ports = free_ports(2 * len(names))
    lines, endpoints = [], []
    for i, name in enumerate(names):
        raft, api = ports[2 * i], ports[2 * i + 1]
        lines += [f"[nodes.{name}]", f'raft = "127.0.0.1:{raft}"', f'api = "127.0.0.1:{api}"']
        endpoints.append(f"127.0.0.1:{api}")
    path.write_text("\n".join(lines) + "\n")
    return endpoints


def test_three_nodes_from_a_cluster_file_survive_a_full_restart(tmp_path: Path) -> None:
    cluster_file = tmp_path / "cluster.toml"
    names = ["n1", "n2", "n3"]
    endpoints = write_cluster_file(cluster_file, names)

    async def start() -> tuple[asyncio.Event, list[asyncio.Task[None]]]:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(serve(cluster_file, name, tmp_path / name, fsync="always",
                                           config=FAST, stop=stop)) for name in names]
        return stop, tasks

    async def main() -> None:
        stop, tasks = await start()
        async with AsyncClient(endpoints, timeout=10) as kv:
            await asyncio.gather(*(kv.put(f"key/{i}", f"value {i}".encode())
                                   for i in range(20)))
            assert await kv.delete("key/0") is True
            assert await kv.cas("key/1", b"value 1", b"swapped") is True
        stop.set()
        await asyncio.gather(*tasks)

        stop, tasks = await start()
        async with AsyncClient(endpoints, timeout=10) as kv:
            items = dict(await kv.list("key/"))
            assert len(items) == 19 and "key/0" not in items
            assert items["key/1"] == b"swapped" and items["key/19"] == b"value 19"
            status = await kv.status()
            assert status["applied_index"] >= 22 and len(status["members"]) == 3
        stop.set()
        await asyncio.gather(*tasks)

    run(main())


def test_a_node_that_lost_its_disk_is_refused_under_its_old_id(tmp_path: Path) -> None:
    cluster_file = tmp_path / "cluster.toml"
    names = ["n1", "n2", "n3"]
    endpoints = write_cluster_file(cluster_file, names)

    async def main() -> None:
        stops = {name: asyncio.Event() for name in names}
        tasks = {name: asyncio.create_task(serve(cluster_file, name, tmp_path / name,
                                                 fsync="never", config=FAST, stop=stops[name]))
                 for name in names}
        try:
            async with AsyncClient(endpoints, timeout=10) as kv:
                await kv.put("k", b"v")
                for endpoint in endpoints:  # every node took the write: the leader knows it
                    await eventually(lambda e=endpoint: _applied(kv, e, 2),
                                     what=f"{endpoint} applied the write")
            stops["n3"].set()
            await tasks.pop("n3")
            shutil.rmtree(tmp_path / "n3")  # the disk is gone, and its votes with it
            with pytest.raises(IdentityError, match=r"n3 holds entries .* lost its disk"):
                await serve(cluster_file, "n3", tmp_path / "n3", fsync="never", config=FAST)
            assert not (tmp_path / "n3").exists() or not any((tmp_path / "n3").iterdir())
        finally:
            for stop in stops.values():
                stop.set()
            await asyncio.gather(*tasks.values())

    run(main())


async def _applied(kv: AsyncClient, endpoint: str, index: int) -> bool:
    return bool((await kv.status(endpoint))["applied_index"] >= index)


def test_serve_refuses_an_unknown_node(tmp_path: Path) -> None:
    cluster_file = tmp_path / "cluster.toml"
    write_cluster_file(cluster_file, ["n1"])
    with pytest.raises(ClusterFileError, match="no node named 'n7'"):
        run(serve(cluster_file, "n7", tmp_path / "data"))


SERVE = "import asyncio, sys; from raftly.kv.service import serve; " \
        "asyncio.run(serve(sys.argv[1], 'solo', sys.argv[2]))"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_stops_a_node_cleanly_and_data_survives(tmp_path: Path) -> None:
    cluster_file = tmp_path / "cluster.toml"
    [endpoint] = write_cluster_file(cluster_file, ["solo"])
    data = tmp_path / "solo"

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", SERVE, str(cluster_file), str(data)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def stop(proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        assert proc.returncode == 0, err.decode()

    proc = start()
    try:
        with Client([endpoint], timeout=15) as kv:
            kv.put("durable", b"yes")
        stop(proc)
        proc = start()
        with Client([endpoint], timeout=15) as kv:
            assert kv.get("durable") == b"yes"
        stop(proc)
        # Stopped means stopped: nothing answers any more.
        with Client([endpoint], timeout=0.3) as kv, pytest.raises(UnavailableError):
            kv.get("durable")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_joined_node_restarts_from_its_data_dir_before_its_log_names_it(
        tmp_path: Path) -> None:
    # It stopped after the cluster added it, but before the entry that did reached its log
    # (a long first snapshot, say): what the join answered is all it has to go by.
    peer = NodeSpec("n1", 1, Address("127.0.0.1", 7001), Address("127.0.0.1", 8001))
    own = NodeSpec("n4", 12345, Address("127.0.0.1", 7004), Address("127.0.0.1", 8004))
    identity = NodeIdentity("raftly-x", "n4", 12345, (), tuple(
        (n.name, n.id, str(n.raft), str(n.api)) for n in (peer, own)))
    storage = DiskStorage(tmp_path, fsync="never")
    claim_data_dir(tmp_path, identity, "a join")
    storage.bootstrap(ConfState())
    storage.close()
    start, again = _restart(tmp_path, None, None, None)
    assert again == identity
    assert start.cluster.node("n4") == own and start.cluster.node("n1") == peer
    with pytest.raises(IdentityError, match=re.escape("--raft 127.0.0.1:7004, not 127.0.0.1:7999")):
        _restart(tmp_path, None, Address("127.0.0.1", 7999), None)

"""``raftly serve --fsync never`` nodes whose data dirs are on a lazy file system
(``raftly.testing.lazyfs``) start again after every whole-cluster power loss: SIGKILL all,
drop what was not fsynced, restart, and the cluster elects a leader and takes writes."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from e2e_helpers import ELECTION_TIMEOUT, HEARTBEAT, dump_logs

from raftly.kv.client import Client
from raftly.localcluster import Layout, ProcessCluster, plan_loopback


@pytest.mark.parametrize("mode", ["lazy", "strict"])
def test_an_fsync_never_cluster_starts_again_after_each_power_loss(lazyfs, tmp_path: Path,
                                                                   mode: str) -> None:
    lazy = lazyfs(mode)
    cluster = ProcessCluster(
        tmp_path / "cluster", plan_loopback(3), fsync="never",
        layout=Layout(data_dir=f"{lazy.mountpoint}/{{name}}"),
        election_timeout=ELECTION_TIMEOUT, heartbeat=HEARTBEAT, log_level="INFO",
        # Snapshots and compactions happen within the writes below.
        serve_options=["--snapshot-entries", "20"])
    try:
        for cycle in range(3):
            cluster.start()
            cluster.wait_for_leader(timeout=30.0)
            with Client(cluster.endpoints, timeout=10.0) as client:
                for i in range(30):
                    client.put(f"c{cycle}-k{i}", b"v")
                assert client.get(f"c{cycle}-k29") == b"v"
            for name in cluster.names:
                cluster.kill(name, signal.SIGKILL)
            lazy.power_loss()
        cluster.start()
        cluster.wait_for_leader(timeout=30.0)
        with Client(cluster.endpoints, timeout=10.0) as client:
            client.put("after", b"v")
            assert client.get("after") == b"v"
    finally:
        cluster.stop(grace=5.0)
        dump_logs(cluster)

"""``raftly serve --config node.toml`` as a real process started from another directory: it
serves with the file's options, paths relative to the file, the command line's on top."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from e2e_helpers import request
from polling import wait_until

from raftly.kv.cluster_file import render_cluster
from raftly.localcluster import plan_loopback


def test_a_node_started_from_a_config_file_alone_serves_with_its_options(
        tmp_path: Path) -> None:
    spec = plan_loopback(1)
    etc, elsewhere = tmp_path / "etc", tmp_path / "elsewhere"
    etc.mkdir()
    elsewhere.mkdir()
    (etc / "cluster.toml").write_text(render_cluster(spec))
    (etc / "node.toml").write_text(
        '[serve]\ncluster = "cluster.toml"\nid = "n1"\ndata-dir = "data/n1"\n'
        'election-timeout = 0.4\nheartbeat = 0.08\nlog-format = "text"\n')
    err_path = tmp_path / "err"
    with err_path.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "raftly.cli", "serve", "--config", str(etc / "node.toml"),
             "--log-format", "json"],  # the command line wins over the file
            cwd=elsewhere, stdout=subprocess.DEVNULL, stderr=err,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        api = str(spec.nodes[0].api)

        def leading() -> bool:
            try:
                reply = request(api, "GET", "/v1/status", timeout=2)
            except OSError:
                return False
            return reply.status == 200 and json.loads(reply.body)["role"] == "leader"

        wait_until("the node leads", leading, timeout=30.0)
        assert (etc / "data" / "n1").is_dir() and not (elsewhere / "data").exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        lines = err_path.read_text().splitlines()
        assert lines and all(json.loads(line)["node"] == "n1" for line in lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

"""TLS and tokens end to end, with real processes: ``raftly cluster up --tls`` used through the
environment it prints, a short ``raftly check --tls`` run, and the CLI against a TLS cluster with
an auth file (401/403, bad certificate paths and an unknown CA as one-line errors)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import ELECTION_TIMEOUT, HEARTBEAT, cli, free_base_port, started
from polling import wait_until

from raftly.localcluster import ProcessCluster, plan_loopback
from raftly.security.certs import new_authority, write_pair

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="signals")

READ, WRITE, ADMIN = ("read-token-0123456789", "write-token-0123456789",
                      "admin-token-0123456789")


def _exports(text: str) -> dict[str, str]:
    """The variables of the ``try:  export A=1 B=2`` line ``cluster up`` prints."""
    line = re.search(r"export (.+)", text)
    assert line, text
    return dict(item.split("=", 1) for item in line[1].split())


def _one_line_error(run_err: str) -> str:
    assert run_err.count("\n") == 1 and run_err.startswith("raftly: "), run_err
    assert "Traceback" not in run_err
    return run_err


@contextlib.contextmanager
def _cluster_up(directory: Path, base: int, out_path: Path, err_path: Path, *extra: str,
                env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "raftly.cli", "cluster", "up", "--tls", "--nodes", "3",
             "--dir", str(directory), "--base-port", str(base),
             "--election-timeout", str(ELECTION_TIMEOUT), "--heartbeat", str(HEARTBEAT), *extra],
            stdout=out, stderr=err, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@posix_only
def test_cluster_up_tls_serves_https_with_the_printed_environment_and_reuses_its_certificates(
        tmp_path: Path) -> None:
    base = free_base_port()
    directory = tmp_path / "c"
    for run, (word, key) in enumerate((("made now", "first"), ("reused", "second"))):
        out_path, err_path = tmp_path / f"out{run}", tmp_path / f"err{run}"
        with _cluster_up(directory, base, out_path, err_path) as proc:
            # "leader is": cluster up polled its nodes over https and found one leading.
            wait_until("the leader report", lambda p=out_path: "leader is" in p.read_text(),
                       timeout=60)
            text = out_path.read_text()
            assert f"certificates in {directory / 'certs'} ({word})" in text, text
            env = _exports(text)
            assert env["RAFTLY_ENDPOINTS"].split(",") == [
                f"https://127.0.0.1:{base + 1000 + i}" for i in range(3)]
            assert Path(env["RAFTLY_CACERT"]) == (directory / "certs" / "ca.crt").resolve()
            put = cli("kv", "put", key, "over-tls", env=env)
            assert put.code == 0 and put.out.startswith("OK (index "), put.err
            for earlier in ("first", "second")[:run + 1]:
                got = cli("kv", "get", earlier, env=env)
                assert (got.code, got.out) == (0, "over-tls"), got.err
            status = cli("status", env=env)
            assert status.code == 0 and "leader" in status.out, status.out + status.err
            # Without the CA the nodes' certificates cannot be verified: one line, at once.
            started = time.monotonic()
            untrusted = cli("kv", "get", key, env={**env, "RAFTLY_CACERT": ""})
            assert untrusted.code == 1 and "cannot verify the node's certificate" in \
                _one_line_error(untrusted.err)
            assert time.monotonic() - started < 8
            proc.send_signal(signal.SIGINT)  # what Ctrl-C does: every node stops
            assert proc.wait(timeout=30) == 0, err_path.read_text()[-2000:]
            assert "all nodes stopped" in out_path.read_text()
    certs = sorted(p.name for p in (directory / "certs").iterdir())
    assert certs == ["ca.crt", "ca.key", "client.crt", "client.key", "n1.crt", "n1.key",
                     "n2.crt", "n2.key", "n3.crt", "n3.key"]


def _auth_file(folder: Path) -> Path:
    auth = folder / "auth.toml"
    auth.write_text("".join(f'[[tokens]]\ntoken = "{token}"\nrole = "{role}"\nname = "{role}er"\n'
                            for token, role in ((READ, "read"), (WRITE, "write"),
                                                (ADMIN, "admin"))))
    return auth


@posix_only
def test_cluster_up_with_an_auth_file_wants_tokens_and_watches_with_its_own(
        tmp_path: Path) -> None:
    auth = _auth_file(tmp_path)
    base = free_base_port()
    refused = cli("cluster", "up", "--tls", "--auth-file", str(auth), "--dir",
                  str(tmp_path / "c"), "--base-port", str(base), env={"RAFTLY_TOKEN": ""})
    assert refused.code == 1 and "RAFTLY_TOKEN" in _one_line_error(refused.err)
    out_path, err_path = tmp_path / "out", tmp_path / "err"
    with _cluster_up(tmp_path / "c", base, out_path, err_path, "--auth-file", str(auth),
                     env={"RAFTLY_TOKEN": READ}) as proc:
        wait_until("the leader report", lambda: "leader is" in out_path.read_text(),
                   timeout=60)
        env = _exports(out_path.read_text())
        anonymous = cli("kv", "put", "k", "v", env={**env, "RAFTLY_TOKEN": ""})
        assert anonymous.code == 1 and "unauthorized (401)" in _one_line_error(anonymous.err)
        writer = cli("kv", "put", "k", "v", env={**env, "RAFTLY_TOKEN": WRITE})
        assert writer.code == 0, writer.err
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, err_path.read_text()[-2000:]


def test_a_short_check_run_against_a_tls_cluster_passes(tmp_path: Path) -> None:
    out = tmp_path / "check"
    run = cli("check", "--tls", "--nodes", "3", "--time", "8", "--clients", "4", "--keys", "3",
              "--rate", "60", "--nemesis", "partition,kill", "--seed", "7", "--out", str(out),
              timeout=180)
    assert run.code == 0 and "PASS" in run.out, run.out + run.err[-3000:]
    assert "TLS" in run.out.splitlines()[0]
    assert (out / "certs" / "ca.crt").exists()
    result = json.loads((out / "result.json").read_text())
    # The clients spoke https only: an ok op proves the nodes served TLS.
    assert result["counts"].get("ok", 0) > 0, result["counts"]
    assert all((out / "certs" / f"n{i}.crt").exists() for i in (1, 2, 3))


@pytest.fixture(scope="module")
def auth_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    """A 3-node TLS cluster whose API wants tokens (read, write and admin ones)."""
    root = tmp_path_factory.mktemp("auth")
    auth = _auth_file(root)
    cluster = ProcessCluster(root / "cluster", plan_loopback(3), election_timeout=ELECTION_TIMEOUT,
                             heartbeat=HEARTBEAT, tls_dir=root / "certs", token=ADMIN,
                             env={"RAFTLY_TOKEN": ADMIN},
                             serve_options=["--auth-file", str(auth)])
    yield from started(cluster)


def _env(cluster: ProcessCluster, token: str | None) -> dict[str, str]:
    assert cluster.tls_dir is not None
    env = {"RAFTLY_ENDPOINTS": ",".join(cluster.endpoints),
           "RAFTLY_CACERT": str(cluster.tls_dir / "ca.crt"), "RAFTLY_TOKEN": ""}
    if token is not None:
        env["RAFTLY_TOKEN"] = token
    return env


def test_kv_without_a_token_is_401_and_with_a_low_role_403_in_one_line(
        auth_cluster: ProcessCluster) -> None:
    anonymous = cli("kv", "put", "k", "v", env=_env(auth_cluster, None))
    assert anonymous.code == 1
    assert "unauthorized (401)" in _one_line_error(anonymous.err)
    assert "--token" in anonymous.err and "RAFTLY_TOKEN" in anonymous.err
    wrong = cli("kv", "get", "k", "--token", "not-a-known-token-at-all", env=_env(auth_cluster,
                                                                                  None))
    assert wrong.code == 1 and "unauthorized (401)" in _one_line_error(wrong.err)
    reader = cli("kv", "put", "k", "v", env=_env(auth_cluster, READ))
    assert reader.code == 1 and "forbidden (403)" in _one_line_error(reader.err)
    assert "needs write" in reader.err
    assert READ not in reader.err and WRITE not in reader.err


def test_tokens_with_the_right_role_work_through_the_cli(auth_cluster: ProcessCluster) -> None:
    put = cli("kv", "put", "greeting", "hello", env=_env(auth_cluster, WRITE))
    assert put.code == 0, put.err
    got = cli("kv", "get", "greeting", env=_env(auth_cluster, READ))
    assert (got.code, got.out) == (0, "hello"), got.err
    status = cli("status", env=_env(auth_cluster, READ))
    assert status.code == 0, status.out + status.err
    members = cli("member", "list", env=_env(auth_cluster, READ))
    assert members.code == 0 and "n1" in members.out, members.err


def test_membership_and_status_refusals_name_the_status(auth_cluster: ProcessCluster) -> None:
    transfer = cli("leader", "transfer", env=_env(auth_cluster, WRITE))
    assert transfer.code == 1 and "forbidden (403)" in _one_line_error(transfer.err)
    listed = cli("member", "list", env=_env(auth_cluster, None))
    assert listed.code == 1 and "unauthorized (401)" in _one_line_error(listed.err)
    status = cli("status", env=_env(auth_cluster, None))
    assert status.code == 1 and "unauthorized (401)" in status.err, status.err


def test_bad_certificate_paths_and_another_ca_are_one_line_errors(
        auth_cluster: ProcessCluster, tmp_path: Path) -> None:
    env = _env(auth_cluster, READ)
    missing = cli("kv", "get", "k", "--cacert", str(tmp_path / "nope.crt"), env=env)
    assert missing.code == 1
    assert "no such CA certificate file" in _one_line_error(missing.err)
    half = cli("kv", "get", "k", "--cert", str(tmp_path / "c.crt"), env=env)
    assert half.code == 1 and "both --cert and --key" in _one_line_error(half.err)
    other = new_authority()
    write_pair(tmp_path, "other", other.cert, other.key)
    for command in (["kv", "get", "k"], ["member", "list"]):
        started = time.monotonic()
        untrusted = cli(*command, "--cacert", str(tmp_path / "other.crt"), env=env)
        assert untrusted.code == 1
        assert "cannot verify the node's certificate" in _one_line_error(untrusted.err)
        assert time.monotonic() - started < 8, "not retried until the timeout"

"""Values are bytes end to end in ``raftly kv``: what ``get`` writes to a file or a terminal,
how ``list`` escapes a line and names encodings in JSON, and compare-and-set on binary values.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from raftly.localcluster import ProcessCluster

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="a pty and bytes in argv")


def kv(cluster: ProcessCluster, *args: str | bytes, stdin: bytes | None = None
       ) -> subprocess.CompletedProcess[bytes]:
    """``raftly kv ARGS`` in a separate process; stdout and stderr kept as bytes."""
    env = {**os.environ, "RAFTLY_ENDPOINTS": ",".join(cluster.endpoints)}
    return subprocess.run([sys.executable, "-m", "raftly.cli", "kv", *args], input=stdin,
                          capture_output=True, timeout=60, env=env)


def on_a_terminal(cluster: ProcessCluster, *args: str) -> tuple[int, bytes, bytes]:
    """``raftly kv ARGS`` with its stdout on a pseudo-terminal: (exit status, stdout, stderr)."""
    import pty

    leader, follower = pty.openpty()
    env = {**os.environ, "RAFTLY_ENDPOINTS": ",".join(cluster.endpoints)}
    try:
        proc = subprocess.run([sys.executable, "-m", "raftly.cli", "kv", *args],
                              stdout=follower, stderr=subprocess.PIPE, timeout=60, env=env)
        os.close(follower)
        out = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the terminal's other side is closed and drained
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(leader)
    return proc.returncode, out.replace(b"\r\n", b"\n"), proc.stderr


BINARY = b"\xff\x00a\tb\nc\\d"


@posix_only
def test_get_writes_exact_bytes_to_a_file_and_safe_text_to_a_terminal(
        shared_cluster: ProcessCluster) -> None:
    assert kv(shared_cluster, "put", "bytes/bin", stdin=BINARY).returncode == 0
    got = kv(shared_cluster, "get", "bytes/bin")
    assert (got.returncode, got.stdout, got.stderr) == (0, BINARY, b"")
    code, out, err = on_a_terminal(shared_cluster, "get", "bytes/bin")
    assert code == 0 and out == b"\\xff\x00a\tb\nc\\d\n"
    assert b"not UTF-8" in err and b"--raw" in err
    code, out, err = on_a_terminal(shared_cluster, "get", "--raw", "bytes/bin")
    assert (code, out.replace(b"\n", b"")) == (0, BINARY.replace(b"\n", b""))
    # Text stays text on a terminal, with nothing said about it.
    assert kv(shared_cluster, "put", "bytes/text", "héllo").returncode == 0
    assert on_a_terminal(shared_cluster, "get", "bytes/text") == (0, "héllo\n".encode(), b"")
    got = kv(shared_cluster, "get", "--no-raw", "bytes/bin")
    assert got.stdout == b"\\xff\x00a\tb\nc\\d\n"


@posix_only
def test_list_escapes_lines_and_json_names_each_encoding(shared_cluster: ProcessCluster) -> None:
    for key, value in (("list/bin", b"\xff"), ("list/ctl", b"\x00\x1b[2J\x7f"),
                       ("list/lit", b"lit\\xff"), ("list/tab\tkey", b"a\tb\nc")):
        assert kv(shared_cluster, "put", key, stdin=value).returncode == 0
    listed = kv(shared_cluster, "list", "list/")
    assert listed.stdout.decode().splitlines() == [
        "list/bin\t\\xff", "list/ctl\t\\x00\\x1b[2J\\x7f", "list/lit\tlit\\\\xff",
        "list/tab\\tkey\ta\\tb\\nc"]
    as_json = json.loads(kv(shared_cluster, "list", "list/", "--json").stdout)
    assert as_json == [
        {"key": "list/bin", "encoding": "base64", "value": "/w=="},
        {"key": "list/ctl", "encoding": "utf-8", "value": "\x00\x1b[2J\x7f"},
        {"key": "list/lit", "encoding": "utf-8", "value": "lit\\xff"},
        {"key": "list/tab\tkey", "encoding": "utf-8", "value": "a\tb\nc"}]


@posix_only
def test_cas_expects_binary_and_empty_values(shared_cluster: ProcessCluster) -> None:
    assert kv(shared_cluster, "put", "cas/bin", stdin=b"\xff").returncode == 0
    # A byte that is not UTF-8 on the command line goes through as that byte.
    swapped = kv(shared_cluster, "cas", "cas/bin", b"\xff", "text")
    assert (swapped.returncode, swapped.stdout) == (0, b"OK\n"), swapped.stderr
    assert kv(shared_cluster, "get", "cas/bin").stdout == b"text"
    assert kv(shared_cluster, "put", "cas/empty", stdin=b"").returncode == 0
    assert kv(shared_cluster, "cas", "cas/empty", "", "full").returncode == 0
    missed = kv(shared_cluster, "cas", "cas/empty", "", "again")
    assert missed.returncode == 1 and b"not swapped" in missed.stderr

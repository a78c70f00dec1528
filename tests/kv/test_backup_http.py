"""``GET /v1/snapshot`` on an in-process cluster (raftly.kv.backup_http) and its client
(raftly.kv.backup_fetch): the leader streams its state with the metadata and a checksum, a
follower redirects, admin only, and a client that goes away mid-stream costs the node nothing."""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import socket
from pathlib import Path

import aiohttp
import pytest
from kv_helpers import ADMIN, AUTH, FAST, READ, WRITE, SecureCluster, bearer, call, followers, run
from polling import eventually

from raftly.cli import main as cli_main
from raftly.kv.backup import (
    STREAM_TRAILER,
    BackupError,
    check_stream_trailer,
    parse_stream_headers,
    verify,
)
from raftly.kv.backup_fetch import FetchError, save_snapshot
from raftly.kv.backup_http import MAX_STREAMS
from raftly.kv.client import AsyncClient
from raftly.kv.http import Limits
from raftly.kv.service import LocalCluster
from raftly.kv.state_machine import KVStateMachine


def test_the_leader_streams_its_whole_state_with_index_term_and_checksum() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST) as cluster, aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            async with AsyncClient(cluster.urls) as client:
                for i in range(50):
                    await client.put(f"k{i}", bytes([i]) * i)
                await client.delete("k7")
                written = await client.put("last", b"acknowledged before the request")
            follower = followers(cluster, leader)[0]
            status, body, headers = await call(s, "GET", follower.url + "/v1/snapshot")
            assert status == 307 and headers["Location"] == leader.url + "/v1/snapshot", body
            status, body, headers = await call(s, "GET", leader.url + "/v1/snapshot")
            assert status == 200 and headers["Content-Type"] == "application/vnd.raftly.snapshot"
            meta = parse_stream_headers({k.lower(): v for k, v in headers.items()})
            st = leader.server.status()
            assert meta.cluster_id == cluster.cluster.cluster_id  # type: ignore[union-attr]
            assert written <= meta.index <= st.applied_index and meta.term == st.term
            assert meta.keys == 50
            payload, trailer = body[:-STREAM_TRAILER.size], body[-STREAM_TRAILER.size:]
            assert check_stream_trailer(trailer, len(payload)) == hashlib.sha256(payload).digest()
            machine = KVStateMachine()
            machine.restore(io.BytesIO(payload))
            assert machine.range("", limit=100) == leader.kv.range("", limit=100)
            # HTTP/1.0 has no chunks: the stream ends with the connection, trailer included.
            reader, writer = await asyncio.open_connection(leader.api_address.host,
                                                           leader.api_address.port)
            writer.write(b"GET /v1/snapshot HTTP/1.0\r\n\r\n")
            head, _, raw = (await reader.read()).partition(b"\r\n\r\n")
            writer.close()
            assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200"), head
            assert raw == body
            async with s.head(leader.url + "/v1/snapshot") as resp:
                assert resp.status == 405 and "HEAD" not in resp.headers.get("Allow", "")

    run(main())


def test_the_snapshot_under_concurrent_writes_holds_every_write_acknowledged_before_it() -> None:
    """Writers keep going during the request: every write acknowledged before the request was
    sent is in the payload with its revision, and nothing in it is newer than its index (the
    index and the capture are taken together; four puts are in flight all along)."""
    async def main() -> None:
        async with LocalCluster(3, config=FAST) as cluster, aiohttp.ClientSession() as s, \
                AsyncClient(cluster.urls) as client:
            leader = await cluster.wait_for_leader()
            acked: dict[str, int] = {}
            stop = asyncio.Event()

            async def writer(w: int) -> None:
                n = 0
                while not stop.is_set():
                    key = f"w{w}/{n % 25}"  # overwritten: each key's newest revision counts
                    acked[key] = await client.put(key, f"{w}-{n}".encode())
                    n += 1

            writers = [asyncio.create_task(writer(w)) for w in range(4)]
            await eventually(lambda: len(acked) >= 40, what="40 acknowledged writes")
            before = dict(acked)
            status, body, headers = await call(s, "GET", leader.url + "/v1/snapshot")
            stop.set()
            await asyncio.gather(*writers)
            assert status == 200
            meta = parse_stream_headers({k.lower(): v for k, v in headers.items()})
            machine = KVStateMachine()
            machine.restore(io.BytesIO(body[:-STREAM_TRAILER.size]))
            data = machine.capture().data
            for key, revision in before.items():
                assert data[key].mod_revision >= revision, key
            assert max(kv.mod_revision for kv in data.values()) <= meta.index
            assert max(before.values()) <= meta.index

    run(main(), timeout=60.0)


def test_only_an_admin_token_gets_the_snapshot(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    async def main() -> None:
        async with SecureCluster(3, config=FAST, auth=AUTH) as cluster, \
                aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            url = leader.url + "/v1/snapshot"
            assert (await call(s, "GET", url))[0] == 401
            for token in (READ, WRITE):
                status, body, _ = await call(s, "GET", url, headers=bearer(token))
                assert status == 403 and body["code"] == "forbidden", body
            assert (await call(s, "GET", url, headers=bearer(ADMIN)))[0] == 200
            with pytest.raises(FetchError, match="needs admin") as refused:
                await asyncio.to_thread(save_snapshot, cluster.urls, tmp_path / "r.rbk",
                                        token=READ)
            assert refused.value.status == 403 and not (tmp_path / "r.rbk").exists()
            code = await asyncio.to_thread(cli_main, [
                "snapshot", "save", str(tmp_path / "r.rbk"), "--endpoints", leader.url,
                "--token", READ])
            assert code == 1 and "forbidden (403)" in capsys.readouterr().err
            info = await asyncio.to_thread(save_snapshot, cluster.urls, tmp_path / "a.rbk",
                                           token=ADMIN)
            assert verify(tmp_path / "a.rbk") == info

    run(main())


def test_a_client_that_goes_away_mid_stream_leaves_the_node_serving_snapshots(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """Far more than the pipe holds: the worker is blocked when the client leaves, and must
    be let go; then the next snapshots are served as usual."""
    caplog.set_level(logging.INFO, "raftly.kv.backup")

    async def main() -> None:
        async with LocalCluster(1, config=FAST) as cluster:
            leader = await cluster.wait_for_leader()
            async with AsyncClient(cluster.urls) as client:
                await asyncio.gather(*(client.put(f"big/{i}", bytes([i % 256]) * (256 << 10))
                                       for i in range(64)))
            for _ in range(3):  # more than MAX_STREAMS: each left stream was let go
                async with aiohttp.ClientSession() as s, \
                        s.get(leader.url + "/v1/snapshot") as resp:
                    assert resp.status == 200
                    await resp.content.readexactly(1 << 20)
            info = await asyncio.to_thread(save_snapshot, cluster.urls, tmp_path / "b.rbk",
                                           timeout=20.0)
            assert info.header.keys == 64 and info.header.payload_size > 16 << 20

    run(main(), timeout=60.0)
    assert "the client went away" in caplog.text


def test_clients_that_stop_reading_are_dropped_and_free_their_slots_for_a_save(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """MAX_STREAMS clients read the headers and then nothing, with small receive buffers: each
    stream is dropped once a chunk waited idle_timeout, and a save then succeeds."""
    caplog.set_level(logging.INFO, "raftly.kv.backup")

    async def main() -> None:
        async with LocalCluster(1, config=FAST, limits=Limits(idle_timeout=1.0)) as cluster:
            leader = await cluster.wait_for_leader()
            async with AsyncClient(cluster.urls) as client:
                await asyncio.gather(*(client.put(f"big/{i}", bytes([i % 256]) * (256 << 10))
                                       for i in range(64)))
            stalled = []
            for _ in range(MAX_STREAMS):
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.connect((leader.api_address.host, leader.api_address.port))
                sock.setblocking(False)
                reader, writer = await asyncio.open_connection(sock=sock)
                writer.write(b"GET /v1/snapshot HTTP/1.1\r\nHost: x\r\n\r\n")
                assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
                stalled.append(writer)  # and read nothing more
            info = await asyncio.to_thread(save_snapshot, cluster.urls, tmp_path / "b.rbk",
                                           timeout=30.0)
            assert info.header.keys == 64
            for writer in stalled:
                writer.close()

    run(main(), timeout=90.0)
    assert caplog.text.count("read nothing for 1s") == MAX_STREAMS


def test_a_save_into_a_directory_it_cannot_write_fails_before_asking_any_node(
    tmp_path: Path,
) -> None:
    """No node listens at the endpoint: the error is the directory's, at once, not a fetch
    timeout (the leader would have captured and streamed for nothing)."""
    with pytest.raises(BackupError, match=r"cannot write in .*missing") as refused:
        save_snapshot("http://127.0.0.1:9", tmp_path / "missing" / "b.rbk", timeout=5.0)
    assert not isinstance(refused.value, FetchError)


def test_a_snapshot_is_saved_over_https_from_a_follower(tmp_path: Path) -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST, tls_dir=tmp_path / "tls") as cluster:
            leader = await cluster.wait_for_leader()
            async with AsyncClient(cluster.urls, cacert=tmp_path / "tls" / "ca.crt") as client:
                await client.put("secret", b"over TLS")
            follower = followers(cluster, leader)[0]
            assert follower.url.startswith("https://")
            info = await asyncio.to_thread(save_snapshot, [follower.url], tmp_path / "t.rbk",
                                           cacert=str(tmp_path / "tls" / "ca.crt"))
            assert info.header.keys == 1
            with pytest.raises(FetchError, match="cannot verify"):
                await asyncio.to_thread(save_snapshot, [follower.url], tmp_path / "u.rbk")

    run(main())

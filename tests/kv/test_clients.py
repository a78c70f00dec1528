"""Client and AsyncClient against in-process clusters: routing, redirects, failover, errors."""

from __future__ import annotations

import asyncio
import functools
import json
import socket

import pytest
from kv_helpers import FAST, run
from polling import eventually

import raftly
from raftly.kv.client import (
    AsyncClient,
    Client,
    OutcomeUnknownError,
    RequestError,
    UnavailableError,
)
from raftly.kv.client_core import (
    ClientCore,
    Response,
    Step,
    Verdict,
    get_call,
    put_call,
)
from raftly.kv.http import Limits
from raftly.kv.protocol import (
    ACK_HEADER,
    CLIENT_HEADER,
    RETRY_HEADER,
    SEQ_HEADER,
    STALE_SEQ_CODE,
)
from raftly.kv.service import LocalCluster, RunningNode


def test_lazy_exports() -> None:
    assert raftly.Client is Client and raftly.AsyncClient is AsyncClient
    with pytest.raises(AttributeError):
        _ = raftly.NoSuchThing


def _sync_session(urls: list[str]) -> None:
    """Every Client operation, in a thread (it blocks), starting at a follower."""
    with Client(urls, timeout=5) as kv:
        index = kv.put("a/1", b"one")
        assert index >= 1
        assert kv.put("a/2", b"\xff") > index
        assert kv.get("a/1") == b"one"
        assert kv.get("missing") is None
        assert kv.list("a/") == [("a/1", b"one"), ("a/2", b"\xff")]
        assert kv.list("a/", limit=1) == [("a/1", b"one")]
        assert kv.cas("a/1", b"one", b"uno") is True
        assert kv.cas("a/1", b"one", b"eins") is False
        assert kv.cas("nope", b"", b"x") is False
        assert kv.get("a/1") == b"uno"
        assert kv.delete("a/1") is True
        assert kv.delete("a/1") is False
        assert kv.get("a/1", stale=True) in (None, b"uno")
        assert kv.get("key with spaces/and é") is None
        kv.put("key with spaces/and é", b"ok")
        assert kv.get("key with spaces/and é") == b"ok"
        status = kv.status()
        assert status["role"] in ("leader", "follower") and status["leader"] is not None
        assert kv.status(urls[0])["role"] == "follower"
        with pytest.raises(RequestError) as err:
            kv.put("k", b"x" * 2000)
        assert err.value.status == 413
        # Binary values compare exactly (expect_base64), empty ones too.
        kv.put("bin", b"\xff\x00")
        assert kv.cas("bin", b"\xff", b"x") is False
        assert kv.cas("bin", b"\xff\x00", b"") is True
        assert kv.cas("bin", b"", b"\xfe") is True and kv.get("bin") == b"\xfe"


def test_sync_client_all_operations() -> None:
    async def main() -> None:
        limits = Limits(max_value_bytes=1024)
        async with LocalCluster(3, config=FAST, limits=limits) as cluster:
            leader = await cluster.wait_for_leader()
            # Followers first, so the client must follow a redirect to find the leader.
            urls = [n.url for n in cluster.nodes if n is not leader] + [leader.url]
            await asyncio.to_thread(_sync_session, urls)

    run(main())


def test_async_client_concurrent_writes_and_failover() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST) as cluster, \
                AsyncClient(cluster.urls, timeout=8) as kv:
            await cluster.wait_for_leader()
            indexes = await asyncio.gather(*(kv.put(f"k{i:02}", str(i).encode())
                                             for i in range(40)))
            assert len(set(indexes)) == 40
            assert len(await kv.list("k")) == 40
            assert await kv.cas("k00", b"0", b"zero") is True
            assert await kv.cas("k00", b"0", b"zero") is False
            assert await kv.delete("k01") is True
            assert await kv.get("k01") is None
            assert (await kv.status())["leader"] is not None
            # Kill the leader: the client finds the new one and loses nothing acknowledged.
            leader = await cluster.wait_for_leader()
            await leader.close()
            await kv.put("after", b"failover")
            assert await kv.get("after") == b"failover"
            assert await kv.get("k00") == b"zero"
            assert len(await kv.list("k")) == 39
            new_leader = await cluster.wait_for_leader()
            assert new_leader is not leader

    run(main())


def test_sync_client_retry_applies_once() -> None:
    """A write whose first answer is lost is resent with the same seq and applied once."""

    async def main() -> None:
        async with LocalCluster(3, config=FAST) as cluster:
            leader = await cluster.wait_for_leader()
            client = Client([leader.url], timeout=5)
            _seq, headers = client._core.begin_write()
            req_headers = {**headers}

            def send_twice() -> tuple[int, int]:
                import http.client
                import json
                from urllib.parse import urlsplit

                results = []
                for _ in range(2):
                    conn = http.client.HTTPConnection(urlsplit(leader.url).netloc, timeout=5)
                    conn.request("PUT", "/v1/kv/once?expect=a", body=b"b", headers=req_headers)
                    results.append(conn.getresponse())
                    results[-1].read()
                    conn.close()
                    if len(results) == 1:
                        put = http.client.HTTPConnection(urlsplit(leader.url).netloc, timeout=5)
                        put.request("PUT", "/v1/kv/once", body=b"a")
                        json.loads(put.getresponse().read())
                        put.close()
                return results[0].status, results[1].status

            first, second = await asyncio.to_thread(send_twice)
            assert first == second == 412, "the retry reports the first outcome, not a swap"
            assert leader.kv.get("once") == b"a"
            client.close()

    run(main())


def test_unavailable_when_nothing_listens() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: connections are refused
    with Client([f"127.0.0.1:{port}"], timeout=0.3) as kv, pytest.raises(UnavailableError):
        kv.put("k", b"v")  # refused: certainly not applied

    async def main() -> None:
        async with AsyncClient([f"http://127.0.0.1:{port}"], timeout=0.3) as kv:
            with pytest.raises(UnavailableError):
                await kv.get("k")

    run(main())


def test_outcome_unknown_when_leader_is_cut_off() -> None:
    async def main() -> None:
        limits = Limits(write_timeout=0.2, read_timeout=0.2)
        async with LocalCluster(3, config=FAST, transport="memory", limits=limits) as cluster:
            assert cluster.network is not None
            leader = await cluster.wait_for_leader()
            async with AsyncClient([leader.url], timeout=1.0) as kv:
                await kv.put("k", b"v")
                cluster.network.disconnect(leader.server.id)
                # Accepted by a leader that could not commit it (504), then no leader (503)
                # until the deadline: the client must say "unknown", not "failed".
                with pytest.raises(OutcomeUnknownError):
                    await kv.put("k", b"maybe")
                cluster.network.connect(leader.server.id)
                await cluster.wait_for_leader()
            async with AsyncClient(cluster.urls, timeout=5) as kv:
                await kv.put("k", b"after")
                for node in cluster.nodes:
                    await eventually(functools.partial(_applied, node, b"after"),
                                     what="catch up")

    run(main())


async def _applied(node: RunningNode, value: bytes) -> bool:
    return node.kv.get("k") == value


TRICKY_KEYS = ["..", ".", "a/../b", "./x", "x/.", "a//b", "x?y#z", "%41", " lead", "é" * 1365,
               "k" * 4096]


def test_tricky_keys_round_trip_with_both_clients() -> None:
    """Keys are opaque: dots, slashes, '?', '%' and 4 KiB keys are never normalized away."""

    def sync(urls: list[str]) -> None:
        with Client(urls) as kv:
            for key in TRICKY_KEYS:
                kv.put(key, b"sync")
                assert kv.get(key) == b"sync", key

    async def main() -> None:
        async with LocalCluster(3, config=FAST) as cluster, AsyncClient(cluster.urls) as kv:
            await cluster.wait_for_leader()
            for key in TRICKY_KEYS:
                await kv.put(key, b"async")
                assert await kv.get(key) == b"async", key
            await asyncio.to_thread(sync, cluster.urls)
            assert sorted(k for k, _ in await kv.list()) == sorted(TRICKY_KEYS)
            with pytest.raises(RequestError) as err:
                await kv.put("k" * 4097, b"v")
            assert err.value.status == 413

    run(main())


def test_resends_of_a_write_that_may_have_applied_are_marked_as_retries() -> None:
    core = ClientCore(["127.0.0.1:1"], 1.0, 1.0, None)
    req = core.start(put_call("k", b"v"), lambda: 0.0).request
    core.mark_retry(req, maybe_applied=False)  # e.g. refused connection: surely not sent
    assert RETRY_HEADER not in req.headers
    core.mark_retry(req, maybe_applied=True)
    assert req.headers[RETRY_HEADER] == "1"


# -- the sans-IO core, without a network ----------------------------------------------------------


def _answer(status: int, body: object = None, **headers: str) -> Response:
    return Response(status, headers, json.dumps(body).encode())


def test_verdicts_of_the_answers_that_are_not_final() -> None:
    core = ClientCore(["127.0.0.1:1", "127.0.0.1:2"], 1.0, 1.0, None)
    read = get_call("k", False).request()
    write = put_call("k", b"v").request()
    assert core.verdict(read, _answer(307, location="http://127.0.0.1:9/v1/kv/k")) \
        is Verdict.REDIRECT
    assert core.target == "http://127.0.0.1:9"
    assert core.verdict(read, _answer(307)) is Verdict.RETRY_ELSEWHERE
    assert core.verdict(read, _answer(503, {"leader": "n1"})) is Verdict.RETRY
    assert core.verdict(read, _answer(503, {"leader": None})) is Verdict.RETRY_ELSEWHERE
    assert core.verdict(write, _answer(504, {"error": "x"})) is Verdict.UNKNOWN
    assert core.verdict(read, _answer(500, {"error": "x"})) is Verdict.RETRY_ELSEWHERE
    assert core.verdict(read, _answer(404, {"error": "x"})) is Verdict.DONE
    assert core.verdict(read, _answer(409, {"code": STALE_SEQ_CODE})) is Verdict.DONE
    with pytest.raises(OutcomeUnknownError):
        core.verdict(write, _answer(409, {"error": "forgotten", "code": STALE_SEQ_CODE}))


def test_a_write_keeps_its_seq_across_resends_and_gives_up_unknown_after_a_504() -> None:
    now = [0.0]
    core = ClientCore(["127.0.0.1:1"], 1.0, 1.0, "me")
    tries = core.start(put_call("k", b"v"), lambda: now[0])
    headers = dict(tries.request.headers)
    assert headers[SEQ_HEADER] == "1" and headers[CLIENT_HEADER] == "me"
    assert tries.answered("n1", _answer(504, {"error": "timeout"})) is Step.WAIT
    assert 0 < tries.pause() <= 1.0
    assert tries.request.headers == {**headers, RETRY_HEADER: "1"}
    assert tries.answered("n1", _answer(503, {"leader": None})) is Step.WAIT
    now[0] = 1.0
    with pytest.raises(OutcomeUnknownError):
        tries.pause()
    tries.finish()
    # The next write gets the next seq, and acknowledges that the first is no longer awaited.
    again = core.start(put_call("k", b"v"), lambda: now[0]).request.headers
    assert (again[SEQ_HEADER], again[ACK_HEADER]) == ("2", "2")


def test_a_read_that_never_got_an_answer_is_unavailable() -> None:
    now = [0.0]
    core = ClientCore(["127.0.0.1:1", "127.0.0.1:2"], 1.0, 1.0, None)
    tries = core.start(get_call("k", False), lambda: now[0])
    tries.failed(core.target, OSError("reset"), maybe_sent=True)
    assert core.target == "http://127.0.0.1:2"
    now[0] = 2.0
    with pytest.raises(UnavailableError):
        tries.pause()


def test_the_client_learns_the_members_api_addresses_and_uses_them_when_its_node_dies(
        ) -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST, members=True) as cluster:
            leader = await cluster.wait_for_leader()
            n4 = await cluster.add_node("n4")
            await eventually(lambda: n4.server.id in leader.server.conf.voters, 10.0)
            async with AsyncClient([leader.url], timeout=10.0) as client:
                members = await client.members()
                assert {m["name"] for m in members} == {"n1", "n2", "n3", "n4"}
                assert n4.url in client._core.endpoints
                # The one node it was given is gone; the learned ones take the write.
                await leader.close()
                assert await client.put("k", b"v") > 0

    run(main())

"""The HTTP API's strict query strings, binary compare-and-set, and newline-ended JSON answers.

A parameter the endpoint does not take, or one that is malformed or repeated, is a 400 naming
it, answered before anything is proposed: the commit index does not move.
"""

from __future__ import annotations

import aiohttp
from kv_helpers import FAST, call, followers, run
from yarl import URL

from raftly.kv.query import QueryError, parse_query
from raftly.kv.service import LocalCluster, RunningNode

BAD_PUTS = [
    ("expct=new", "expct"),  # a typo must not become an unconditional write
    ("expect", "expect"),
    ("expect=", "expect"),
    ("expect=%ZZ", "expect"),
    ("expect=%FF", "expect"),  # not UTF-8: binary values go in expect_base64
    ("expect=v&expect=v", "expect"),
    ("expect_base64=!!", "expect_base64"),
    ("expect=v&expect_base64=dg==", "expect_base64"),
    ("%ZZ=v", "%ZZ"),
]


def _commit(node: RunningNode) -> int:
    return node.server.status().commit_index


def test_bad_query_parameters_are_400_naming_them_and_propose_nothing() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST) as cluster, aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            url = leader.url + "/v1/kv/k"
            assert (await call(s, "PUT", url, data=b"v"))[0] == 200
            before = _commit(leader)
            for query, parameter in BAD_PUTS:
                for node in (leader, followers(cluster, leader)[0]):  # 400, not a 307
                    # encoded=True: sent as written, malformed escapes and all.
                    sent = URL(f"{node.url}/v1/kv/k?{query}", encoded=True)
                    status, body, _ = await call(s, "PUT", sent, data=b"new")
                    assert status == 400, (query, status, body)
                    assert body["parameter"] == parameter and parameter in body["error"], query
            for method, path, parameter in (
                    ("DELETE", "/v1/kv/k?force=1", "force"),
                    ("GET", "/v1/kv/k?consistncy=stale", "consistncy"),
                    ("GET", "/v1/kv/k?consistency=stale&consistency=stale", "consistency"),
                    ("GET", "/v1/kv?prefx=k", "prefx"),
                    ("GET", "/v1/kv?limit=1&limit=2", "limit"),
                    ("GET", "/v1/kv?limit=x", "limit"),
                    ("GET", "/v1/kv?consistency=weird", "consistency"),
                    ("GET", "/v1/status?verbose=1", "verbose")):
                status, body, _ = await call(s, method, leader.url + path)
                assert (status, body["parameter"]) == (400, parameter), path
            assert _commit(leader) == before, "a refused request used up a log index"
            assert (await call(s, "GET", url))[:2] == (200, b"v")
            # Well-formed ones still work: '+' is a space, escapes decode, empty pieces skip.
            assert (await call(s, "PUT", url + "?expect=v&", data=b"a b"))[0] == 200
            assert (await call(s, "PUT", url + "?expect=a+b", data=b"\xc3\xa9"))[0] == 200
            assert (await call(s, "PUT", url + "?expect=%C3%A9", data=b"ok"))[0] == 200
            status, body, _ = await call(s, "GET", leader.url + "/v1/kv?prefix=k&&limit=5")
            assert (status, body) == (200, [{"key": "k", "value": "ok"}])

    run(main())


def test_cas_on_binary_and_empty_values_with_expect_base64() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST) as cluster, aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            url = leader.url + "/v1/kv/bin"
            assert (await call(s, "PUT", url, data=b"\xff\x00"))[0] == 200
            status, body, _ = await call(s, "PUT", url + "?expect_base64=%2Fw%3D%3D", data=b"x")
            assert status == 412, "\\xff alone is not \\xff\\x00"
            status, body, _ = await call(s, "PUT", url + "?expect_base64=/wA=", data=b"")
            assert status == 200 and body["swapped"] is True
            status, body, _ = await call(s, "PUT", url + "?expect_base64=", data=b"\xfe")
            assert status == 200, "the empty expectation matches the empty value"
            assert (await call(s, "GET", url))[:2] == (200, b"\xfe")

    run(main())


def test_json_answers_end_with_a_newline() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST) as cluster, aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            for method, path, data in (
                    ("PUT", "/v1/kv/k", b"v"), ("GET", "/v1/kv", None),
                    ("GET", "/v1/kv/missing", None), ("DELETE", "/v1/kv/k", None),
                    ("GET", "/v1/status", None), ("GET", "/v1/kv?x=1", None)):
                async with s.request(method, leader.url + path, data=data,
                                     allow_redirects=False) as resp:
                    raw = await resp.read()
                    assert resp.content_type == "application/json", path
                    assert raw.endswith(b"}\n") or raw.endswith(b"]\n"), (path, raw)

    run(main())


def test_parse_query_rules() -> None:
    assert parse_query("", {"a"}) == {}
    assert parse_query("a=x+y%2B%C3%A9&", {"a"}) == {"a": "x y+é"}
    assert parse_query("a=", {"a"}) == {"a": ""}
    for bad, parameter in (("b=1", "b"), ("a", "a"), ("a=1&a=1", "a"), ("a=%Z1", "a"),
                           ("a=%", "a"), ("a=%C3", "a")):
        try:
            parse_query(bad, {"a"})
        except QueryError as exc:
            assert exc.parameter == parameter, bad
        else:
            raise AssertionError(f"{bad!r} was accepted")


def test_the_reference_documents_every_route_parameter_and_status() -> None:
    from pathlib import Path

    from raftly.kv.http import QUERY_PARAMS

    root = Path(__file__).resolve().parents[2]
    reference = (root / "docs" / "http-api.md").read_text()
    for (method, path), params in QUERY_PARAMS.items():
        assert f"## `{method} {path}`" in reference, (method, path)
        for param in params:
            assert f"`{param}=" in reference, param
    for route in ("## `DELETE /v1/kv/{key}`", "## `GET /v1/status`"):
        assert route in reference
    for status in (200, 307, 400, 404, 405, 409, 412, 413, 500, 503, 504):
        assert f"| `{status}` |" in reference, status
    assert "docs/http-api.md" in (root / "README.md").read_text()

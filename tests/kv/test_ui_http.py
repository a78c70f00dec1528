"""The cluster page's routes on in-process clusters: ``/v1/cluster`` with a member down, health
and merged timelines, the page served under a strict CSP with no outside reference, and tokens:
the HTML without one (it asks), the data only with the read role."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib.resources
import json
import re
import ssl
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from kv_helpers import AUTH, FAST, READ, SecureCluster, bearer, call, fake_nodes, run
from polling import eventually

from raftly.kv.activity import ActivityLog
from raftly.kv.cluster_file import Address, NodeSpec
from raftly.kv.service import LocalCluster
from raftly.kv.ui_http import (
    LAG_ENTRIES,
    _activity_ok,
    _BadAnswer,
    _get,
    cluster_answer,
    content_security_policy,
    merge_timelines,
)

PAGE = importlib.resources.files("raftly.kv").joinpath("ui/index.html").read_text("utf-8")


def test_cluster_reports_a_closed_member_down_with_the_reason_and_the_others_up() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST) as cluster:
            leader = await cluster.wait_for_leader()
            gone = next(n for n in cluster.nodes if n is not leader)
            await gone.close()
            async with aiohttp.ClientSession() as session:
                status, body, _ = await call(session, "GET", leader.url + "/v1/cluster")
            assert status == 200
            members = {m["name"]: m for m in body["members"]}
            assert set(members) == {"n1", "n2", "n3"}
            assert members[gone.name]["health"] == "down"
            assert members[gone.name]["status"] is None
            assert "connection refused" in members[gone.name]["error"]
            for name in set(members) - {gone.name}:
                assert members[name]["health"] == "up", members[name]
                assert members[name]["status"]["leader"] == leader.name
                assert members[name]["activity"]["id"] == name
            assert members[leader.name]["self"] is True
            assert body["leader"] == leader.name and body["node"] == leader.name
            term = leader.server.status().term
            assert body["term"] == term
            assert {"term": term, "leader": leader.name} == {
                k: body["timeline"][-1][k] for k in ("term", "leader")}

    run(main())


def test_a_follower_reports_the_leader_and_every_members_activity() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST) as cluster:
            leader = await cluster.wait_for_leader()
            follower = next(n for n in cluster.nodes if n is not leader)
            async with aiohttp.ClientSession() as session:
                async def agreed() -> Any:
                    _, body, _ = await call(session, "GET", follower.url + "/v1/cluster")
                    seen = body["timeline"] and body["timeline"][-1]["seen_by"]
                    return body if seen == ["n1", "n2", "n3"] else None

                body = await eventually(agreed, what="every member's timeline merged")
            assert body["leader"] == leader.name and body["node"] == follower.name
            assert all(m["health"] == "up" for m in body["members"])

    run(main())


def status(name: str, role: str, applied: int, leader: str | None = "n1") -> dict[str, Any]:
    return {"name": name, "status": {"id": name, "role": role, "term": 3, "leader": leader,
                                     "commit_index": applied, "applied_index": applied},
            "activity": None, "error": None}


def test_health_is_lagging_behind_the_commit_index_or_without_a_leader() -> None:
    answer = cluster_answer("c", "n1", [
        status("n1", "leader", 5000), status("n2", "follower", 5000 - LAG_ENTRIES),
        status("n3", "follower", 5000 - LAG_ENTRIES - 1), status("n4", "follower", 5000, None),
        {"name": "n5", "status": None, "activity": None, "error": "x", "health": "down"}])
    health = {m["name"]: m["health"] for m in answer["members"]}
    assert health == {"n1": "up", "n2": "up", "n3": "lagging", "n4": "lagging", "n5": "down"}
    assert answer["leader"] == "n1" and answer["commit_index"] == 5000


def test_timelines_merge_by_term_with_the_first_sighting_and_the_first_known_leader() -> None:
    merged = merge_timelines({
        "n1": [{"time": 10.0, "term": 0, "leader": None},
               {"time": 12.0, "term": 2, "leader": None},
               {"time": 12.5, "term": 2, "leader": "n3"}],
        "n3": [{"time": 11.5, "term": 2, "leader": None},
               {"time": 11.6, "term": 2, "leader": "n3"},
               {"time": 20.0, "term": 3, "leader": None}],
    })
    assert merged == [
        {"term": 2, "time": 11.5, "leader": "n3", "leader_time": 11.6, "seen_by": ["n1", "n3"]},
        {"term": 3, "time": 20.0, "leader": None, "leader_time": None, "seen_by": ["n3"]},
    ]


def test_the_page_is_served_under_a_csp_that_allows_only_its_own_inline_code() -> None:
    async def main() -> None:
        async with LocalCluster(1, config=FAST) as cluster:
            node = await cluster.wait_for_leader()
            async with aiohttp.ClientSession() as session:
                status, html, headers = await call(session, "GET", node.url + "/ui")
        assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
        assert html.decode() == PAGE
        csp = dict(part.strip().split(" ", 1) for part in
                   headers["Content-Security-Policy"].split(";"))
        assert csp["default-src"] == "'none'" and csp["connect-src"] == "'self'"
        assert csp["frame-ancestors"] == "'none'" and csp["base-uri"] == "'none'"
        script = re.search(r"<script>(.*?)</script>", PAGE, re.DOTALL)
        assert script is not None
        digest = base64.b64encode(hashlib.sha256(script.group(1).encode()).digest()).decode()
        assert csp["script-src"] == f"'sha256-{digest}'"
        assert "unsafe" not in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"

    run(main())


def test_a_changed_inline_script_is_not_allowed_by_the_csp_of_the_original() -> None:
    original = content_security_policy("<script>a()</script><style>b{}</style>")
    assert content_security_policy("<script>a();evil()</script><style>b{}</style>") != original
    assert "script-src 'none'" in content_security_policy("<p>no code</p>")


def test_the_page_refers_to_no_outside_host() -> None:
    assert not re.search(r"https?:|//[a-z0-9.-]+\.[a-z]{2,}", PAGE, re.IGNORECASE)
    # Every src/href is the page's own data: no file, host or path to load.
    for ref in re.findall(r"""(?:src|href|action)\s*=\s*["']([^"']*)""", PAGE):
        assert ref.startswith("data:"), ref
    assert "@import" not in PAGE and "url(" not in PAGE


def test_with_an_auth_file_the_page_needs_no_token_but_its_data_needs_the_read_role() -> None:
    async def main() -> None:
        async with SecureCluster(1, auth=AUTH, config=FAST) as cluster:
            node = await cluster.wait_for_leader()
            async with aiohttp.ClientSession() as session:
                status, _, _ = await call(session, "GET", node.url + "/ui")
                assert status == 200
                for path in ("/v1/cluster", "/v1/activity"):
                    status, body, headers = await call(session, "GET", node.url + path)
                    assert status == 401 and body["code"] == "unauthorized"
                    assert headers["WWW-Authenticate"] == "Bearer"
                    status, body, _ = await call(session, "GET", node.url + path,
                                                 headers=bearer(READ))
                    assert status == 200, body
                # The exemption is the page's alone, not its path prefix or other methods.
                status, _, _ = await call(session, "POST", node.url + "/ui")
                assert status == 401

    run(main())


def test_a_member_answering_garbage_or_refusing_is_unknown_never_trusted() -> None:
    answers: dict[str, tuple[int, str]] = {
        "n7": (200, '{"role": "follower", "term": "3"}'),  # a term that is no integer
        "n8": (401, '{"error": "no token"}'),
        "n9": (200, "<html>a proxy page</html>"),
        # Well-formed, but another cluster's node or another member: an impostor, not up, and
        # never the leader however high its term.
        "n5": (200, _status_of("zz", "another-cluster")),
        "n6": (200, _status_of("n2", OURS)),
    }

    async def main() -> None:
        async with LocalCluster(1, config=FAST) as cluster:
            node = await cluster.wait_for_leader()
            ours = node.api.cluster.cluster_id
            async for urls in fake_nodes([_answering(code, text.replace(OURS, ours))
                                          for code, text in answers.values()]):
                for name, url in zip(answers, urls, strict=True):
                    host, port = url.split(":")
                    node.api.cluster = replace(node.api.cluster, nodes=(
                        *node.api.cluster.nodes,
                        NodeSpec(name, int(name[1:]), Address(host, 1),
                                 Address(host, int(port)))))
                async with aiohttp.ClientSession() as session:
                    status, body, _ = await call(session, "GET", node.url + "/v1/cluster")
        assert status == 200
        members = {m["name"]: m for m in body["members"]}
        assert members["n1"]["health"] == "up"
        for name in answers:
            assert members[name]["health"] == "unknown" and members[name]["status"] is None
        assert "term is not a non-negative integer" in members["n7"]["error"]
        assert "401" in members["n8"]["error"]
        assert "answers as zz of cluster 'another-cluster'" in members["n5"]["error"]
        assert "answers as n2 of cluster 'raftly-local-" in members["n6"]["error"]
        assert members["n6"]["error"].endswith("not as n6 of " + repr(ours))
        assert body["leader"] == "n1" and body["term"] < 99

    run(main())


OURS = "<this cluster's id>"
"""In a fake member's answer: replaced by the id of the cluster that asks it."""


def _status_of(name: str, cluster_id: str) -> str:
    return json.dumps({"cluster_id": cluster_id, "id": name, "role": "leader", "term": 99,
                       "leader": name, "commit_index": 9, "applied_index": 9, "last_index": 9,
                       "snapshot_index": 0})


def test_concurrent_cluster_requests_share_one_fan_out_over_kept_alive_connections() -> None:
    # The client port of each call for the member's activity: only the page asks for it (the
    # node's own look-ups call /v1/status too).
    calls: list[int] = []
    ours = ""

    async def member(request: web.Request) -> web.Response:
        if request.path == "/v1/status":
            return web.Response(text=_status_of("n7", ours))
        calls.append(request.transport.get_extra_info("peername")[1])
        return web.json_response({"id": "n7", **ActivityLog().to_json(str)})

    async def main() -> None:
        async with LocalCluster(1, config=FAST) as cluster:
            nonlocal ours
            node = await cluster.wait_for_leader()
            ours = node.api.cluster.cluster_id
            async for urls in fake_nodes([member]):
                host, port = urls[0].split(":")
                node.api.cluster = replace(node.api.cluster, nodes=(
                    *node.api.cluster.nodes, NodeSpec("n7", 7, Address(host, 1),
                                                      Address(host, int(port)))))
                async with aiohttp.ClientSession() as session:
                    answers = await asyncio.gather(*(
                        call(session, "GET", node.url + "/v1/cluster") for _ in range(20)))
                    assert all(a[0] == 200 for a in answers)
                    # Twenty viewers at once: the member was asked once.
                    assert len(calls) == 1

                    async def asked_again() -> bool:
                        await call(session, "GET", node.url + "/v1/cluster")
                        return len(calls) >= 5

                    await eventually(asked_again, what="four more fan-outs", interval=0.1)
        # Later fan-outs reuse the first one's two connections (status and activity go at once,
        # each on either): no new connection per poll.
        assert len(set(calls)) <= 2, calls

    run(main())


def test_a_member_failing_tls_is_a_bad_answer_naming_tls_not_a_permission() -> None:
    async def main() -> None:
        async for urls in fake_nodes([_answering(200, "{}")]):
            context = ssl.create_default_context()
            async with aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(ssl=context)) as session:
                with pytest.raises(_BadAnswer, match=r"TLS failed: .*wrong version number"):
                    await _get(session, f"https://{urls[0]}/v1/status")

    run(main())

    run(main())


def _answering(status: int, text: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, text=text)
    return handler


def test_a_members_activity_of_the_wrong_shape_is_dropped_before_it_reaches_the_page() -> None:
    log = ActivityLog()
    log.sample(1, 1)
    good = log.to_json(str)
    assert _activity_ok(good)
    samples: dict[str, Any] = good["samples"]  # type: ignore[assignment]
    for bad in ({**samples, "ok": "3"}, {**samples, "ok": []}, {**samples, "time": [None]},
                {k: v for k, v in samples.items() if k != "p99_ms"}):
        assert not _activity_ok({**good, "samples": bad}), bad
    assert not _activity_ok({**good, "timeline": [{"time": 1.0, "term": "2"}]})

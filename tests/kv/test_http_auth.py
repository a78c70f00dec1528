"""Bearer tokens on the KV API of a real 3-node cluster (127.0.0.1): every role boundary, 401 for
a missing, unknown or malformed token (before a redirect, a route lookup or the body), 403 for a
role too low, an open API without an auth file, and no token ever in the log."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp
import pytest
from kv_helpers import ADMIN, AUTH, FAST, READ, WRITE, SecureCluster, bearer, call, followers, run

from raftly.kv.http import required_role
from raftly.kv.service import LocalCluster, RunningNode
from raftly.security.auth import Role


async def as_(s: aiohttp.ClientSession, token: str | None, method: str, url: str,
              body: object = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    assert data is None or isinstance(data, bytes)
    status, answer, _ = await call(s, method, url, data=data,
                                   headers=bearer(token) if token else None)
    return status, answer


def assert_forbidden(status: int, body: Any, needed: str) -> None:
    assert status == 403, body
    assert body["code"] == "forbidden" and f"needs {needed}" in body["error"], body


ROUTE_ROLES: dict[tuple[str, str], Role] = {
    ("GET", "/v1/kv"): Role.READ, ("HEAD", "/v1/kv"): Role.READ,
    ("GET", "/v1/kv/{key}"): Role.READ, ("HEAD", "/v1/kv/{key}"): Role.READ,
    ("GET", "/v1/status"): Role.READ, ("HEAD", "/v1/status"): Role.READ,
    ("GET", "/v1/members"): Role.READ, ("HEAD", "/v1/members"): Role.READ,
    ("PUT", "/v1/kv/{key}"): Role.WRITE, ("DELETE", "/v1/kv/{key}"): Role.WRITE,
    ("POST", "/v1/members"): Role.ADMIN, ("POST", "/v1/members/{name}/promote"): Role.ADMIN,
    ("DELETE", "/v1/members/{name}"): Role.ADMIN, ("POST", "/v1/leader/transfer"): Role.ADMIN,
    ("GET", "/v1/watch"): Role.READ, ("HEAD", "/v1/watch"): Role.READ,
    ("GET", "/v1/leases"): Role.READ, ("HEAD", "/v1/leases"): Role.READ,
    ("GET", "/v1/leases/{id}"): Role.READ, ("HEAD", "/v1/leases/{id}"): Role.READ,
    ("DELETE", "/v1/kv"): Role.WRITE, ("POST", "/v1/txn"): Role.WRITE,
    ("POST", "/v1/leases"): Role.WRITE, ("POST", "/v1/leases/{id}/keepalive"): Role.WRITE,
    ("DELETE", "/v1/leases/{id}"): Role.WRITE,
    ("GET", "/v1/snapshot"): Role.ADMIN,
    ("GET", "/metrics"): Role.READ, ("HEAD", "/metrics"): Role.READ,
    ("GET", "/ui"): Role.READ, ("HEAD", "/ui"): Role.READ,
    ("GET", "/v1/activity"): Role.READ, ("HEAD", "/v1/activity"): Role.READ,
    ("GET", "/v1/cluster"): Role.READ, ("HEAD", "/v1/cluster"): Role.READ,
}
"""Every route a node serves and the role it must need. A route added to the API and not here
fails the test below: whoever adds it decides its role here (a GET with side effects must not
slip through as a read)."""


def test_every_route_the_api_serves_needs_its_listed_role() -> None:
    async def main() -> None:
        async with LocalCluster(1, config=FAST) as cluster:
            node = await cluster.wait_for_leader()
            served = {(route.method, route.resource.canonical)
                      for route in node.runner.app.router.routes()
                      if route.resource is not None}
            assert served == set(ROUTE_ROLES), "classify every route in ROUTE_ROLES"
            for (method, route), role in ROUTE_ROLES.items():
                assert required_role(method, route) is role, (method, route)

    run(main())


@pytest.mark.parametrize(("method", "route", "role"), [
    # A changing route nobody listed needs admin; no route at all (404/405) runs no handler.
    ("PATCH", "/v1/members/{name}", Role.ADMIN), ("POST", "/v1/kv/{key}", Role.ADMIN),
    ("POST", None, Role.READ), ("DELETE", None, Role.READ),
])
def test_required_role_of_an_unlisted_route_or_none(method: str, route: str | None,
                                                   role: Role) -> None:
    assert required_role(method, route) is role


def test_read_token_reads_but_cannot_write_or_administer() -> None:
    async def main() -> None:
        async with SecureCluster(3, config=FAST, members=True, auth=AUTH) as cluster, \
                aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            await as_(s, WRITE, "PUT", leader.url + "/v1/kv/k", b"v")
            for node in cluster.nodes:  # a follower serves reads too
                assert await as_(s, READ, "GET", node.url + "/v1/kv/k") == (200, b"v")
                assert (await as_(s, READ, "GET", node.url + "/v1/kv?prefix=k"))[0] == 200
                assert (await as_(s, READ, "GET", node.url + "/v1/status"))[0] == 200
                assert (await as_(s, READ, "GET", node.url + "/v1/members"))[0] == 200
            assert (await as_(s, READ, "GET", leader.url + "/v1/kv/none"))[0] == 404
            for method, path in (("PUT", "/v1/kv/k"), ("PUT", "/v1/kv/k?expect=v"),
                                 ("DELETE", "/v1/kv/k")):
                assert_forbidden(*await as_(s, READ, method, leader.url + path, b"x"), "write")
            await _assert_no_admin(s, READ, leader)
            assert leader.kv.get("k") == b"v", "nothing refused was applied"

    run(main())


def test_the_coordination_routes_read_with_a_read_token_and_change_with_a_write_token(
        ) -> None:
    async def main() -> None:
        async with SecureCluster(3, config=FAST, members=True, auth=AUTH) as cluster, \
                aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            txn = {"success": [{"put": {"key": "t", "value": "1"}}]}
            changes = [("POST", "/v1/leases", {"ttl": 60}), ("POST", "/v1/txn", txn),
                       ("DELETE", "/v1/kv?prefix=t", None)]
            for method, path, body in changes:
                assert_forbidden(*await as_(s, READ, method, leader.url + path, body), "write")
            status, lease = await as_(s, WRITE, "POST", leader.url + "/v1/leases", {"ttl": 60})
            assert status == 200, lease
            for method, path in (("POST", f"/v1/leases/{lease['id']}/keepalive"),
                                 ("DELETE", f"/v1/leases/{lease['id']}")):
                assert_forbidden(*await as_(s, READ, method, leader.url + path), "write")
            assert len(leader.kv.leases()) == 1, "nothing refused was applied"
            for method, path in (("GET", "/v1/leases"), ("GET", f"/v1/leases/{lease['id']}")):
                assert (await as_(s, READ, method, leader.url + path))[0] == 200, path
            async with s.get(leader.url + "/v1/watch", headers=bearer(READ)) as resp:
                assert resp.status == 200
            assert (await as_(s, None, "GET", leader.url + "/v1/watch"))[0] == 401
            for method, path, body in changes:
                assert (await as_(s, WRITE, method, leader.url + path, body))[0] == 200, path
            for method, path in (("POST", f"/v1/leases/{lease['id']}/keepalive"),
                                 ("DELETE", f"/v1/leases/{lease['id']}")):
                assert (await as_(s, WRITE, method, leader.url + path))[0] == 200, path

    run(main())


def test_write_token_writes_but_cannot_change_members_or_move_the_lead() -> None:
    async def main() -> None:
        async with SecureCluster(3, config=FAST, members=True, auth=AUTH) as cluster, \
                aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            url = leader.url + "/v1/kv/k"
            assert (await as_(s, WRITE, "PUT", url, b"v1"))[0] == 200
            status, body = await as_(s, WRITE, "PUT", url + "?expect=v1", b"v2")
            assert status == 200 and body["swapped"] is True
            assert await as_(s, WRITE, "GET", url) == (200, b"v2")
            status, body = await as_(s, WRITE, "DELETE", url)
            assert status == 200 and body["deleted"] is True
            await _assert_no_admin(s, WRITE, leader)
            assert len(leader.server.conf.ids) == 3 and leader.server.is_leader

    run(main())


async def _assert_no_admin(s: aiohttp.ClientSession, token: str, leader: RunningNode) -> None:
    add = {"name": "n9", "raft": "127.0.0.1:1", "api": "127.0.0.1:2", "learner": True}
    for method, path, body in (("POST", "/v1/members", add),
                               ("POST", "/v1/members/n2/promote", None),
                               ("DELETE", "/v1/members/n2", None),
                               ("POST", "/v1/leader/transfer", {})):
        assert_forbidden(*await as_(s, token, method, leader.url + path, body), "admin")


def test_admin_token_changes_members_and_moves_the_lead() -> None:
    async def main() -> None:
        async with SecureCluster(3, config=FAST, members=True, auth=AUTH) as cluster, \
                aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            assert (await as_(s, ADMIN, "PUT", leader.url + "/v1/kv/k", b"v"))[0] == 200
            add = {"name": "n9", "raft": "127.0.0.1:1", "api": "127.0.0.1:2", "learner": True}
            status, body = await as_(s, ADMIN, "POST", leader.url + "/v1/members", add)
            assert status == 200 and body["member"]["role"] == "learner", body
            status, body = await as_(s, ADMIN, "DELETE", leader.url + "/v1/members/n9")
            assert status == 200, body
            target = followers(cluster, leader)[0]
            status, body = await as_(s, ADMIN, "POST", leader.url + "/v1/leader/transfer",
                                     {"to": target.name})
            assert (status, body) == (200, {"leader": target.name})

    run(main())


def test_missing_unknown_or_malformed_tokens_get_401_with_nothing_about_the_cluster() -> None:
    async def main() -> None:
        async with SecureCluster(3, config=FAST, auth=AUTH) as cluster, \
                aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            follower = followers(cluster, leader)[0]
            headers: list[dict[str, str] | None] = [
                None, {"Authorization": ""}, {"Authorization": "Bearer"},
                {"Authorization": f"Basic {ADMIN}"}, {"Authorization": ADMIN},
                bearer("unknown-token-0123456789"), bearer(ADMIN + "x")]
            for header in headers:
                for method, url in (("GET", leader.url + "/v1/status"),
                                    ("GET", follower.url + "/v1/kv/k"),
                                    # Not a redirect to the leader: that would name it.
                                    ("PUT", follower.url + "/v1/kv/k"),
                                    ("POST", follower.url + "/v1/leader/transfer"),
                                    # Unknown routes and bad queries need a token too.
                                    ("GET", leader.url + "/v1/nowhere"),
                                    ("GET", leader.url + "/v1/kv?bogus=1")):
                    status, body, answer = await call(s, method, url, data=b"x",
                                                      headers=header)
                    assert status == 401, (method, url, header, body)
                    assert answer["WWW-Authenticate"] == "Bearer"
                    assert set(body) == {"error", "code"} and body["code"] == "unauthorized"
            status, body, _ = await call(s, "GET", leader.url + "/v1/nowhere",
                                         headers=bearer(READ))
            assert status == 404 and "code" not in body
            assert leader.kv.get("k") is None

    run(main())


def test_the_token_is_checked_before_the_body_is_read() -> None:
    async def main() -> None:
        async with SecureCluster(1, config=FAST, auth=AUTH) as cluster:
            leader = await cluster.wait_for_leader()
            address = leader.api_address
            for token, status in ((None, b"401"), (READ, b"403")):
                reader, writer = await asyncio.open_connection(address.host, address.port)
                auth = f"Authorization: Bearer {token}\r\n" if token else ""
                # A body announced and never sent: only a check made before reading it answers.
                writer.write(f"PUT /v1/kv/k HTTP/1.1\r\nHost: x\r\n{auth}"
                             "Content-Length: 1000000\r\n\r\n".encode())
                await writer.drain()
                line = await asyncio.wait_for(reader.readline(), 5.0)
                assert line.split()[1] == status, line
                writer.close()

    run(main())


def test_without_an_auth_file_the_api_is_open() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST, members=True) as cluster, \
                aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            assert (await as_(s, None, "PUT", leader.url + "/v1/kv/k", b"v"))[0] == 200
            # A token is simply ignored.
            assert await as_(s, "whatever-token-123456", "GET", leader.url + "/v1/kv/k") == \
                (200, b"v")
            target = followers(cluster, leader)[0]
            status, _ = await as_(s, None, "POST", leader.url + "/v1/leader/transfer",
                                  {"to": target.name})
            assert status == 200

    run(main())


def test_tokens_never_reach_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def main() -> None:
        async with SecureCluster(3, config=FAST, auth=AUTH) as cluster, \
                aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            follower = followers(cluster, leader)[0]
            wrong = "wrong-token-9876543210"
            for token in (READ, WRITE, ADMIN, wrong):
                for node in (leader, follower):
                    await as_(s, token, "PUT", node.url + "/v1/kv/k", b"v")
                    await as_(s, token, "GET", node.url + "/v1/kv/k")
                    await as_(s, token, "POST", node.url + "/v1/members", {"name": "x"})
                    await as_(s, token, "GET", node.url + "/v1/nowhere")

    run(main())
    assert caplog.records, "the nodes logged nothing: the check would prove nothing"
    for token in (READ, WRITE, ADMIN, "wrong-token-9876543210"):
        assert token not in caplog.text

"""The membership routes of the KV HTTP API against in-process clusters on 127.0.0.1: adding a
node that catches up and is promoted, removing a follower or the leader, leadership transfer,
and every refusal (404, 409, 307, 504, 400)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from kv_helpers import FAST, call, followers, run
from polling import eventually

from raftly.kv.http import Limits
from raftly.kv.service import LocalCluster, RunningNode
from raftly.localproc import free_ports

QUICK = Limits(write_timeout=2.0)


async def post(s: aiohttp.ClientSession, url: str, body: object | None = None,
               method: str = "POST") -> tuple[int, Any, Any]:
    data = json.dumps(body).encode() if body is not None else None
    return await call(s, method, url, data=data,
                      headers={"Content-Type": "application/json"} if data else None)


async def write_keys(s: aiohttp.ClientSession, leader: RunningNode, count: int,
                     prefix: str = "k") -> None:
    for i in range(count):
        status, body, _ = await call(s, "PUT", f"{leader.url}/v1/kv/{prefix}{i}",
                                     data=str(i).encode())
        assert status == 200, body


def roles(body: dict[str, Any]) -> dict[str, str]:
    return {m["name"]: m["role"] for m in body["members"]}


def test_an_added_node_catches_up_is_promoted_and_every_node_lists_it() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST, members=True) as cluster, \
                aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            await write_keys(s, leader, 20)
            n4 = await cluster.add_node("n4")
            await eventually(lambda: n4.server.id in leader.server.conf.voters, 10.0,
                             "n4 promoted to voter")
            await eventually(lambda: n4.kv.get("k19") == b"19", 10.0, "n4 caught up")
            for node in cluster.nodes:
                status, body, _ = await call(s, "GET", node.url + "/v1/members")
                assert status == 200, body
                assert roles(body) == {"n1": "voter", "n2": "voter", "n3": "voter",
                                       "n4": "voter"}
                (entry,) = [m for m in body["members"] if m["name"] == "n4"]
                assert entry["api"] == str(n4.api_address) and entry["id"] == n4.server.id
                assert body["committed"] is True
            # n4 learned the others' addresses from the log: it redirects writes to the leader.
            if not n4.server.is_leader:
                status, _, headers = await call(s, "PUT", n4.url + "/v1/kv/x", data=b"1")
                assert status == 307 and headers["Location"].startswith(leader.url)

    run(main())


def test_a_learner_added_as_such_stays_a_learner_and_is_promoted_on_request() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST, members=True) as cluster, \
                aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            n4 = await cluster.add_node("n4", learner=True)
            await write_keys(s, leader, 5)
            await eventually(lambda: n4.kv.get("k4") == b"4", 10.0, "learner caught up")
            assert n4.server.id in leader.server.conf.learners
            status, body, _ = await call(s, "GET", leader.url + "/v1/status")
            assert [m["id"] for m in body["learners"]] == ["n4"]
            status, body, _ = await post(s, leader.url + "/v1/members/n4/promote")
            assert status == 200 and body["member"]["role"] == "voter", body
            assert n4.server.id in leader.server.conf.voters
            status, body, _ = await post(s, leader.url + "/v1/members/n4/promote")
            assert status == 409 and body["code"] == "not_learner", body

    run(main())


def test_adding_a_learner_again_is_the_same_request_until_it_took_entries() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST, members=True) as cluster, \
                aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            # Added ahead of its start (`raftly member add`, then `serve --join`): asking again
            # is answered with the same member, never a second one.
            ports = free_ports(2)
            body = {"name": "n5", "raft": f"127.0.0.1:{ports[0]}",
                    "api": f"127.0.0.1:{ports[1]}", "learner": True}
            status, first, _ = await post(s, leader.url + "/v1/members", body)
            assert status == 200, first
            status, again, _ = await post(s, leader.url + "/v1/members", body)
            assert status == 200 and again["member"]["id"] == first["member"]["id"], again
            # One that took entries may since have lost its disk: the leader's record of what
            # it holds would be wrong for a wiped node reusing the id. Refused.
            n4 = await cluster.add_node("n4", learner=True)
            await write_keys(s, leader, 3)
            await eventually(lambda: n4.kv.get("k2") == b"2", 10.0, "learner caught up")
            status, refused, _ = await post(s, leader.url + "/v1/members", {
                "name": "n4", "raft": str(n4.spec.raft), "api": str(n4.api_address),
                "learner": True})
            assert status == 409 and refused["code"] == "exists", refused

    run(main())


def test_removing_a_follower_stops_it_and_shrinks_the_configuration() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST, members=True) as cluster, \
                aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            gone = followers(cluster, leader)[0]
            status, body, _ = await post(s, f"{leader.url}/v1/members/{gone.name}",
                                         method="DELETE")
            assert status == 200, body
            assert gone.server.id not in leader.server.conf.ids
            await eventually(lambda: gone.server.removed, 10.0, "the removed node knows")
            await write_keys(s, leader, 3)  # two voters left: both needed, both there
            status, body, _ = await call(s, "GET", leader.url + "/v1/members")
            assert gone.name not in roles(body) and len(body["members"]) == 2

    run(main())


def test_a_removed_learner_learns_it_was_removed() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST, members=True) as cluster, \
                aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            n4 = await cluster.add_node("n4", learner=True)
            await write_keys(s, leader, 2)
            await eventually(lambda: n4.kv.get("k1") == b"1", 10.0, "learner caught up")
            status, body, _ = await post(s, f"{leader.url}/v1/members/n4", method="DELETE")
            assert status == 200, body
            # A learner never campaigns, so it still names the leader that fell silent.
            await eventually(lambda: n4.server.removed, 10.0, "the removed learner knows")

    run(main())


def test_removing_the_leader_hands_over_and_the_rest_keep_serving() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST, members=True) as cluster, \
                aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            await write_keys(s, leader, 3)
            status, body, _ = await post(s, f"{leader.url}/v1/members/{leader.name}",
                                         method="DELETE")
            assert status == 200, body
            await eventually(lambda: leader.server.removed, 10.0, "the old leader knows")
            await leader.close()
            new = await cluster.wait_for_leader()
            assert new is not leader
            await write_keys(s, new, 3, prefix="after")
            status, body, _ = await call(s, "GET", new.url + "/v1/members")
            assert leader.name not in roles(body)

    run(main())


def test_refusals_404_409_307_400() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST, members=True, limits=QUICK) as cluster, \
                aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            base = leader.url + "/v1/members"
            other = followers(cluster, leader)[0]
            assert (await post(s, base + "/nope/promote"))[0] == 404
            assert (await post(s, base + "/nope", method="DELETE"))[0] == 404
            status, body, _ = await post(s, base, {"name": other.name, "raft": "127.0.0.1:1",
                                                   "api": "127.0.0.1:2"})
            assert status == 409 and body["code"] == "exists", body
            status, body, _ = await post(s, base, {"name": "n9", "api": "127.0.0.1:2",
                                                   "raft": str(other.spec.raft)})
            assert status == 409 and body["code"] == "exists", body
            status, body, _ = await post(s, base + f"/{other.name}/promote")
            assert status == 409 and body["code"] == "not_learner", body
            for bad in ({"name": "n9"}, {"name": "bad name", "raft": "h:1", "api": "h:2"},
                        {"name": "client", "raft": "h:1", "api": "h:2"},
                        {"name": "n9", "raft": "h:1", "api": "h:2", "extra": 1}):
                assert (await post(s, base, bad))[0] == 400, bad
            assert (await call(s, "POST", base, data=b"{nope"))[0] == 400
            status, body, headers = await post(s, other.url + "/v1/members/n2",
                                               method="DELETE")
            assert status == 307 and headers["Location"] == base + "/n2"
            # A learner that fell behind is not promoted: the answer says by how much.
            n4 = await cluster.add_node("n4", learner=True)
            await n4.close()
            await write_keys(s, leader, 120)
            status, body, _ = await post(s, base + "/n4/promote")
            assert status == 409 and body["code"] == "behind" and "behind by" in body["error"]

    run(main())


def test_removing_the_last_voter_is_refused() -> None:
    async def main() -> None:
        async with LocalCluster(1, config=FAST, members=True) as cluster, \
                aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            await write_keys(s, leader, 1)
            status, body, _ = await post(s, f"{leader.url}/v1/members/n1", method="DELETE")
            assert status == 409 and body["code"] == "last_voter", body

    run(main())


def test_leader_transfer_to_a_named_or_any_voter_and_its_refusals() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST, members=True, limits=QUICK) as cluster, \
                aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            target = followers(cluster, leader)[0]
            status, body, _ = await post(s, leader.url + "/v1/leader/transfer",
                                         {"to": target.name})
            assert status == 200 and body["leader"] == target.name, body
            assert target.server.is_leader
            status, body, headers = await post(s, leader.url + "/v1/leader/transfer")
            assert status == 307 and headers["Location"].startswith(target.url)
            status, body, _ = await post(s, target.url + "/v1/leader/transfer")
            assert status == 200 and body["leader"] != target.name, body
            now = await cluster.wait_for_leader()
            assert (await post(s, now.url + "/v1/leader/transfer", {"to": "nope"}))[0] == 404
            n4 = await cluster.add_node("n4", learner=True)
            status, body, _ = await post(s, now.url + "/v1/leader/transfer", {"to": "n4"})
            assert status == 409, body
            # A voter that is down never takes the lead: 504 once the wait is over.
            down = followers(cluster, now)[0] if followers(cluster, now)[0] is not n4 \
                else followers(cluster, now)[1]
            await down.close()
            status, body, _ = await post(s, now.url + "/v1/leader/transfer", {"to": down.name})
            assert status == 504, body

    run(main(), timeout=60.0)

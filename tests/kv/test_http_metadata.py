"""Revisions and key metadata on the KV routes of a real 3-node cluster (127.0.0.1): write
answers carry the revision, GET shows the metadata (headers, or JSON), PUT attaches leases,
prefix reads page, prefix deletes delete in one revision."""

from __future__ import annotations

import json

import aiohttp
from kv_helpers import FAST, call, followers, run

from raftly.kv.service import LocalCluster


def test_writes_answer_their_revision_and_get_shows_the_keys_metadata() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST) as cluster, aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            url = leader.url + "/v1/kv/"
            status, first, _ = await call(s, "PUT", url + "k", data=b"one")
            assert status == 200 and first["revision"] == first["index"]
            status, second, _ = await call(s, "PUT", url + "k?expect=one", data=b"two")
            assert status == 200 and second["swapped"] and second["revision"] == second["index"]
            status, body, headers = await call(s, "GET", url + "k")
            assert (status, body) == (200, b"two")
            assert headers["X-Raftly-Revision"] == str(second["revision"])
            assert headers["X-Raftly-Mod-Revision"] == str(second["revision"])
            assert headers["X-Raftly-Create-Revision"] == str(first["revision"])
            assert headers["X-Raftly-Version"] == "2" and headers["X-Raftly-Lease"] == "0"
            status, body, _ = await call(s, "GET", url + "k?format=json")
            assert status == 200 and body == {
                "key": "k", "value": "two", "create_revision": first["revision"],
                "mod_revision": second["revision"], "version": 2, "lease": 0,
                "revision": second["revision"]}
            await call(s, "PUT", url + "bin", data=b"\xff")
            status, body, _ = await call(s, "GET", url + "bin?format=json")
            assert body["value_base64"] == "/w==" and "value" not in body
            # A failed CAS changes nothing: the revision stays.
            status, body, _ = await call(s, "PUT", url + "k?expect=nope", data=b"x")
            assert status == 412 and body["revision"] == body["index"] - 1
            status, body, _ = await call(s, "DELETE", url + "k")
            assert status == 200 and body["deleted"] and body["revision"] == body["index"]
            status, body, _ = await call(s, "DELETE", url + "k")
            assert status == 200 and not body["deleted"] and body["revision"] < body["index"]
            assert (await call(s, "GET", url + "k?format=xml"))[0] == 400

    run(main())


def test_put_with_lease_attaches_the_key_and_an_unknown_lease_is_404() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST) as cluster, aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            url = leader.url + "/v1/kv/"
            status, body, _ = await call(s, "PUT", url + "k?lease=77", data=b"v")
            assert status == 404 and body["code"] == "lease_not_found", body
            assert leader.kv.get("k") is None
            status, grant, _ = await call(s, "POST", leader.url + "/v1/leases",
                                          data=json.dumps({"ttl": 60}).encode())
            assert status == 200, grant
            status, body, _ = await call(s, "PUT", url + f"k?lease={grant['id']}", data=b"v")
            assert status == 200, body
            _, body, headers = await call(s, "GET", url + "k")
            assert headers["X-Raftly-Lease"] == str(grant["id"])
            for bad in ("0", "x", "-1"):
                status, body, _ = await call(s, "PUT", url + f"k?lease={bad}", data=b"v")
                assert status == 400 and body["parameter"] == "lease", bad
            status, body, _ = await call(s, "PUT", url + f"k?lease={grant['id']}&expect=v",
                                         data=b"w")
            assert status == 400 and body["parameter"] == "lease"
            # A follower redirects it like any write.
            follower = followers(cluster, leader)[0]
            status, _, headers = await call(s, "PUT", follower.url + "/v1/kv/k?lease=5",
                                            data=b"v")
            assert status == 307 and headers["Location"].endswith("/v1/kv/k?lease=5")

    run(main())


def test_prefix_reads_page_with_start_after_and_the_plain_list_stays_a_list() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST) as cluster, aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            for i in range(5):
                await call(s, "PUT", leader.url + f"/v1/kv/p/{i}", data=str(i).encode())
            await call(s, "PUT", leader.url + "/v1/kv/q", data=b"other")
            node = followers(cluster, leader)[0]  # any node serves reads
            status, body, _ = await call(s, "GET", node.url + "/v1/kv?prefix=p/&limit=2")
            assert status == 200 and body == [{"key": "p/0", "value": "0"},
                                              {"key": "p/1", "value": "1"}]
            keys: list[str] = []
            after = None
            while True:
                query = "prefix=p/&limit=2&page=1" + (f"&start_after={after}" if after else "")
                status, page, _ = await call(s, "GET", node.url + "/v1/kv?" + query)
                assert status == 200 and page["revision"] == leader.kv.revision
                keys += [kv["key"] for kv in page["kvs"]]
                assert all(kv["version"] == 1 and kv["lease"] == 0 for kv in page["kvs"])
                if not page["more"]:
                    break
                after = page["kvs"][-1]["key"]
            assert keys == [f"p/{i}" for i in range(5)]
            status, page, _ = await call(s, "GET", node.url + "/v1/kv?prefix=p/&format=json")
            assert status == 200 and len(page["kvs"]) == 5 and page["more"] is False
            assert (await call(s, "GET", node.url + "/v1/kv?page=2"))[0] == 400

    run(main())


def test_prefix_delete_deletes_every_key_under_it_in_one_revision() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST) as cluster, aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            for key in ("a/1", "a/2", "a/3", "b"):
                await call(s, "PUT", leader.url + f"/v1/kv/{key}", data=b"v")
            for query in ("", "?prefix=", "?all=yes", "?all=true&prefix=a"):
                status, body, _ = await call(s, "DELETE", leader.url + "/v1/kv" + query)
                assert status == 400, (query, body)
            status, body, _ = await call(s, "DELETE", leader.url + "/v1/kv?prefix=a/")
            assert status == 200 and body["deleted"] == 3 and body["revision"] == body["index"]
            assert [k for k, _ in leader.kv.list()] == ["b"]
            events = leader.kv.events_since(body["revision"])
            assert [e.key for e in events] == ["a/1", "a/2", "a/3"]
            status, body, _ = await call(s, "DELETE", leader.url + "/v1/kv?prefix=zzz")
            assert status == 200 and body["deleted"] == 0
            status, body, _ = await call(s, "DELETE", leader.url + "/v1/kv?all=true")
            assert status == 200 and body["deleted"] == 1 and len(leader.kv) == 0
            follower = followers(cluster, leader)[0]
            status, _, headers = await call(s, "DELETE", follower.url + "/v1/kv?prefix=a")
            assert status == 307 and headers["Location"].endswith("/v1/kv?prefix=a")

    run(main())


def test_new_writes_are_exactly_once_under_session_headers() -> None:
    async def main() -> None:
        async with LocalCluster(3, config=FAST) as cluster, aiohttp.ClientSession() as s:
            leader = await cluster.wait_for_leader()
            session = {"X-Raftly-Client": "c1"}
            writes = [("POST", "/v1/leases", {"ttl": 60}),
                      ("POST", "/v1/txn", {"success": [{"put": {"key": "t", "value": "1"}}]}),
                      ("DELETE", "/v1/kv?prefix=t", None)]
            for seq, (method, path, payload) in enumerate(writes, start=1):
                headers = {**session, "X-Raftly-Seq": str(seq)}
                data = json.dumps(payload).encode() if payload is not None else None
                status, first, _ = await call(s, method, leader.url + path, data=data,
                                              headers=headers)
                assert status == 200, first
                status, again, _ = await call(s, method, leader.url + path, data=data,
                                              headers={**headers, "X-Raftly-Retry": "1"})
                assert (status, again) == (200, first), path
            assert len(leader.kv.leases()) == 1, "the retried grant was not applied twice"
            status, body, _ = await call(s, "POST", leader.url + "/v1/txn", data=b"{}",
                                         headers={"X-Raftly-Client": "c1"})
            assert status == 400 and "go together" in body["error"]

    run(main())

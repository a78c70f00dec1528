"""The test-only broken read path (RAFTLY_UNSAFE_STALE_READS): off unless set, and when set,
single-key GETs skip ReadIndex while lists and writes keep theirs."""

from __future__ import annotations

import aiohttp
import pytest
from kv_helpers import FAST, call, run
from polling import eventually

from raftly.kv.http import KVApi, Limits
from raftly.kv.service import LocalCluster
from raftly.kv.unsafe_reads import UNSAFE_STALE_READS_ENV, StaleReadsKVApi, node_api_class


def test_nodes_run_the_normal_api_unless_the_variable_is_1(monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    monkeypatch.delenv(UNSAFE_STALE_READS_ENV, raising=False)
    assert node_api_class() is KVApi
    monkeypatch.setenv(UNSAFE_STALE_READS_ENV, "0")
    assert node_api_class() is KVApi
    monkeypatch.setenv(UNSAFE_STALE_READS_ENV, "1")
    assert node_api_class() is StaleReadsKVApi


def test_unsafe_gets_answer_stale_on_a_cut_off_node(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(UNSAFE_STALE_READS_ENV, "1")

    async def main() -> None:
        limits = Limits(write_timeout=0.3, read_timeout=0.3)
        async with LocalCluster(3, config=FAST, transport="memory", limits=limits) as cluster, \
                aiohttp.ClientSession() as s:
            assert cluster.network is not None
            assert all(isinstance(n.api, StaleReadsKVApi) for n in cluster.nodes)
            leader = await cluster.wait_for_leader()
            assert (await call(s, "PUT", leader.url + "/v1/kv/k", data=b"v"))[0] == 200
            cluster.network.disconnect(leader.server.id)

            async def no_leader() -> bool:
                status = (await call(s, "PUT", leader.url + "/v1/kv/k", data=b"x"))[0]
                return status == 503 and leader.server.leader is None

            await eventually(no_leader, what="503 on the cut-off node")
            # Without ReadIndex the cut-off node answers from its own (possibly old) copy...
            assert (await call(s, "GET", leader.url + "/v1/kv/k"))[:2] == (200, b"v")
            # ...while a list still waits for a read index it cannot get.
            assert (await call(s, "GET", leader.url + "/v1/kv?prefix=k"))[0] == 503
            cluster.network.connect(leader.server.id)
            await cluster.wait_for_leader()

    run(main())

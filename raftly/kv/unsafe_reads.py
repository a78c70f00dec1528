"""TEST-ONLY: a deliberately broken read path, so ``raftly check`` can prove it catches bugs.

With ``RAFTLY_UNSAFE_STALE_READS=1`` in a node's environment when it starts, its single-key
GETs answer from local state without ReadIndex: a deposed or partitioned node then serves stale
reads, which a correct linearizability checker must report (``tests/check/test_check_runs.py``).
Lists and writes are unchanged. Never set the variable anywhere else.

The normal API (``raftly.kv.http``) knows nothing of this: ``node_api_class`` is asked, once per
node start, which API class the node runs.
"""

from __future__ import annotations

import logging
import os

from aiohttp import web

from raftly.kv.cluster_file import ClusterSpec, NodeSpec
from raftly.kv.http import KVApi, Limits
from raftly.kv.metrics import NodeMetrics
from raftly.security.auth import Authorizer
from raftly.server.server import RaftServer

__all__ = ["UNSAFE_STALE_READS_ENV", "StaleReadsKVApi", "node_api_class"]

logger = logging.getLogger("raftly.kv.unsafe_reads")

UNSAFE_STALE_READS_ENV = "RAFTLY_UNSAFE_STALE_READS"
"""Set to ``1`` to start nodes with ``StaleReadsKVApi`` (test-only, default off)."""


class StaleReadsKVApi(KVApi):
    """``KVApi`` whose linearizable GETs skip ReadIndex: wrong on purpose."""

    def __init__(self, server: RaftServer, cluster: ClusterSpec, node: NodeSpec,
                 limits: Limits | None = None, *, auth: Authorizer | None = None,
                 tls: bool = False, metrics: NodeMetrics | None = None) -> None:
        super().__init__(server, cluster, node, limits, auth=auth, tls=tls, metrics=metrics)
        logger.warning("%s=1: serving reads WITHOUT ReadIndex (test-only broken build)",
                       UNSAFE_STALE_READS_ENV)

    async def _key_read_barrier(self, request: web.Request) -> web.Response | None:
        return None


def node_api_class() -> type[KVApi]:
    """The API a node starting now runs: ``KVApi``, unless the test-only variable is set."""
    if os.environ.get(UNSAFE_STALE_READS_ENV) == "1":
        return StaleReadsKVApi
    return KVApi

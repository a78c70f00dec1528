"""Joining a running cluster, and where a node's own addresses are kept once it has joined.

``request_join`` asks a cluster, through any member's API, to add this node as a learner
(``POST /v1/members``, following a follower's redirect to the leader) and returns the cluster
id and the raft id the leader gave it (over https with the node's certificate, and with its token,
as ``NodeCalls`` says). ``stored_conf`` reads the configuration a data dir's
storage holds, so that ``raftly serve --data-dir DIR`` alone can restart a node from it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from raftly.core.types import ConfState, EntryType
from raftly.kv.client import request_json
from raftly.kv.cluster_file import Address, ClusterFileError, NodeSpec, parse_address
from raftly.kv.node_calls import NodeCalls
from raftly.kv.protocol import MEMBERS_PATH
from raftly.storage.base import Storage

logger = logging.getLogger("raftly.kv.join")

TRANSIENT_CODES = frozenset({"in_flight", "not_ready"})
"""Refusals that go away on their own (a change still committing, a leader just elected)."""
MAX_REDIRECTS = 5


class JoinError(Exception):
    """The cluster could not be reached, or refused to add this node (the message says why)."""


@dataclass(frozen=True, slots=True)
class Joined:
    cluster_id: str
    raft_id: int
    peers: tuple[NodeSpec, ...] = ()
    """The members as the leader told them (the joining node needs their addresses to reply
    before its log holds a configuration)."""


async def request_join(endpoints: Sequence[str], name: str, raft: Address, api: Address, *,
                       learner: bool = False, timeout: float = 30.0,
                       calls: NodeCalls | None = None) -> Joined:
    """Have the cluster at ``endpoints`` (``host:port`` or URLs) add this node as a learner.

    Retries unreachable nodes, "no leader" and transient refusals until ``timeout``; raises
    JoinError at once on a definite refusal (name or address in use, bad input). A learner
    already in the configuration under this very name and both addresses that never took an
    entry is this node, added before (``raftly member add``, or a join whose answer was lost):
    the leader answers as if it had just added it. One that took entries is refused: it may be
    this node after a lost disk, and must be removed and join as a new member.

    ``calls`` (default: plain http, no token) says the scheme of endpoints given without one,
    and the certificate and token to show; a cluster that wants an admin token and gets none,
    an unknown one or a lower one refuses at once, with the message naming ``--token``.
    """
    calls = calls or NodeCalls()
    body = {"name": name, "raft": str(raft), "api": str(api), "learner": learner}
    urls = [calls.endpoint_url(e) for e in endpoints]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last = "no answer"
    async with calls.session(10.0) as session:
        while True:
            for url in urls:
                try:
                    status, answer = await request_json(
                        session, "POST", url.rstrip("/") + MEMBERS_PATH, body,
                        max_redirects=MAX_REDIRECTS)
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    last = f"{url}: {exc or type(exc).__name__}"
                    continue
                if status == 200:
                    return _joined(answer, answer["member"], answer)
                if status in (401, 403):
                    raise JoinError(_token_problem(status, calls.token, url))
                code, error = answer.get("code"), answer.get("error", f"HTTP {status}")
                if status >= 500 or code in TRANSIENT_CODES:
                    last = f"{url}: {error}"
                    continue
                raise JoinError(f"the cluster refused to add {name}: {error}")
            if loop.time() > deadline:
                raise JoinError(f"could not join the cluster at {', '.join(endpoints)} within "
                                f"{timeout:g}s (last: {last})")
            await asyncio.sleep(0.5)


def _token_problem(status: int, token: str | None, url: str) -> str:
    if token is None:
        return (f"{url} wants a token: joining needs an admin token (--token or "
                "$RAFTLY_TOKEN)")
    if status == 401:
        return f"{url} does not know the token given (--token or $RAFTLY_TOKEN)"
    return f"the token given may not add members at {url}: joining needs an admin token"


def _joined(answer: dict[str, Any], member: dict[str, Any], status: dict[str, Any]) -> Joined:
    """What a join answer (or a members list and a status) says; ValueError if malformed."""
    try:
        peers = tuple(NodeSpec(str(m["name"]), int(m["id"]), parse_address(m["raft"], "raft"),
                               parse_address(m["api"], "api")) for m in answer["members"])
        return Joined(str(status["cluster_id"]), int(member["id"]), peers)
    except (KeyError, TypeError, ClusterFileError) as exc:
        raise ValueError(f"malformed answer from the cluster: {exc}") from None


def stored_conf(storage: Storage) -> ConfState:
    """The newest configuration in ``storage`` (its log, else its log start's)."""
    state = storage.load()
    for entry in reversed(state.entries):
        if entry.type is EntryType.CONFIG:
            return ConfState.decode(entry.data)
    return state.snapshot.conf


__all__ = ["JoinError", "Joined", "request_join", "stored_conf"]

"""How a node calls the other members' APIs, and whose certificate a peer must show.

A node calls other nodes' APIs itself: to join, to look up a member's addresses, to ask whether it
was removed, to check for a lost disk. ``NodeCalls`` says how: https with the node's own
certificate when it serves TLS (a cluster is all TLS or all plain), and ``Authorization: Bearer``
with the node's token when it has one (``serve --token``): for joining always, for its routine
look-ups only without TLS (with TLS its certificate gets it the read role, see raftly.kv.http).
``PeerNames`` is the transport's ``peer_name``: the name each node id goes by, which its
certificate must show.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from dataclasses import dataclass

import aiohttp

from raftly.core.types import ConfState, Member
from raftly.kv.cluster_file import Address, ClusterSpec
from raftly.security.tls import TlsFiles, client_context

__all__ = ["NodeCalls", "PeerNames"]


@dataclass(frozen=True, slots=True)
class NodeCalls:
    """The scheme, TLS context and token of a node's calls to other members' APIs."""

    ssl: ssl.SSLContext | None = None
    token: str | None = None

    @classmethod
    def of(cls, tls: TlsFiles | None, token: str | None = None) -> NodeCalls:
        """A node with ``tls`` shows its certificate and trusts only the cluster CA."""
        context = client_context(tls.ca, tls.cert, tls.key) if tls is not None else None
        return cls(context, token or None)

    @classmethod
    def routine(cls, tls: TlsFiles | None, token: str | None = None) -> NodeCalls:
        """For a running node's own look-ups: with TLS its certificate is its (read) pass, so
        its token, which may be an admin one kept for joining, is never sent with them (they
        go to addresses other nodes hand out)."""
        return cls.of(tls, token if tls is None else None)

    @property
    def tls(self) -> bool:
        return self.ssl is not None

    def url(self, address: Address) -> str:
        """The base URL of a member's API address."""
        return address.base_url(self.tls)

    def endpoint_url(self, endpoint: str) -> str:
        """``host:port`` or a URL given by a user, as a base URL."""
        scheme = "https" if self.tls else "http"
        return endpoint if "://" in endpoint else f"{scheme}://{endpoint}"

    def session(self, timeout: float) -> aiohttp.ClientSession:
        """A session for a batch of calls, each bounded by ``timeout`` seconds."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        connector = aiohttp.TCPConnector(ssl=self.ssl) if self.ssl is not None else None
        return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout),
                                     headers=headers, connector=connector)


class PeerNames:
    """Node id -> name, which the node's certificate must show (the transport's ``peer_name``).

    Starts with the cluster's nodes; learns the members of every configuration the node uses and
    of every members list it looks up. Names are added, never dropped, as the transport's
    addresses are: ids are never reused, and a member being removed must still be heard until
    its removal commits.
    """

    __slots__ = ("_names",)

    def __init__(self, cluster: ClusterSpec) -> None:
        self._names = {n.id: n.name for n in cluster.nodes}

    def __call__(self, node_id: int) -> str | None:
        return self._names.get(node_id)

    def learn(self, members: Iterable[Member]) -> None:
        for member in members:
            if member.name:
                self._names[member.id] = member.name

    def learn_conf(self, conf: ConfState) -> None:
        """For ``RaftServer.on_conf_change``."""
        self.learn(conf.members)

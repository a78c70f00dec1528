"""The membership routes of the HTTP API: list, add, promote and remove members, move the lead.

``GET /v1/members`` is served by any node (after a ReadIndex, like a linearizable read); the
changes are made by the leader only, so a follower answers them ``307`` to the leader. A change
is answered once its configuration entry commits. The reference is docs/http-api.md.

Also the one place that turns a configuration's ``Member`` records into the ``NodeSpec`` view
the rest of the API uses for names and redirects (``cluster_view``): the log, not the cluster
file, says who the members are and where they listen.
"""

from __future__ import annotations

import secrets
from dataclasses import replace
from typing import TYPE_CHECKING

from aiohttp import web

from raftly.core.errors import NotLeader, ProposalDropped
from raftly.core.types import ConfChange, ConfChangeType, ConfState, Member
from raftly.kv.cluster_file import (
    MAX_NODE_ID,
    Address,
    ClusterFileError,
    ClusterSpec,
    NodeSpec,
    parse_address,
    usable_name,
)
from raftly.kv.http_common import Reply as _Reply
from raftly.kv.protocol import MEMBERS_PATH, TRANSFER_PATH
from raftly.server.server import (
    MembershipError,
    OutcomeUnknown,
    ServerStopped,
    TransferTimedOut,
)

if TYPE_CHECKING:
    from raftly.kv.http import KVApi

MAX_BODY = 64 * 1024
NOT_FOUND_CODES = frozenset({"unknown"})
"""Refusals that mean "no such member" (404); every other refusal is a conflict (409)."""


def cluster_view(cluster: ClusterSpec, conf: ConfState) -> ClusterSpec:
    """``cluster`` with its nodes replaced by ``conf``'s members, when the configuration has them.

    A member whose addresses do not parse (never written by raftly) keeps the cluster file's
    entry if it has one; the configuration's names and addresses win otherwise.
    """
    if not conf.members:
        return cluster
    nodes = []
    for member in conf.members:
        try:
            nodes.append(NodeSpec(member.name or str(member.id), member.id,
                                  parse_address(member.raft, "raft"),
                                  parse_address(member.api, "api")))
        except ClusterFileError:
            known = cluster.by_id(member.id)
            if known is not None:
                nodes.append(known)
    return replace(cluster, nodes=tuple(sorted(nodes, key=lambda n: n.name)))


def bootstrap_conf(cluster: ClusterSpec) -> ConfState:
    """The first configuration of ``cluster``: every node a voter, with its name and addresses.

    Without addresses (a port 0, to be chosen when the node binds) the members are left out.
    """
    voters = frozenset(cluster.ids)
    if any(n.raft.port == 0 or n.api.port == 0 for n in cluster.nodes):
        return ConfState(voters)
    members = tuple(sorted((member_of(n) for n in cluster.nodes), key=lambda m: m.id))
    return ConfState(voters, frozenset(), members)


def member_of(spec: NodeSpec, *, promote: bool = True) -> Member:
    return Member(spec.id, spec.name, str(spec.raft), str(spec.api), promote)


def member_json(member: Member, conf: ConfState) -> dict[str, object]:
    return {"name": member.name, "id": member.id, "raft": member.raft, "api": member.api,
            "role": "voter" if member.id in conf.voters else "learner"}


class MembersApi:
    """The membership handlers of one node's ``KVApi`` (whose helpers they answer through)."""

    def __init__(self, api: KVApi) -> None:
        self.api = api

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(MEMBERS_PATH, self.list)
        app.router.add_post(MEMBERS_PATH, self.add)
        app.router.add_post(MEMBERS_PATH + "/{name}/promote", self.promote)
        app.router.add_delete(MEMBERS_PATH + "/{name}", self.remove)
        app.router.add_post(TRANSFER_PATH, self.transfer)

    @property
    def _conf(self) -> ConfState:
        return self.api.server.conf

    async def list(self, request: web.Request) -> web.Response:
        failed = await self.api._linearizable(request)
        if failed is not None:
            return failed
        conf = self._conf
        members = [member_json(m, conf) for m in conf.members]
        if not members:  # no addresses in the log (an in-process cluster): ids and the file's
            members = [self._json_of_id(i, conf) for i in sorted(conf.ids)]
        node = self.api.server.node
        if node.is_leader:
            # How far the leader knows each member's log to match its own: a member it has
            # entries from must never come back with an empty data dir (see serve).
            for entry in members:
                node_id = entry["id"]
                progress = node.progress(node_id) if isinstance(node_id, int) else None
                if progress is not None:
                    entry["match"] = progress.match
        # The index this view is current as of, and whether it is committed: Raft uses a
        # configuration as soon as it is in the log, and a new leader may still undo it.
        index = self.api.server.status().commit_index
        return self.api._json(200, {"members": members, "index": index,
                                    "committed": self.api.server.node.conf_committed})

    def _json_of_id(self, node_id: int, conf: ConfState) -> dict[str, object]:
        spec = self.api.cluster.by_id(node_id)
        return {"name": spec.name if spec else str(node_id), "id": node_id,
                "raft": str(spec.raft) if spec else "", "api": str(spec.api) if spec else "",
                "role": "voter" if node_id in conf.voters else "learner"}

    async def add(self, request: web.Request) -> web.Response:
        if not self.api.server.is_leader:
            return self.api._not_leader(request, self.api.server.leader)
        body = await self.api.json_body(request, MAX_BODY)
        unknown = set(body) - {"name", "raft", "api", "learner", "id"}
        if unknown:
            return self.api._error(400, f"unknown fields {sorted(unknown)}")
        name = body.get("name")
        if not isinstance(name, str) or not usable_name(name):
            return self.api._error(400, "name: 1-63 letters, digits, '_', '.', '-' (not 'client',"
                                        " the name of the client certificate)")
        addresses: dict[str, Address] = {}
        for field in ("raft", "api"):
            try:
                addresses[field] = parse_address(body.get(field), field)
            except ClusterFileError as exc:
                return self.api._error(400, str(exc))
            if addresses[field].port == 0:
                return self.api._error(400, f"{field}: give a real port, not 0")
        learner = body.get("learner", False)
        if not isinstance(learner, bool):
            return self.api._error(400, "learner must be true or false")
        node_id = body.get("id")
        if node_id is None:
            node_id = self._fresh_id()
        elif type(node_id) is not int or not 1 <= node_id <= MAX_NODE_ID:
            return self.api._error(400, f"id must be an integer from 1 to {MAX_NODE_ID}")
        member = Member(node_id, name, str(addresses["raft"]), str(addresses["api"]),
                        promote=not learner)
        added = self._added_untouched(member)
        if added is not None:
            return self._changed(self.api.server.status().commit_index, added)
        return await self._change(request, ConfChange(ConfChangeType.ADD_LEARNER, member),
                                  member)

    def _added_untouched(self, member: Member) -> Member | None:
        """The learner of this name and addresses, if it was added before (``raftly member
        add``, or a join whose answer was lost) and has never taken an entry from us: adding it
        again is then the same request. One that took entries may have lost its disk, and the
        leader's record of what it holds would be a lie: it must be removed and join anew."""
        conf = self._conf
        known = conf.by_name(member.name)
        if (known is None or known.id not in conf.learners or known.raft != member.raft
                or known.api != member.api):
            return None
        progress = self.api.server.node.progress(known.id)
        return known if progress is not None and progress.match == 0 else None

    def _fresh_id(self) -> int:
        # Random rather than a hash of the name: a re-added name must be a new node to Raft,
        # never the old id whose votes a wiped disk forgot.
        used = self._conf.ids
        while True:
            node_id = 1 + secrets.randbelow(MAX_NODE_ID)
            if node_id not in used:
                return node_id

    async def promote(self, request: web.Request) -> web.Response:
        if not self.api.server.is_leader:
            return self.api._not_leader(request, self.api.server.leader)
        member = self._member(request.match_info["name"])
        return await self._change(request, ConfChange(ConfChangeType.PROMOTE, member), member)

    async def remove(self, request: web.Request) -> web.Response:
        if not self.api.server.is_leader:
            return self.api._not_leader(request, self.api.server.leader)
        member = self._member(request.match_info["name"])
        return await self._change(request, ConfChange(ConfChangeType.REMOVE, member), member)

    async def transfer(self, request: web.Request) -> web.Response:
        server = self.api.server
        if not server.is_leader:
            return self.api._not_leader(request, server.leader)
        body = await self.api.json_body(request, MAX_BODY) if request.body_exists else {}
        unknown = set(body) - {"to"}
        if unknown:
            return self.api._error(400, f"unknown fields {sorted(unknown)}")
        conf = self._conf
        to = body.get("to")
        if to is None:
            others = sorted(conf.voters - {server.id})
            if not others:
                return self.api._error(409, "no other voter to hand leadership to")
            # The core catches the target up before handing over: any voter will do.
            target = others[0]
        elif not isinstance(to, str):
            return self.api._error(400, "to must be a member's name")
        else:
            target = self._member(to).id
            if target not in conf.voters:
                return self.api._error(409, f"{to} is a learner; only a voter can lead")
        try:
            await server.transfer_leadership_and_wait(target,
                                                      timeout=self.api.limits.write_timeout)
        except NotLeader as exc:
            return self.api._not_leader(request, exc.leader)
        except TransferTimedOut as exc:
            return self.api._error(504, str(exc))
        return self.api._json(200, {"leader": self.api._name(target)})

    # -- helpers --------------------------------------------------------------------------------

    def _member(self, name: str) -> Member:
        conf = self._conf
        member = conf.by_name(name)
        if member is None and not conf.members:
            spec = next((n for n in self.api.cluster.nodes if n.name == name), None)
            if spec is not None and spec.id in conf.ids:
                member = member_of(spec)
        if member is None:
            raise _Reply(404, f"no member named {name!r}")
        return member

    async def _change(self, request: web.Request, change: ConfChange, member: Member
                      ) -> web.Response:
        try:
            index = await self.api.server.change_membership(
                change, timeout=self.api.limits.write_timeout)
        except NotLeader as exc:
            return self.api._not_leader(request, exc.leader)
        except MembershipError as exc:
            status = 404 if exc.code in NOT_FOUND_CODES else 409
            return self.api._error(status, str(exc), code=exc.code)
        except ProposalDropped as exc:
            return self.api._error(503, f"{exc}; not applied, safe to retry",
                                   {"Retry-After": "1"})
        except (OutcomeUnknown, ServerStopped) as exc:
            return self.api._error(504, f"outcome unknown: {exc}")
        return self._changed(index, member)

    def _changed(self, index: int, member: Member) -> web.Response:
        conf = self._conf
        now = conf.member(member.id) or member
        # The cluster id and the members let a joining node (``raftly serve --join``) answer
        # its peers before the log has told it where they are.
        return self.api._json(200, {"index": index, "member": member_json(now, conf),
                                    "cluster_id": self.api.cluster.cluster_id,
                                    "members": [member_json(m, conf) for m in conf.members]})


__all__ = ["MembersApi", "bootstrap_conf", "cluster_view", "member_json", "member_of"]

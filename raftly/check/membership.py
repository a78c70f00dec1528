"""The membership nemesis's hands: add a node to, or remove one from, a running checked cluster.

A new node is exactly ``raftly serve --join`` with fresh ports and a fresh data dir, started by
the run's ``ProcessCluster`` (so kills, pauses and the final stop reach it too); it counts as a
member once the cluster lists it as a voter. A removal goes through the API
(``DELETE /v1/members/NAME``, to any member: followers redirect to the leader), and the removed
process must then exit 0 on its own. The client pool learns each new member's API and stops
using a member before it is removed.

A node that does not join and get promoted, or does not exit after its removal, within the
bounds is a ``MembershipProblem`` (with its last log lines): the run fails.

Limitation: new nodes are not behind the fault-injecting proxies. The proxies are one port per
directed link, named in each node's own cluster file, while a change's configuration entry
carries one address per member for everyone (the leader's view): so the new nodes talk
directly, and once a change has committed the bootstrap members dial one another at the
addresses of the view of the leader that made it. Partitions still cut the proxied links, but no
longer exactly the node pairs they name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import time
from typing import Any

import aiohttp

from raftly.check.clients import ClientPool
from raftly.check.nemesis import MembershipProblem, Target
from raftly.kv.client import request_json
from raftly.kv.cluster_file import Address, NodeSpec
from raftly.kv.protocol import MEMBERS_PATH, TRANSFER_PATH
from raftly.localcluster import ProcessCluster
from raftly.localproc import free_ports

logger = logging.getLogger("raftly.check.membership")

_TRANSIENT = frozenset({"in_flight", "not_ready"})
_REDIRECTS = 5


class ClusterMembers(Target):
    """The membership half of the runner's nemesis target: members, adds, removals, transfers.

    ``join_timeout`` bounds a join until promotion, ``change_timeout`` an API change (a removal
    or a transfer) and ``exit_timeout`` a removed node's exit.
    """

    def __init__(self, cluster: ProcessCluster, pool: ClientPool, *, host: str = "127.0.0.1",
                 join_timeout: float = 45.0, change_timeout: float = 30.0,
                 exit_timeout: float = 20.0) -> None:
        self.cluster = cluster
        self.pool = pool
        self.host = host
        self.join_timeout = join_timeout
        self.change_timeout = change_timeout
        self.exit_timeout = exit_timeout
        self.current = list(cluster.names)
        self._added = 0

    def members(self) -> list[str]:
        return list(self.current)

    def _urls(self, exclude: str | None = None) -> list[str]:
        return [self.cluster.url(n) for n in self.current
                if n != exclude and n in self.cluster.nodes]

    async def add_member(self) -> str:
        self._added += 1
        name = f"j{self._added}"  # never a bootstrap name (n1..nN)
        raft_port, api_port = await asyncio.to_thread(free_ports, 2, self.host)
        spec = NodeSpec(name, 0, Address(self.host, raft_port), Address(self.host, api_port))
        node = self.cluster.add_node(spec, [str(self.cluster.nodes[n].spec.api)
                                            for n in self.current])
        await asyncio.to_thread(self.cluster.start, [name])
        deadline = time.monotonic() + self.join_timeout
        last = "no answer"
        while True:
            if not node.running:
                code = node.proc.returncode if node.proc is not None else None
                await self._give_up(name, f"exited with status {code} while joining")
            role, last = await self._role(name)
            if role == "voter":
                break
            if time.monotonic() > deadline:
                await self._give_up(name, f"not a voter {self.join_timeout:g}s after it "
                                          f"started ({last})")
            await asyncio.sleep(0.2)
        self.current.append(name)
        self.pool.add_node(name, self.cluster.url(name))
        logger.info("%s joined: members %s", name, self.current)
        return name

    async def _role(self, name: str) -> tuple[str | None, str]:
        """``name``'s role in the configuration a member reports (``absent`` when it is not a
        member, None when no member answered), and what was seen."""
        status, answer = await self.call("GET", MEMBERS_PATH, timeout=2.0)
        if status != 200:
            return None, f"members list: {answer.get('error', status)}"
        for m in answer.get("members", []):
            if m.get("name") == name:
                return m.get("role"), f"{name} is a {m.get('role')}"
        return "absent", f"{name} not a member"

    async def _give_up(self, name: str, why: str) -> None:
        """A node that did not join: stop it, take it out of the configuration if it got in
        (best effort: a learner left behind counts for nothing), and raise the problem."""
        node = self.cluster.nodes[name]
        await asyncio.to_thread(self.cluster.kill, name)
        tail = node.log_tail()
        with contextlib.suppress(MembershipProblem):
            await self._delete(name, deadline=time.monotonic() + 10.0)
        self.cluster.forget(name)
        raise MembershipProblem(f"node {name} failed to join: {why}"
                                + (f"; last log lines:\n{tail}" if tail else ""))

    async def remove_member(self, name: str) -> None:
        node = self.cluster.nodes[name]
        self.pool.remove_node(name)
        try:
            await self._delete(name, deadline=time.monotonic() + self.change_timeout)
        except MembershipProblem:
            self.pool.add_node(name, self.cluster.url(name))  # still a member
            raise
        self.current.remove(name)
        assert node.proc is not None
        try:
            code = await asyncio.to_thread(node.proc.wait, self.exit_timeout)
            why = None if code == 0 else f"exited with status {code} after its removal"
        except subprocess.TimeoutExpired:
            why = f"still running {self.exit_timeout:g}s after its removal committed"
            await asyncio.to_thread(self.cluster.kill, name)
        tail = node.log_tail()
        self.cluster.forget(name)
        if why is not None:
            raise MembershipProblem(f"node {name} {why}"
                                    + (f"; last log lines:\n{tail}" if tail else ""))
        logger.info("%s removed and exited: members %s", name, self.current)

    async def _delete(self, name: str, deadline: float) -> None:
        """``DELETE /v1/members/NAME`` until it commits (or the member is gone already)."""
        last = "no answer"
        while time.monotonic() < deadline:
            status, answer = await self.call("DELETE", f"{MEMBERS_PATH}/{name}", exclude=name)
            if status == 200 or (status == 404 and answer.get("code") == "unknown"):
                return  # a 404 after an unknown outcome: the earlier attempt did it
            last = f"{status} {answer.get('error', '')}".strip()
            if status == 409 and answer.get("code") not in _TRANSIENT:
                break
            await asyncio.sleep(0.3)
        if (await self._role(name))[0] == "absent":
            return  # an attempt whose answer was lost (504, a timeout) did commit
        raise MembershipProblem(f"node {name} could not be removed ({last})")

    async def transfer_leader(self, to: str) -> str | None:
        deadline = time.monotonic() + self.change_timeout
        last = "no answer"
        while time.monotonic() < deadline:
            status, answer = await self.call("POST", TRANSFER_PATH, {"to": to})
            if status == 200:
                return None
            last = f"{status} {answer.get('error', '')}".strip()
            await asyncio.sleep(0.3)
        return f"not done: {last}"

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None, *,
                    exclude: str | None = None, timeout: float = 10.0
                    ) -> tuple[int, dict[str, Any]]:
        """One request to the first member that answers, following redirects to the leader; a
        member that knows no leader (503) passes the request on to the next one. (0,
        {"error": ...}) when none answered."""
        last: tuple[int, dict[str, Any]] = (0, {"error": "no member answered"})
        token = self.cluster.token
        async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            for url in self._urls(exclude):
                try:
                    last = await request_json(
                        session, method, url + path, body, context=self.cluster.ssl_context(),
                        headers={"Authorization": f"Bearer {token}"} if token else None,
                        max_redirects=_REDIRECTS)
                    if last[0] not in (0, 503):
                        return last
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    last = 0, {"error": f"{url}: {exc or type(exc).__name__}"}
        return last


__all__ = ["ClusterMembers"]

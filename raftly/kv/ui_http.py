"""The live cluster page: ``GET /ui`` and the two JSON routes it polls.

- ``GET /ui``: one self-contained HTML file (package data ``raftly/kv/ui/index.html``: inline CSS
  and JS, nothing fetched from elsewhere), under a strict Content-Security-Policy that allows
  exactly its own inline script and style (by SHA-256) and requests to this node. Served without
  a token even with an auth file (``TOKENLESS_ROUTES`` in raftly.kv.http): it holds no data, and
  it asks for a token when its first data request is answered 401.
- ``GET /v1/activity`` (read): this node's ``ActivityLog`` (raftly.kv.activity) as JSON.
- ``GET /v1/cluster`` (read): this node's view of the cluster: for each member of the
  configuration its ``/v1/status`` and ``/v1/activity``, fetched concurrently under a short
  timeout through ``NodeCalls`` (TLS and the node's token as for its other calls; its own
  straight from memory), its health, who leads, and the members' timelines merged by term.
  The cost to the members does not grow with the viewers: one keep-alive session per node, and
  concurrent requests share one fan-out, whose answer is reused for ``REUSE_SECONDS``.

Health of a member: ``down`` when it cannot be reached (the reason is given), ``unknown`` when
it answers but not with a usable status (refused this node's call, malformed, failed TLS, or
answers as another node or for another cluster), ``lagging`` when
its applied index is more than ``LAG_ENTRIES`` behind the highest commit index any member
reported, or it knows no leader while another member leads, ``up`` otherwise.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib.resources
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from raftly.kv.activity import ActivityLog
from raftly.kv.cluster_file import NodeSpec
from raftly.kv.node_calls import NodeCalls
from raftly.kv.protocol import ACTIVITY_PATH, CLUSTER_PATH, STATUS_PATH, UI_PATH

if TYPE_CHECKING:
    from raftly.kv.http import KVApi

LAG_ENTRIES = 500
"""Entries a member's applied index may trail the cluster's commit index and still be "up": well
above what the few milliseconds between two members' answers let pass under load."""
FETCH_TIMEOUT = 1.0
"""Seconds this node waits for a member's status and activity (the page polls once a second)."""
TIMELINE_TERMS = 100
"""Terms in the merged timeline, the newest."""
REUSE_SECONDS = 0.5
"""An answer younger than this is served again instead of asking the members anew: half the
page's polling period, so every viewer still sees each second."""

_STATUS_INTS = ("term", "commit_index", "applied_index", "last_index", "snapshot_index")


@dataclass(frozen=True, slots=True)
class Page:
    """The page's HTML and the Content-Security-Policy that lets exactly its inline code run."""

    html: bytes
    csp: str

    @classmethod
    def load(cls) -> Page:
        html = importlib.resources.files("raftly.kv").joinpath("ui/index.html").read_bytes()
        return cls(html, content_security_policy(html.decode("utf-8")))


def content_security_policy(html: str) -> str:
    """A CSP for ``html`` allowing its inline ``<script>`` and ``<style>`` blocks by hash, fetches
    to the origin that served it, and nothing else (no other host, no plugin, no framing)."""
    def hashes(tag: str) -> str:
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.DOTALL)
        return " ".join(
            f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'"
            for b in blocks) or "'none'"
    return ("default-src 'none'; "
            f"script-src {hashes('script')}; style-src {hashes('style')}; "
            "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'")


class ClusterPage:
    """The page's routes on one node's ``KVApi``."""

    def __init__(self, api: KVApi, activity: ActivityLog, calls: NodeCalls, *,
                 timeout: float = FETCH_TIMEOUT) -> None:
        self.api = api
        self.activity = activity
        self.calls = calls
        self.timeout = timeout
        self.page = Page.load()
        self._session: aiohttp.ClientSession | None = None
        """Kept open (its connections kept alive) from the first request until the app's
        cleanup: a poll costs the members no new connection or TLS handshake."""
        self._fan_out: asyncio.Task[dict[str, object]] | None = None
        """The fan-out under way, which concurrent requests share."""
        self._answer: tuple[float, dict[str, object]] = (-REUSE_SECONDS, {})
        """The last answer and the loop time its fan-out started."""

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(UI_PATH, self.ui)
        app.router.add_get(ACTIVITY_PATH, self.activity_route)
        app.router.add_get(CLUSTER_PATH, self.cluster)
        app.on_cleanup.append(self._close)

    async def _close(self, app: web.Application) -> None:
        if self._fan_out is not None:
            self._fan_out.cancel()
            await asyncio.gather(self._fan_out, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def ui(self, request: web.Request) -> web.Response:
        return web.Response(body=self.page.html, content_type="text/html", charset="utf-8",
                            headers={"Content-Security-Policy": self.page.csp,
                                     "X-Content-Type-Options": "nosniff",
                                     "Referrer-Policy": "no-referrer",
                                     "Cache-Control": "no-cache"})

    def activity_json(self) -> dict[str, object]:
        return {"id": self.api.node.name, **self.activity.to_json(self.api._name)}

    async def activity_route(self, request: web.Request) -> web.Response:
        return self.api._json(200, self.activity_json())

    async def cluster(self, request: web.Request) -> web.Response:
        began, answer = self._answer
        loop = asyncio.get_running_loop()
        if loop.time() - began >= REUSE_SECONDS:
            if self._fan_out is None:
                self._fan_out = loop.create_task(self._ask_members(loop.time()))
                self._fan_out.add_done_callback(self._fanned_out)
            # Shielded: a viewer that goes away does not cancel the others' answer.
            answer = await asyncio.shield(self._fan_out)
        return self.api._json(200, answer)

    def _fanned_out(self, task: asyncio.Task[dict[str, object]]) -> None:
        self._fan_out = None

    async def _ask_members(self, began: float) -> dict[str, object]:
        if self._session is None or self._session.closed:
            self._session = self.calls.session(self.timeout)
        own = self.api.node.name
        members = await asyncio.gather(*(
            self._own() if spec.name == own else self._fetch(self._session, spec)
            for spec in self.api.cluster.nodes))
        answer = cluster_answer(self.api.cluster.cluster_id, own, members)
        self._answer = (began, answer)
        return answer

    async def _own(self) -> dict[str, Any]:
        return {"name": self.api.node.name, "api": self.api.url_of(self.api.node), "self": True,
                "status": self.api.status_json(), "activity": self.activity_json(),
                "error": None}

    async def _fetch(self, session: aiohttp.ClientSession, spec: NodeSpec) -> dict[str, Any]:
        url = self.api.url_of(spec)
        entry: dict[str, Any] = {"name": spec.name, "api": url, "self": False, "status": None,
                                 "activity": None, "error": None}
        try:
            status, activity = await asyncio.gather(_get(session, url + STATUS_PATH),
                                                    _get(session, url + ACTIVITY_PATH))
        except _Unreachable as exc:
            entry["error"], entry["health"] = str(exc), "down"
            return entry
        except _BadAnswer as exc:
            entry["error"], entry["health"] = str(exc), "unknown"
            return entry
        problem = _status_problem(status)
        if problem is not None:
            entry["error"], entry["health"] = f"malformed status: {problem}", "unknown"
            return entry
        cluster_id = self.api.cluster.cluster_id
        if status.get("cluster_id") != cluster_id or status["id"] != spec.name:
            # Not this member (a reused address, a node of another cluster): the Raft
            # transport refuses it, so the page must not show it as up, let alone as leader.
            entry["error"], entry["health"] = (
                f"answers as {status['id']} of cluster {status.get('cluster_id')!r}, "
                f"not as {spec.name} of {cluster_id!r}"), "unknown"
            return entry
        entry["status"] = status
        # The activity only feeds the charts and timeline: a bad one is dropped, not fatal.
        entry["activity"] = activity if _activity_ok(activity) else None
        return entry


class _Unreachable(Exception):
    """No answer at all: connection refused or reset, or none within the timeout."""


class _BadAnswer(Exception):
    """An answer, but not a JSON object with 200."""


async def _get(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    try:
        async with session.get(url, allow_redirects=False) as resp:
            if resp.status != 200:
                raise _BadAnswer(f"{url} answered {resp.status} {resp.reason}")
            body = await resp.json(content_type=None)
    except TimeoutError:
        raise _Unreachable("no answer within the timeout") from None
    except aiohttp.ClientSSLError as exc:
        # Reachable, but its answer cannot be trusted: a wrong certificate or CA, or plain
        # HTTP. Its errno is OpenSSL's, which os.strerror would misread ("not permitted").
        raise _BadAnswer(f"TLS failed: {exc.__cause__ or exc}") from None
    except aiohttp.ClientConnectorError as exc:
        error = exc.os_error
        reason = os.strerror(error.errno) if error.errno else str(error)
        raise _Unreachable(f"cannot connect: {reason.lower()}") from None
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
        raise _Unreachable(f"connection lost: {exc}") from None
    except (aiohttp.ClientError, ValueError) as exc:
        raise _BadAnswer(f"{url}: {exc}") from None
    if not isinstance(body, dict):
        raise _BadAnswer(f"{url}: not a JSON object")
    return body


def _status_problem(status: Mapping[str, Any]) -> str | None:
    """What makes a member's status unusable here, or None."""
    for field in _STATUS_INTS:
        value = status.get(field)
        if type(value) is not int or value < 0:
            return f"{field} is not a non-negative integer"
    for field in ("role", "id"):
        if not isinstance(status.get(field), str):
            return f"{field} is not a string"
    if status.get("leader") is not None and not isinstance(status["leader"], str):
        return "leader is not a string"
    return None


_SAMPLE_COLUMNS = ("time", "commit_index", "applied_index", "ok", "failed", "p50_ms", "p99_ms")


def _activity_ok(activity: Mapping[str, Any]) -> bool:
    """Whether a member's activity has the shape the merge and the page rely on."""
    timeline, samples = activity.get("timeline"), activity.get("samples")
    if not isinstance(timeline, list) or not isinstance(samples, dict):
        return False
    columns: list[list[Any]] = []
    for name in _SAMPLE_COLUMNS:
        column = samples.get(name)
        if not isinstance(column, list) or (columns and len(column) != len(columns[0])):
            return False
        columns.append(column)
    # Latencies may be null (a second without proposals); every other value is a number.
    if not all(isinstance(v, int | float) or (v is None and i >= 5)
               for i, column in enumerate(columns) for v in column):
        return False
    return all(isinstance(c, dict) and type(c.get("term")) is int
               and isinstance(c.get("time"), int | float) for c in timeline)


def cluster_answer(cluster_id: str, own: str, members: list[dict[str, Any]]
                   ) -> dict[str, object]:
    """The ``/v1/cluster`` answer from the members' entries (``status`` None for one not heard):
    adds each member's health, the leader and its term, and the merged timeline."""
    heard = [m["status"] for m in members if m["status"] is not None]
    leaders = [s for s in heard if s["role"] == "leader"]
    # Two may claim it for a moment (an old leader not yet told): the higher term is the one.
    leader = max(leaders, key=lambda s: s["term"]) if leaders else None
    top_commit = max((s["commit_index"] for s in heard), default=0)
    for m in members:
        status = m["status"]
        if status is None:
            continue
        behind = top_commit - status["applied_index"]
        if behind > LAG_ENTRIES:
            m["health"], m["error"] = "lagging", f"{behind} entries behind"
        elif leader is not None and status["leader"] is None:
            m["health"], m["error"] = "lagging", "knows no leader"
        else:
            m["health"] = "up"
    return {
        "cluster_id": cluster_id,
        "node": own,
        "time": time.time(),
        "leader": leader["id"] if leader is not None else None,
        "term": max((s["term"] for s in heard), default=0),
        "commit_index": top_commit,
        "members": members,
        "timeline": merge_timelines({m["name"]: m["activity"]["timeline"]
                                     for m in members if m["activity"] is not None}),
    }


def merge_timelines(timelines: Mapping[str, list[dict[str, Any]]]) -> list[dict[str, object]]:
    """The members' role changes merged by term, oldest first: when the term was first seen,
    its leader (if any member learned one) and when that was first known, and who saw it."""
    terms: dict[int, dict[str, Any]] = {}
    for name, changes in timelines.items():
        for change in changes:
            term, at, leader = change["term"], change["time"], change.get("leader")
            if term == 0:
                continue  # a node's start, before any election: no term to show
            entry = terms.setdefault(term, {"term": term, "time": at, "leader": None,
                                            "leader_time": None, "seen_by": []})
            entry["time"] = min(entry["time"], at)
            if name not in entry["seen_by"]:
                entry["seen_by"].append(name)
            if isinstance(leader, str) and (entry["leader_time"] is None
                                            or at < entry["leader_time"]):
                entry["leader"], entry["leader_time"] = leader, at
    merged = [terms[t] for t in sorted(terms)[-TIMELINE_TERMS:]]
    for entry in merged:
        entry["seen_by"].sort()
    return merged


__all__ = ["FETCH_TIMEOUT", "LAG_ENTRIES", "ClusterPage", "Page", "cluster_answer",
           "content_security_policy", "merge_timelines"]

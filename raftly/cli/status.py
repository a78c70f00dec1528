"""``raftly status``: ask every endpoint for its ``/v1/status`` and show one table of the nodes,
once, or again every interval with ``--watch`` (status_watch.py).

Each node is asked on its own (status is about each node, not about the leader), all of them at
once, so that a node that does not answer costs one timeout rather than one per node. A node that
does not answer is shown by the name the others' member lists give its address.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Any

from raftly.cli.common import (
    ClientOptions,
    UsageError,
    add_client_options,
    add_cluster_id_argument,
    client_options,
    cluster_id_mismatch,
    positive_float,
    refusal,
)

Status = dict[str, Any]


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = commands.add_parser(
        "status", help="a table of the nodes: id, role, term, commit, applied, leader",
        description="Ask every endpoint for its status. Exit 0 when all answered as members "
                    "of one cluster (the --cluster-id one, if given); 1 when any did not "
                    "answer (its row says unreachable), belongs to another cluster or is not a "
                    "member of the leader's cluster (one line on stderr for each). With "
                    "--watch: the table again every interval, redrawn in place on a terminal "
                    "(repeated when the output is not one), leader changes shown, until Ctrl-C "
                    "(exit 0).")
    add_client_options(status)
    add_cluster_id_argument(status)
    status.add_argument("--json", action="store_true", help="print the raw status objects")
    status.add_argument("--watch", action="store_true",
                        help="ask again every --interval and redraw the table, highlighting "
                             "the leader and each leader change; Ctrl-C stops (exit 0)")
    status.add_argument("--interval", type=positive_float, default=None, metavar="SECONDS",
                        help="with --watch: seconds between two rounds (default 1)")
    status.set_defaults(func=run)


@dataclass(frozen=True, slots=True)
class StatusPoll:
    """One round of asking every endpoint."""

    statuses: dict[str, Status | None]
    """Each endpoint's answer; None: it did not answer."""
    rows: dict[str, Status | None]
    """The same by node name (the table's rows)."""
    problems: list[str]
    """What is wrong, one line each: unreachable nodes, nodes of another cluster, non-members."""


def poll(options: ClientOptions, expected_cluster: str | None) -> StatusPoll:
    """Ask every endpoint of ``options`` for its status, all at once."""
    from concurrent.futures import ThreadPoolExecutor

    endpoints = options.endpoints
    with ThreadPoolExecutor(max_workers=min(len(endpoints), 16)) as pool:
        answers = list(pool.map(lambda endpoint: _ask(options, endpoint), endpoints))
    statuses = {endpoint: status for endpoint, (status, _) in zip(endpoints, answers,
                                                                  strict=True)}
    errors = {endpoint: error for endpoint, (_, error) in zip(endpoints, answers, strict=True)
              if error is not None}
    names = _names(statuses)
    problems = [f"{names[ep]}: unreachable at {ep} ({error})" for ep, error in errors.items()]
    problems += _membership_problems(statuses, names, expected_cluster)
    rows: dict[str, Status | None] = {}
    for endpoint, status in statuses.items():
        label = names[endpoint]
        rows[label if label not in rows else f"{label} ({endpoint})"] = status
    return StatusPoll(statuses, rows, problems)


def _ask(options: ClientOptions, endpoint: str) -> tuple[Status | None, str | None]:
    """One endpoint's status, or None and why not (a Client per call: it is not thread-safe)."""
    from raftly.kv.client import ClientError, RequestError

    per_node = min(options.timeout, 2.0)
    try:
        with options.client([endpoint], timeout=per_node, request_timeout=per_node) as client:
            status: Status = client.status(endpoint)
            return status, None
    except RequestError as exc:
        return None, refusal(exc.status, exc.message)
    except (OSError, ClientError) as exc:
        return None, str(exc)


def run(args: argparse.Namespace) -> int:
    from raftly.cli.status_table import format_table

    if args.interval is not None and not args.watch:
        raise UsageError("--interval goes with --watch")
    options = client_options(args)
    if args.watch:
        if args.json:
            raise UsageError("--watch draws the table: leave out --json (or poll `raftly "
                             "status --json` yourself)")
        from raftly.cli.status_watch import watch

        return watch(lambda: poll(options, args.cluster_id), args.interval or 1.0)
    result = poll(options, args.cluster_id)
    if args.json:
        print(json.dumps(result.statuses, indent=2))
    else:
        for line in format_table(result.rows):
            print(line)
    for problem in result.problems:
        print(f"raftly: {problem}", file=sys.stderr)
    return 1 if result.problems else 0


def _names(statuses: dict[str, Status | None]) -> dict[str, str]:
    """Each endpoint's node name: its own answer, else what the others' member lists call the
    node at that address (a down node is shown by name), else the address itself."""
    known: dict[str, str] = {}
    for status in statuses.values():
        for member in (status or {}).get("members", []):
            if member.get("api"):
                known.setdefault(_host_port(member["api"]), member["id"])
    return {endpoint: status["id"] if status is not None
            else known.get(_host_port(endpoint), endpoint)
            for endpoint, status in statuses.items()}


def _host_port(address: str) -> str:
    """``host:port`` of an address or URL: http and https name the same node."""
    return address.rpartition("://")[2].rstrip("/")


def _membership_problems(statuses: dict[str, Status | None], names: dict[str, str],
                         expected_cluster: str | None) -> list[str]:
    """The answering nodes that are not what was meant: of another cluster than
    ``expected_cluster`` (or, without it, than the others), or not members of their cluster."""
    answering = {ep: s for ep, s in statuses.items() if s is not None}
    problems = []
    clusters = {s.get("cluster_id") for s in answering.values()}
    if expected_cluster is None and len(clusters) > 1:
        return [f"these endpoints belong to {len(clusters)} different clusters: " + ", ".join(
            f"{names[ep]} at {ep} is in {s.get('cluster_id')!r}" for ep, s in answering.items())]
    for endpoint, status in answering.items():
        mismatch = cluster_id_mismatch(status, expected_cluster)
        if mismatch is not None:
            problems.append(f"{endpoint}: {mismatch}")
    # The leader of the highest term knows the membership; a node outside it never catches up.
    leaders = [s for s in answering.values() if s["role"] == "leader"]
    if leaders:
        leader = max(leaders, key=lambda s: s["term"])
        everyone = leader["members"] + leader.get("learners", [])
        members = {m["raft_id"] for m in everyone}
        member_names = ", ".join(m["id"] for m in everyone)
        for endpoint, status in answering.items():
            if (status.get("cluster_id") == leader.get("cluster_id")
                    and status["raft_id"] not in members):
                problems.append(f"{names[endpoint]} at {endpoint} is not a member of the cluster "
                                f"led by {leader['id']} (members {member_names})")
    return problems


__all__ = ["StatusPoll", "add_parser", "poll", "run"]

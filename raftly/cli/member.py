"""``raftly member list|add|promote|remove`` and ``raftly leader transfer``: membership from the
command line, through the HTTP API of any node (a follower's redirect to the leader is followed),
over https with ``--cacert`` and with a ``--token`` (membership changes need an admin one).

Each command prints one line (or the member table) and exits 0; a refusal (unknown member, a
change in flight, a name in use, ...) is one line on stderr and exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
from typing import Any
from urllib.parse import quote

from raftly.cli.common import CliError, add_client_options, client_options, refusal
from raftly.kv.client import handshake_failure, request_json, tls_context
from raftly.kv.client_core import base_url
from raftly.security.tls import TlsError

MAX_REDIRECTS = 5


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    member = commands.add_parser(
        "member", help="list, add, promote or remove the cluster's members",
        description="Membership changes go through the leader, one at a time; each command "
                    "returns once its change is committed.")
    sub = member.add_subparsers(dest="member_command", required=True, metavar="COMMAND")
    lst = sub.add_parser("list", help="the members: name, raft id, role, addresses")
    lst.add_argument("--json", action="store_true", help="print the API's answer")
    lst.set_defaults(func=_list)
    add = sub.add_parser("add", help="add a node as a learner (promoted once caught up)",
                         description="Add node NAME as a learner; the leader promotes it to "
                                     "voter once it has caught up, unless --learner. Start the "
                                     "node itself with `raftly serve --join`.")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--raft", required=True, metavar="HOST:PORT", help="its Raft address")
    add.add_argument("--api", required=True, metavar="HOST:PORT", help="its API address")
    add.add_argument("--learner", action="store_true", help="keep it a learner")
    add.set_defaults(func=_add)
    promote = sub.add_parser("promote", help="make learner NAME a voter (it must be caught up)")
    promote.add_argument("name", metavar="NAME")
    promote.set_defaults(func=_promote)
    remove = sub.add_parser("remove", help="remove member NAME (its process then exits)")
    remove.add_argument("name", metavar="NAME")
    remove.set_defaults(func=_remove)

    leader = commands.add_parser("leader", help="leadership: transfer it to another voter")
    lsub = leader.add_subparsers(dest="leader_command", required=True, metavar="COMMAND")
    transfer = lsub.add_parser("transfer", help="hand leadership to NAME (default: any voter)")
    transfer.add_argument("name", nargs="?", metavar="NAME")
    transfer.set_defaults(func=_transfer)
    for p in (member, lst, add, promote, remove, leader, transfer):
        add_client_options(p)


def _list(args: argparse.Namespace) -> int:
    answer = request(args, "GET", "/v1/members")
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    rows = [("NAME", "ID", "ROLE", "RAFT", "API")]
    rows += [(m["name"], str(m["id"]), m["role"], m["raft"], m["api"])
             for m in answer["members"]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _add(args: argparse.Namespace) -> int:
    body = {"name": args.name, "raft": args.raft, "api": args.api, "learner": args.learner}
    answer = request(args, "POST", "/v1/members", body)
    print(f"added {args.name} as a learner (raft id {answer['member']['id']}, index "
          f"{answer['index']})")
    return 0


def _promote(args: argparse.Namespace) -> int:
    answer = request(args, "POST", f"/v1/members/{quote(args.name, safe='')}/promote")
    print(f"promoted {args.name} to voter (index {answer['index']})")
    return 0


def _remove(args: argparse.Namespace) -> int:
    answer = request(args, "DELETE", f"/v1/members/{quote(args.name, safe='')}")
    print(f"removed {args.name} (index {answer['index']})")
    return 0


def _transfer(args: argparse.Namespace) -> int:
    answer = request(args, "POST", "/v1/leader/transfer",
                     {"to": args.name} if args.name else None)
    print(f"{answer['leader']} leads")
    return 0


def request(args: argparse.Namespace, method: str, path: str,
            body: dict[str, Any] | None = None) -> dict[str, Any]:
    """Send to the first endpoint that answers, following redirects; the JSON answer, or
    CliError with the node's message."""
    options = client_options(args)
    try:
        context = tls_context(options.cacert, options.cert, options.key)
    except TlsError as exc:
        raise CliError(f"TLS: {exc}") from None
    scheme = "https" if context is not None else "http"
    headers = {"Authorization": f"Bearer {options.token}"} if options.token else None
    status, answer = asyncio.run(_first_answer(
        [base_url(e, scheme) + path for e in options.endpoints], method, body, headers,
        context, options.timeout))
    if 200 <= status < 300:
        return answer
    raise CliError(refusal(status, str(answer.get("error", answer))))


async def _first_answer(urls: list[str], method: str, body: dict[str, Any] | None,
                        headers: dict[str, str] | None, context: ssl.SSLContext | None,
                        timeout: float) -> tuple[int, dict[str, Any]]:
    import aiohttp

    unreachable = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        for url in urls:
            try:
                return await request_json(session, method, url, body, headers=headers,
                                          context=context, max_redirects=MAX_REDIRECTS)
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                if (failure := handshake_failure(url, exc)) is not None:
                    raise CliError(str(failure)) from None
                unreachable.append(f"{url} ({exc or type(exc).__name__})")
    raise CliError(f"unavailable: no node answered: {', '.join(unreachable)}")


__all__ = ["add_parsers", "request"]

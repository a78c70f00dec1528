"""``raftly kv put|get|del|cas|list``: the key-value service from a shell (``raftly status`` is
registered here too, and lives in status.py).

They use ``raftly.Client``: it finds the leader, follows redirects and retries safely, so any
node's address will do; when no node accepts a connection at all they fail at once.

Values are bytes end to end. ``get`` writes the exact bytes when its output is not a terminal (a
file, a pipe) and shows text on a terminal, escaping what is not UTF-8 and saying so. ``list``
escapes each key and value into one line (``escape``), or with ``--json`` names the encoding of
each value. An argument that is not valid UTF-8 on the command line goes through as its bytes.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from raftly.cli import coord, status
from raftly.cli.common import (
    CliError,
    add_client_options,
    add_cluster_id_argument,
    check_cluster_id,
    client_options,
    positive_int,
    refusal,
)
from raftly.kv.protocol import encode_list_item

EPILOG = """\
examples:
  raftly kv put greeting hello          set a key (any node's address will do)
  raftly kv put photo < photo.jpg       the value from stdin, bytes as they are
  raftly kv get greeting                print it; `> FILE` or a pipe gets the exact bytes
  raftly kv cas greeting hello hi       compare-and-set: only if it is "hello" now
  raftly kv list user/ --json           the keys under a prefix, as JSON
  raftly kv del greeting
  raftly --endpoints 10.0.0.1:8001,8002 kv get greeting
  RAFTLY_CACERT=certs/ca.crt RAFTLY_TOKEN=... raftly kv get greeting    over https, with a token

exit status: 0 success; 1 error (also: `get` of a missing key, a `cas` that did not swap);
2 usage. Like etcdctl, `del` of a missing key succeeds and prints 0 (keys deleted). Unlike
etcdctl, `get` of a missing key prints "not found" on stderr and exits 1, so a script can tell
an empty value from no value. A write that timed out says "outcome unknown": it may or may not
have been applied.
"""

LIST_EPILOG = """\
output: one line per key, KEY<TAB>VALUE. So that every line stays one line, both are escaped:
a backslash is written \\\\, a tab \\t, a newline \\n, a carriage return \\r, and another
control character or a byte that is not UTF-8 \\xHH. With --json: a list of {"key": ...,
"encoding": "utf-8" or "base64", "value": ...}, the value exactly as stored in that encoding.

""" + EPILOG


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    kv = commands.add_parser(
        "kv", help="put, get, delete, compare-and-set and list keys",
        description="Read and write the replicated key-value store. Reads are linearizable "
                    "unless --stale.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = kv.add_subparsers(dest="kv_command", required=True, metavar="COMMAND")

    put = sub.add_parser("put", help="set KEY to VALUE (or to stdin when VALUE is omitted)",
                         epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    put.add_argument("key")
    put.add_argument("value", nargs="?", help="the value (default: read all of stdin)")
    put.add_argument("--lease", type=positive_int, default=None, metavar="ID",
                     help="attach the key to lease ID (`raftly lease grant`): it is deleted "
                          "when the lease ends")
    put.set_defaults(func=run_client_command, kv_func=_do_put)

    get = sub.add_parser("get", help="print KEY's value (exit 1 if there is none)",
                         epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    get.add_argument("key")
    get.add_argument("--raw", action=argparse.BooleanOptionalAction, default=None,
                     help="write the exact bytes, with no newline added (the default when "
                          "stdout is not a terminal); --no-raw shows text, escaping what "
                          "is not UTF-8")
    get.add_argument("--stale", action="store_true",
                     help="read the first answering node's own copy (may be out of date)")
    get.set_defaults(func=run_client_command, kv_func=_do_get)

    delete = sub.add_parser("del", help="delete KEY; print 1 if it existed, else 0",
                            epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    delete.add_argument("key")
    delete.set_defaults(func=run_client_command, kv_func=_do_del)

    cas = sub.add_parser("cas", help="set KEY to NEW only if it is OLD now (exit 1 if not)",
                         epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    cas.add_argument("key")
    cas.add_argument("old")
    cas.add_argument("new")
    cas.set_defaults(func=run_client_command, kv_func=_do_cas)

    lst = sub.add_parser("list", help="print KEY<TAB>VALUE lines of the keys under a prefix",
                         epilog=LIST_EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    lst.add_argument("prefix", nargs="?", default="")
    lst.add_argument("--limit", type=int, default=1000, help="at most this many (default 1000)")
    lst.add_argument("--json", action="store_true",
                     help="print a JSON list, each value with its encoding")
    lst.add_argument("--stale", action="store_true", help="read one node's own copy")
    lst.set_defaults(func=run_client_command, kv_func=_do_list)

    coordination = coord.add_kv_parsers(sub, run_client_command)
    for p in (kv, put, get, delete, cas, lst, *coordination):
        add_client_options(p)
    for p in (put, get, delete, cas, lst, *coordination):
        add_cluster_id_argument(p)

    status.add_parser(commands)


def run_client_command(args: argparse.Namespace) -> int:
    """Run a kv subcommand, turning the client's errors into one-line messages."""
    from raftly.kv.client import (
        HandshakeError,
        OutcomeUnknownError,
        RequestError,
        UnavailableError,
    )

    options = client_options(args)
    try:
        with options.client(request_timeout=min(options.timeout, 6.0), fail_fast=True) as client:
            if args.cluster_id is not None:
                # Whichever node answers speaks for its cluster: redirects stay inside it.
                status = client.status()
                check_cluster_id(status, args.cluster_id)
            code: int = args.kv_func(client, args)
            return code
    except OutcomeUnknownError as exc:
        raise CliError(f"outcome unknown: {exc}") from None
    except HandshakeError as exc:
        raise CliError(str(exc)) from None
    except UnavailableError as exc:
        raise CliError(f"unavailable: {exc}") from None
    except RequestError as exc:
        raise CliError(refusal(exc.status, exc.message)) from None
    except ValueError as exc:  # the client's own checks, such as an empty key
        raise CliError(str(exc), 2) from None


def _text(value: bytes) -> str:
    return value.decode("utf-8", "backslashreplace")


# Tab, newline and carriage return by name; every other control character as \xHH, so that a
# line never carries a byte that a terminal or a line-oriented tool would act on.
_LINE_ESCAPES = str.maketrans(
    {chr(c): f"\\x{c:02x}" for c in (*range(0x20), 0x7F)}
    | {"\t": "\\t", "\n": "\\n", "\r": "\\r"})


def escape(data: bytes | str) -> str:
    """``data`` as one line of text that says exactly what it is (the ``list`` format).

    Backslashes are doubled first, so an escape the bytes produce (``\\xff``) can never be
    mistaken for the same characters written by the user (``\\\\xff``).
    """
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    return _text(raw.replace(b"\\", b"\\\\")).translate(_LINE_ESCAPES)


def _arg_bytes(text: str) -> bytes:
    # surrogateescape: bytes that were not valid UTF-8 on the command line go through as they came.
    return text.encode("utf-8", "surrogateescape")


def _do_put(client: Any, args: argparse.Namespace) -> int:
    value = sys.stdin.buffer.read() if args.value is None else _arg_bytes(args.value)
    index = client.put(args.key, value, lease=args.lease)
    print(f"OK (index {index})")
    return 0


def _do_get(client: Any, args: argparse.Namespace) -> int:
    value = client.get(args.key, stale=args.stale)
    if value is None:
        raise CliError(f"{args.key}: not found")
    raw = args.raw if args.raw is not None else not sys.stdout.isatty()
    if raw:
        sys.stdout.buffer.write(value)
        sys.stdout.flush()
        return 0
    try:
        print(value.decode("utf-8"))
    except UnicodeDecodeError:
        print(_text(value))
        print(f"raftly: {args.key}: the value is not UTF-8 text; its other bytes are shown as "
              "\\xHH (--raw writes them as they are)", file=sys.stderr)
    return 0


def _do_del(client: Any, args: argparse.Namespace) -> int:
    print(1 if client.delete(args.key) else 0)
    return 0


def _do_cas(client: Any, args: argparse.Namespace) -> int:
    if not client.cas(args.key, _arg_bytes(args.old), _arg_bytes(args.new)):
        raise CliError(f"{args.key}: not swapped (its value is not {args.old!r}, or it is missing)")
    print("OK")
    return 0


def _do_list(client: Any, args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise CliError("--limit must be at least 1", 2)
    items = client.list(args.prefix, args.limit, stale=args.stale)
    if args.json:
        print(json.dumps([_json_item(k, v) for k, v in items], indent=2))
    else:
        for key, value in items:
            print(f"{escape(key)}\t{escape(value)}")
    return 0


def _json_item(key: str, value: bytes) -> dict[str, str]:
    # The HTTP API's choice of text or base64, with the encoding named rather than implied.
    item = encode_list_item(key, value)
    if "value" in item:
        return {"key": key, "encoding": "utf-8", "value": item["value"]}
    return {"key": key, "encoding": "base64", "value": item["value_base64"]}

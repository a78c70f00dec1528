"""``raftly certs init|add|renew``: a cluster's certificates, made with ``raftly.security.certs``.

``init`` creates a CA, a certificate and key for every node named, and a client certificate;
``add`` issues certificates for new nodes with the existing CA; ``renew`` re-issues existing
ones (nodes, or ``client``) with the same CA before they expire, replacing the files. Each
file is printed with its expiry; a refusal (an existing CA, a bad name, a missing CA) is one
line and exit 1.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

from raftly.cli.common import CliError

if TYPE_CHECKING:
    from raftly.security.certs import Issued

EXAMPLES = """\
examples:
  raftly certs init --dir certs --nodes n1,n2,n3 --hosts 10.0.0.5,db1.example.com
  raftly serve --cluster cluster.toml --id n1 --data-dir data/n1 --tls-dir certs
  raftly certs add --dir certs --nodes n4       a certificate for a new member
  raftly certs renew --dir certs --nodes n1,n2,n3,client
                                               new certificates before the old expire
                                               (each node uses its new one when restarted)
"""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    certs = commands.add_parser(
        "certs", help="make a cluster's TLS certificates (CA, nodes, client)",
        description="Certificates for mutual TLS between nodes and HTTPS for clients. Every "
                    "node's certificate is named after the node (--nodes) and is valid for "
                    "localhost, 127.0.0.1, ::1 and the --hosts given. Files are readable by "
                    "their owner only; keep ca.key off the nodes once the cluster runs.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = certs.add_subparsers(dest="certs_command", required=True, metavar="COMMAND")
    init = sub.add_parser("init", help="a new CA, node certificates and a client certificate")
    add = sub.add_parser("add", help="certificates for new nodes, with the existing CA")
    renew = sub.add_parser("renew", help="re-issue certificates (nodes or client) with the "
                                         "existing CA, replacing the files")
    for p in (init, add, renew):
        p.add_argument("--dir", required=True, metavar="DIR", help="the certificate directory")
        p.add_argument("--nodes", required=True, type=_names, metavar="N1,N2,...",
                       help="node names (as in the cluster file or --join --id)")
        p.add_argument("--hosts", type=_names, default=[], metavar="H1,H2,...",
                       help="more host names or IP addresses the nodes are reached at "
                            "(renew: default those of the old certificate)")
        p.add_argument("--days", type=_days, default=None, metavar="N",
                       help="validity of the certificates in days (default 825)")
    init.set_defaults(func=_init)
    add.set_defaults(func=_add)
    renew.set_defaults(func=_renew)


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _days(text: str) -> int:
    if not (text.isascii() and text.isdigit() and int(text) > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number of days, got {text!r}")
    return int(text)


def _init(args: argparse.Namespace) -> int:
    from raftly.security.certs import init_certs

    return _make(init_certs, args)


def _add(args: argparse.Namespace) -> int:
    from raftly.security.certs import add_certs

    return _make(add_certs, args)


def _renew(args: argparse.Namespace) -> int:
    from raftly.security.certs import renew_certs

    return _make(renew_certs, args)


def _make(make: Callable[..., list[Issued]], args: argparse.Namespace) -> int:
    from raftly.security.certs import DEFAULT_DAYS, CertError

    try:
        issued = make(args.dir, args.nodes, args.hosts, days=args.days or DEFAULT_DAYS)
    except CertError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"{exc.filename or args.dir}: {exc.strerror or exc}") from None
    width = max(len(str(i.cert)) for i in issued)
    for item in issued:
        print(f"{item.cert!s:<{width}}  expires {item.not_after:%Y-%m-%d %H:%M} UTC")
        print(f"{item.key}")
    return 0

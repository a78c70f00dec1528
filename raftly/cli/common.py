"""What every ``raftly`` subcommand shares: exit codes, expected errors, the client options
(``--endpoints``, ``--timeout``, and for secured clusters ``--cacert``, ``--cert``/``--key``,
``--token``), the cluster id they expect, logging.

Expected failures (a node unreachable, a key missing, a bad cluster file) raise ``CliError`` and
leave as one line on stderr with exit status 1; argparse reports usage errors with status 2.
Tracebacks are kept for bugs.

The client options may come before or after the subcommand (``raftly --endpoints X kv get k``,
``raftly kv get k --endpoints X``): every level declares them with no default, so a level that
was not given them leaves the value of another alone, and ``client_options`` fills in the
defaults and checks them once.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2

ENDPOINTS_ENV = "RAFTLY_ENDPOINTS"
CACERT_ENV = "RAFTLY_CACERT"
CERT_ENV = "RAFTLY_CERT"
KEY_ENV = "RAFTLY_KEY"
TOKEN_ENV = "RAFTLY_TOKEN"
DEFAULT_ENDPOINTS = "127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003"
DEFAULT_TIMEOUT = 10.0
CLUSTER_ID_ENV = "RAFTLY_CLUSTER_ID"


class CliError(Exception):
    """An expected failure: printed as ``raftly: <message>`` and exit status ``code``."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


class LoggedError(CliError):
    """A CliError already written to the log (a JSON ``node_failed`` event): only its exit
    status is left to give."""


class UsageError(CliError):
    """Arguments that parse but make no sense together (exit status 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


def _valid_port(text: str) -> bool:
    return text.isascii() and text.isdigit() and 1 <= int(text) <= 65535


def parse_endpoints(text: str, source: str = "--endpoints") -> list[str]:
    """Split ``host:port,host:port``; a bare ``port`` reuses the host before it.

    So ``127.0.0.1:8001,8002,8003`` names three nodes on one machine, which is what a local
    cluster looks like. Anything that is not an address is a usage error naming ``source``
    (where the text came from), at once rather than after a timeout of retries.
    """
    endpoints: list[str] = []
    host = "127.0.0.1"
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        if _valid_port(item):
            item = f"{host}:{item}"
        else:
            scheme, sep, netloc = item.rpartition("://")
            name, colon, port = netloc.rpartition(":")
            if (sep and scheme not in ("http", "https")) or not colon or not name or "/" in netloc \
                    or not _valid_port(port):
                raise UsageError(f"{source}: {item!r} is not an address; write HOST:PORT "
                                 "(e.g. 127.0.0.1:8001, or https://HOST:PORT) or a bare PORT "
                                 "after one")
            host = name
        endpoints.append(item)
    if not endpoints:
        raise UsageError(f"{source}: no endpoints in {text!r}")
    return endpoints


CLIENT_OPTIONS = {"endpoints": "--endpoints", "timeout": "--timeout", "cacert": "--cacert",
                  "client_cert": "--cert", "client_key": "--key", "token": "--token"}
"""The client options by destination (only client commands take them). ``--key`` is not
stored as ``key``: that is the key of ``raftly kv put KEY``."""


def add_client_options(parser: argparse.ArgumentParser) -> None:
    """The client options, accepted at this level of the command line."""
    parser.add_argument(
        "--endpoints", default=argparse.SUPPRESS, metavar="HOST:PORT,...",
        help=f"comma-separated API addresses of the nodes (default: ${ENDPOINTS_ENV} or "
             f"{DEFAULT_ENDPOINTS}); a bare port reuses the previous host")
    parser.add_argument("--timeout", type=positive_float, default=argparse.SUPPRESS,
                        metavar="SECONDS",
                        help=f"give up after this many seconds (default {DEFAULT_TIMEOUT:g})")
    parser.add_argument(
        "--cacert", default=argparse.SUPPRESS, metavar="FILE",
        help=f"talk https, trusting the CA certificate FILE (the cluster's ca.crt; default "
             f"${CACERT_ENV}); endpoints without a scheme then mean https://")
    parser.add_argument("--cert", dest="client_cert", default=argparse.SUPPRESS, metavar="FILE",
                        help=f"client certificate, for nodes that require one (default "
                             f"${CERT_ENV})")
    parser.add_argument("--key", dest="client_key", default=argparse.SUPPRESS, metavar="FILE",
                        help=f"the client certificate's private key (default ${KEY_ENV})")
    parser.add_argument("--token", default=argparse.SUPPRESS, metavar="TOKEN",
                        help=f"bearer token for clusters with an auth file (default "
                             f"${TOKEN_ENV}; the environment keeps it out of `ps`)")


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """The checked client options of one command."""

    endpoints: list[str]
    timeout: float
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    token: str | None = None

    def security(self) -> dict[str, str | None]:
        """The keyword arguments of ``Client`` that secure its connections."""
        return {"cacert": self.cacert, "cert": self.cert, "key": self.key, "token": self.token}

    def client(self, endpoints: list[str] | None = None, **kwargs: Any) -> Any:
        """A ``raftly.Client`` with these options (``kwargs`` override); unusable TLS files
        are a CliError naming the file."""
        from raftly.kv.client import Client
        from raftly.security.tls import TlsError

        try:
            return Client(endpoints if endpoints is not None else self.endpoints,
                          **{"timeout": self.timeout, **self.security(), **kwargs})
        except TlsError as exc:
            raise CliError(f"TLS: {exc}") from None
        except ValueError as exc:
            raise CliError(str(exc), EXIT_USAGE) from None


def _given(args: argparse.Namespace, name: str, env: str) -> str | None:
    value: str | None = getattr(args, name, None)
    if value is None:
        value = os.environ.get(env) or None
    return value


def client_options(args: argparse.Namespace) -> ClientOptions:
    """The endpoints (``--endpoints``, else ``$RAFTLY_ENDPOINTS``, else the local default), the
    timeout, and the TLS files and token (each option, else its environment variable); raises
    UsageError for endpoints that are not addresses."""
    given: str | None = getattr(args, "endpoints", None)
    if given is not None:
        endpoints = parse_endpoints(given, "--endpoints")
    elif (env := os.environ.get(ENDPOINTS_ENV)) is not None:
        endpoints = parse_endpoints(env, f"${ENDPOINTS_ENV}")
    else:
        endpoints = parse_endpoints(DEFAULT_ENDPOINTS)
    timeout: float = getattr(args, "timeout", DEFAULT_TIMEOUT)
    return ClientOptions(endpoints, timeout, _given(args, "cacert", CACERT_ENV),
                         _given(args, "client_cert", CERT_ENV),
                         _given(args, "client_key", KEY_ENV),
                         _given(args, "token", TOKEN_ENV))


def refusal(status: int, message: str) -> str:
    """One line for a node's 4xx answer; 401 and 403 say what to do about them."""
    if status == 401:
        return (f"unauthorized (401): {message}; give a token with --token or "
                f"${TOKEN_ENV}")
    if status == 403:
        return f"forbidden (403): {message}; this token's role may not do that"
    return f"refused ({status}): {message}"


def add_cluster_id_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cluster-id", default=os.environ.get(CLUSTER_ID_ENV) or None, metavar="ID",
        help=f"refuse to work on a cluster with another id (default: ${CLUSTER_ID_ENV}, if "
             "set; `raftly cluster up` prints its id)")


def cluster_id_mismatch(status: dict[str, Any], expected: str | None) -> str | None:
    """What is wrong when the node whose ``/v1/status`` this is belongs to another cluster than
    ``expected`` (None: any cluster will do); None when nothing is."""
    actual = status.get("cluster_id")
    if expected is None or actual == expected:
        return None
    return (f"node {status.get('id', '?')} is in cluster {actual!r}, not {expected!r}: check "
            f"--endpoints (or ${ENDPOINTS_ENV}) and --cluster-id")


def check_cluster_id(status: dict[str, Any], expected: str | None) -> None:
    """``CliError`` when ``cluster_id_mismatch`` finds something wrong."""
    mismatch = cluster_id_mismatch(status, expected)
    if mismatch is not None:
        raise CliError(mismatch)


def positive_float(text: str) -> float:
    """An argparse type: a number of seconds greater than zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _int_at_least(text: str, least: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be {what}: {text!r}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number greater than zero."""
    return _int_at_least(text, 1, "positive")


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number, zero or more."""
    return _int_at_least(text, 0, "zero or more")


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")


def configure_logging(level: str, node: str | None = None, log_format: str = "text") -> None:
    """Log to stderr, one line per event, tagged with the node name.

    The tag matters when several nodes share a terminal (``raftly cluster up``). ``json``: one
    JSON object per line with the event's name and fields (raftly.logevents).
    """
    if log_format == "json":
        from raftly.logevents import JsonFormatter

        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter(node))
        logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler],
                            force=True)
        return
    tag = f"{node} " if node else ""
    logging.basicConfig(
        level=getattr(logging, level.upper()), stream=sys.stderr,
        format=f"%(asctime)s.%(msecs)03d {tag}%(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S", force=True)


def add_log_format_option(parser: argparse.ArgumentParser, what: str = "") -> None:
    """``--log-format text|json``: of ``serve``, or (``what``) passed on to the nodes a command
    starts."""
    parser.add_argument("--log-format", choices=LOG_FORMATS, default="text",
                        help=f"{what}text lines (default), or json: one JSON object per line "
                             "with time, level, node, logger, event, message and the event's "
                             "fields (docs/operations.md)")

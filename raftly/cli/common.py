"""What every ``raftly`` subcommand shares: exit codes, expected errors, endpoints, the cluster
id they expect, logging.

Expected failures (a node unreachable, a key missing, a bad cluster file) raise ``CliError`` and
leave as one line on stderr with exit status 1; argparse reports usage errors with status 2.
Tracebacks are kept for bugs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2

ENDPOINTS_ENV = "RAFTLY_ENDPOINTS"
DEFAULT_ENDPOINTS = "127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003"
CLUSTER_ID_ENV = "RAFTLY_CLUSTER_ID"


class CliError(Exception):
    """An expected failure: printed as ``raftly: <message>`` and exit status ``code``."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


class UsageError(CliError):
    """Arguments that parse but make no sense together (exit status 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


def parse_endpoints(text: str) -> list[str]:
    """Split ``host:port,host:port``; a bare ``port`` reuses the host before it.

    So ``127.0.0.1:8001,8002,8003`` names three nodes on one machine, which is what a local
    cluster looks like.
    """
    endpoints: list[str] = []
    host = "127.0.0.1"
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        if item.isdigit():
            item = f"{host}:{item}"
        else:
            netloc = item.split("://", 1)[-1]
            host = netloc.rsplit(":", 1)[0] if ":" in netloc else netloc
        endpoints.append(item)
    if not endpoints:
        raise UsageError(f"no endpoints in {text!r}")
    return endpoints


def add_endpoints_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--endpoints", default=os.environ.get(ENDPOINTS_ENV, DEFAULT_ENDPOINTS),
        help=f"comma-separated API addresses of the nodes (default: ${ENDPOINTS_ENV} or "
             f"{DEFAULT_ENDPOINTS}); a bare port reuses the previous host")
    parser.add_argument("--timeout", type=positive_float, default=10.0,
                        help="give up after this many seconds (default 10)")


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


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def configure_logging(level: str, node: str | None = None) -> None:
    """Log to stderr, one line per event, tagged with the node name.

    The tag matters when several nodes share a terminal (``raftly cluster up``).
    """
    tag = f"{node} " if node else ""
    logging.basicConfig(
        level=getattr(logging, level.upper()), stream=sys.stderr,
        format=f"%(asctime)s.%(msecs)03d {tag}%(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S", force=True)

"""What every ``raftly`` subcommand shares: exit codes, expected errors, endpoints, logging.

Expected failures (a node unreachable, a key missing, a bad cluster file) raise ``CliError`` and
leave as one line on stderr with exit status 1; argparse reports usage errors with status 2.
Tracebacks are kept for bugs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2

ENDPOINTS_ENV = "RAFTLY_ENDPOINTS"
DEFAULT_ENDPOINTS = "127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003"


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

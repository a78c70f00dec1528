"""Running raftly nodes as child processes on this machine: free ports and child lifetime.

The ground under ``raftly.localcluster``, which runs every local cluster of node processes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports the OS says are free now (all held open while choosing; another
    process may still take one before the caller binds it)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def die_with_parent(sig: int = signal.SIGTERM, parent: int | None = None) -> None:
    """In a child (the launcher, before it execs the node): have Linux send ``sig`` when the
    parent dies.

    Without it a node outlives a runner killed with SIGKILL and keeps its ports. Elsewhere (no
    prctl) the parent's own cleanup is all there is. With ``parent``, exit at once if that
    process already died before the request took effect.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, sig, 0, 0, 0)
    if parent is not None and os.getppid() != parent:
        sys.exit(1)

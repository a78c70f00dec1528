"""``python -m raftly.testing.lazyfs BACKING MOUNTPOINT --mode lazy|strict --control SOCKET``.

Mounts the lazy file system in the foreground until it is unmounted (``fusermount3 -u
MOUNTPOINT``) or sent SIGTERM/SIGINT; see docs/lazyfs.md.
"""

from __future__ import annotations

import argparse
import logging
import sys

import mfusepy  # type: ignore[import-untyped]

from raftly.testing.lazyfs.control import ControlServer
from raftly.testing.lazyfs.fs import LazyOperations
from raftly.testing.lazyfs.mount import MODES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raftly.testing.lazyfs",
                                     description="a FUSE passthrough that forgets unsynced data")
    parser.add_argument("backing", help="the directory whose files are served")
    parser.add_argument("mountpoint")
    parser.add_argument("--mode", choices=MODES, default="lazy")
    parser.add_argument("--control", required=True, help="Unix socket path for commands")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="lazyfs: %(message)s", stream=sys.stderr)
    ops = LazyOperations(args.backing, args.mode)
    server = ControlServer(args.control, {"ping": lambda: None, "powerloss": ops.power_loss})
    try:
        # direct_io and zero timeouts: the kernel keeps no data or attributes of its own, so
        # after a power loss every read comes back to the page cache kept here.
        mfusepy.FUSE(ops, args.mountpoint, foreground=True, direct_io=True, hard_remove=True,
                     attr_timeout=0, entry_timeout=0, negative_timeout=0, fsname="lazyfs")
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

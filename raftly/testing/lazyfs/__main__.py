"""``python -m raftly.testing.lazyfs BACKING MOUNTPOINT --mode lazy|strict --control SOCKET``.

Mounts the lazy file system in the foreground until it is unmounted (``fusermount3 -u
MOUNTPOINT``) or sent SIGTERM/SIGINT, or its parent process dies (a test runner killed
mid-test: the mount is then lazily unmounted rather than left stale); see docs/lazyfs.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import threading
import time

import mfusepy  # type: ignore[import-untyped]

from raftly.testing.lazyfs.control import ControlServer
from raftly.testing.lazyfs.fs import LazyOperations
from raftly.testing.lazyfs.mount import MODES


def _unmount_when_orphaned(mountpoint: str) -> None:
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(0.5)
    logging.getLogger("raftly.testing.lazyfs").warning("parent died: unmounting %s", mountpoint)
    subprocess.run(["fusermount3", "-uz", mountpoint], check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m raftly.testing.lazyfs",
        description="a FUSE passthrough that forgets unsynced data",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="modes:\n"
               "  lazy    namespace changes (create, rename, unlink, mkdir) survive a power loss\n"
               "  strict  they survive only if their directory was fsynced after them\n"
               "control commands (one line per connection, e.g. "
               "echo powerloss | nc -U SOCKET):\n"
               "  ping            -> ok\n"
               "  powerloss       forget everything not fsynced\n"
               "  powerloss SEED  the same, after writing back a random part of it\n"
               "unmount with: fusermount3 -u MOUNTPOINT (see docs/lazyfs.md)")
    parser.add_argument("backing", help="the directory whose files are served")
    parser.add_argument("mountpoint")
    parser.add_argument("--mode", choices=MODES, default="lazy")
    parser.add_argument("--control", required=True, help="Unix socket path for commands")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="lazyfs: %(message)s", stream=sys.stderr)
    ops = LazyOperations(args.backing, args.mode)
    server = ControlServer(args.control, {
        "ping": lambda: None,
        "powerloss": lambda seed=None: ops.power_loss(None if seed is None else int(seed)),
    })
    threading.Thread(target=_unmount_when_orphaned, args=(args.mountpoint,), daemon=True,
                     name="lazyfs-orphan").start()
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

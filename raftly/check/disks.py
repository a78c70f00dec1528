"""The nodes' disks under ``--nemesis powerloss``: one lazy file system per node.

Each node's data dir (``OUT/data/NAME``, where ``cluster.LAYOUT`` puts it) is the mount point of
its own ``raftly.testing.lazyfs`` mount, backed by ``OUT/disks/NAME``; the mounts' control
sockets and logs go to ``OUT/lazyfs``. A power loss of a node drops what its disk holds that
was not fsynced (kill the node first), after writing back a seeded random part of it, torn
writes included, as a kernel may have done before the power went: the seeds come from the run's
seed, so a run replays with the same write-backs. ``close`` unmounts every disk, whatever
happened before: the runner calls it on every way out of a run.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from raftly.testing.lazyfs import LazyMount, unavailable
from raftly.testing.lazyfs.mount import Mode

logger = logging.getLogger("raftly.check.disks")

class DiskError(Exception):
    """The lazy disks cannot be used (the message says why)."""


class LazyDisks:
    """Lazy mounts for the nodes ``names``, with their files under ``out``."""

    def __init__(self, out: Path, names: Iterable[str], mode: Mode = "strict",
                 seed: int = 0) -> None:
        self.out = out
        self.mode = mode
        self._rng = random.Random(f"raftly-check-powerloss:{seed}")
        self.mounts: dict[str, LazyMount] = {}
        self._names = list(names)

    def data_dir(self, name: str) -> Path:
        return self.out / "data" / name

    def start(self) -> None:
        """Mount every disk, empty (an earlier run's data is removed); DiskError if FUSE is not
        usable here or a mount fails (the ones made are unmounted again)."""
        reason = unavailable()
        if reason is not None:
            raise DiskError(f"--nemesis powerloss needs a lazy file system (FUSE): {reason}")
        for name in self._names:
            _unmount_stale(self.data_dir(name))
        for stale in ("disks", "data", "lazyfs"):
            shutil.rmtree(self.out / stale, ignore_errors=True)
        work = self.out / "lazyfs"
        work.mkdir(parents=True)
        try:
            for name in self._names:
                mount = LazyMount(self.out / "disks" / name, self.data_dir(name), mode=self.mode,
                                  workdir=work)
                self.mounts[name] = mount
                mount.start()
        except RuntimeError as exc:
            self.close()
            raise DiskError(f"cannot mount a lazy file system: {exc}") from None

    def power_loss(self, names: Iterable[str]) -> None:
        for name in names:
            seed = self._rng.getrandbits(32)
            logger.info("power loss of %s (write-back seed %d)", name, seed)
            self.mounts[name].power_loss(seed)

    def close(self) -> None:
        """Unmount every disk (safe to call more than once)."""
        for mount in self.mounts.values():
            try:
                mount.stop()
            except (OSError, subprocess.SubprocessError) as exc:
                logger.warning("unmounting %s: %s", mount.mountpoint, exc)


def _unmount_stale(path: Path) -> None:
    """An earlier run killed before it could unmount leaves its mount: detach it."""
    if os.path.ismount(path):
        subprocess.run(["fusermount3", "-uz", str(path)], capture_output=True, check=False)


__all__ = ["DiskError", "LazyDisks"]

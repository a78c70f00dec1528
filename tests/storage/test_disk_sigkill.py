"""A real process appends and is killed with SIGKILL at random moments, with either fsync
policy (a process crash keeps the kernel's page cache, so fsync never loses nothing either).

After every kill the data directory is reopened: every entry the child reported as
acknowledged must be there, intact, unless a later acknowledged save replaced it or a
compaction covered it; the entries of the save that was in flight may or may not be there.
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from storage_helpers import payload

from raftly.core.types import ConfState
from raftly.storage import DiskStorage

KILLS = 25
CHILD = Path(__file__).with_name("sigkill_child.py")
REPO = Path(__file__).resolve().parents[2]


class Child:
    def __init__(self, directory: Path, seed: int, stderr_path: Path, fsync: str) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(CHILD.parent)]))
        self.stderr = stderr_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(directory), str(seed), fsync],
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
        )
        assert self.proc.stdout is not None
        self.fd = self.proc.stdout.fileno()
        self.buffer = b""
        self.lines: list[str] = []

    def read_until(self, deadline: float, *, stop_after_acks: int | None = None) -> None:
        """Collect output until ``deadline``, or until enough acks (or the child's death)."""
        while True:
            if stop_after_acks is not None and self.acks() >= stop_after_acks:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready and not self._read():
                return

    def _read(self) -> bool:
        chunk = os.read(self.fd, 65536)
        if not chunk:
            return False
        self.buffer += chunk
        *complete, self.buffer = self.buffer.split(b"\n")
        self.lines += [line.decode() for line in complete]
        return True

    def acks(self) -> int:
        return sum(line.startswith("ack ") for line in self.lines)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        while self._read():  # what was written to the pipe before the kill still counts
            pass
        self.proc.stdout.close()  # type: ignore[union-attr]
        self.stderr.close()


@pytest.mark.parametrize("fsync", ["always", "never"])
def test_sigkill_loses_nothing_acknowledged(tmp_path: Path, fsync: str) -> None:
    rng = random.Random(20240611)
    node = tmp_path / "node"
    bootstrap = DiskStorage(node)
    bootstrap.bootstrap(ConfState(frozenset({1})))
    bootstrap.close()
    stderr_path = tmp_path / "child.stderr"
    model: dict[int, int] = {}  # index -> term, as durable as the child has told us
    snapshot = 0
    started = time.monotonic()
    total_acks = overwrites = compactions = in_flight_at_kill = 0
    for kill in range(KILLS):
        child = Child(node, rng.randrange(1 << 30), stderr_path, fsync)
        try:
            # Wait for the first ack (startup done), then let it run a random while.
            child.read_until(time.monotonic() + 20, stop_after_acks=1)
            assert child.acks() >= 1, f"child made no progress:\n{stderr_path.read_text()}"
            child.read_until(time.monotonic() + rng.uniform(0, 0.15))
        finally:
            child.kill()
        assert child.proc.returncode == -signal.SIGKILL, stderr_path.read_text()

        in_flight: int | None = None
        for line in child.lines:
            word, *args = line.split()
            if word == "begin":
                in_flight = int(args[0])
            elif word == "ack":
                first, last, term = map(int, args)
                overwrites += first in model
                for index in [i for i in model if i >= first]:
                    del model[index]
                model.update((i, term) for i in range(first, last + 1))
                in_flight = None
                total_acks += 1
            elif word == "snap":
                snapshot = max(snapshot, int(args[0]))
                compactions += 1
        in_flight_at_kill += in_flight is not None

        storage = DiskStorage(node)
        state = storage.load()
        storage.close()
        assert state.snapshot.index >= snapshot
        held = {e.index: e for e in state.entries}
        for entry in state.entries:
            assert entry.data == payload(entry.index, entry.term, len(entry.data)), entry
        for index, term in model.items():
            if index <= state.snapshot.index or (in_flight is not None and index >= in_flight):
                continue
            assert index in held, f"kill {kill}: acknowledged entry {index} lost"
            assert held[index].term == term, f"kill {kill}: entry {index} has the wrong term"
        assert state.hard_state.commit <= max(state.snapshot.index, *held, 0)
        # The next child starts from what is on disk, in-flight leftovers included.
        model = {e.index: e.term for e in state.entries}
        snapshot = state.snapshot.index
    # The run exercised what it is meant to: overwrites, compactions, kills inside a save.
    assert total_acks >= KILLS and overwrites and compactions and in_flight_at_kill, (
        total_acks,
        overwrites,
        compactions,
        in_flight_at_kill,
    )
    assert time.monotonic() - started < 60

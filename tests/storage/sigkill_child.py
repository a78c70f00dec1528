"""Child process of the SIGKILL test: appends to a DiskStorage forever, reporting as it goes.

Usage: ``python sigkill_child.py DATA_DIR SEED FSYNC``. Lines on stdout, each flushed:

- ``begin FIRST`` just before a save whose entries start at FIRST (it may truncate from there);
- ``ack FIRST LAST TERM`` once that save returned (so entries FIRST..LAST are acknowledged);
- ``snap INDEX`` once a compaction up to INDEX returned.

Entry data is ``storage_helpers.payload(index, term)`` so the parent can check every byte.
"""

from __future__ import annotations

import random
import sys

from storage_helpers import payload

from raftly.core.types import Entry, HardState, SnapshotMeta
from raftly.storage import DiskStorage


def main(directory: str, seed: int, fsync: str) -> None:
    rng = random.Random(seed)
    storage = DiskStorage(directory, fsync=fsync, segment_size=4096)  # type: ignore[arg-type]
    state = storage.load()
    term = max([state.hard_state.term, 1] + [e.term for e in state.entries[-1:]])
    commit = state.hard_state.commit
    snap = state.snapshot.index
    last = storage.last_index
    while True:
        roll = rng.random()
        if roll < 0.05 and commit > snap:
            storage.compact(SnapshotMeta(commit, storage.term(commit), state.snapshot.conf))
            snap = commit
            print(f"snap {snap}", flush=True)
            continue
        if roll < 0.15 and last > commit + 1:
            # A follower overwriting a deposed leader's suffix, never below the commit.
            first = rng.randint(max(commit, snap) + 1, last)
            term += 1
        else:
            first = last + 1
        count = rng.choice([1, 1, 2, 5, 16, 40])
        size = rng.choice([0, 10, 100, 300])
        entries = [Entry(i, term, payload(i, term, size)) for i in range(first, first + count)]
        last = first + count - 1
        if rng.random() < 0.5:
            commit = max(commit, min(first - 1, last - 3))
        print(f"begin {first}", flush=True)
        storage.save(HardState(term, 1, commit), entries)
        print(f"ack {first} {last} {term}", flush=True)


if __name__ == "__main__":
    # The parent bootstraps the directory; the child only ever opens it.
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])

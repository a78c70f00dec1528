"""Storage on a file system that loses power (``raftly.testing.lazyfs``).

With fsync always, nothing saved is lost across a power loss, in either mode of the lazy file
system. With fsync never, recent writes may be lost but the data directory always opens again,
with the term and vote it last recorded and a log that is a prefix of what was saved.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from storage_helpers import ents

from raftly.core.types import ConfState, HardState, SnapshotMeta
from raftly.kv.identity import NodeIdentity, check_identity, claim_data_dir
from raftly.storage import DiskStorage
from raftly.storage.snapshots import SnapshotStore

CONF = ConfState(frozenset({1, 2, 3}))
IDENTITY = NodeIdentity("test-cluster", "n1", 1, (("n1", 1), ("n2", 2), ("n3", 3)))


def write_snapshot(store: SnapshotStore, meta: SnapshotMeta, data: bytes) -> None:
    with store.create(meta, frame_size=64) as writer:
        writer.write(data)
        writer.commit()


def read_snapshot(store: SnapshotStore, meta: SnapshotMeta) -> bytes:
    with store.open(meta) as reader:
        return reader.read()


@pytest.mark.parametrize("mode", ["lazy", "strict"])
def test_fsync_always_loses_nothing_saved_across_a_power_loss(lazyfs, mode):
    lazy = lazyfs(mode)
    data = Path(lazy.mountpoint) / "node"
    storage = DiskStorage(data, segment_size=300)
    storage.bootstrap(CONF)
    saved = ents(1, 10, 1) + ents(11, 25, 2)
    storage.save(HardState(1, 1, 0), ents(1, 10, 1))
    storage.save(HardState(2, 3, 10), ents(11, 25, 2))
    storage.compact(SnapshotMeta(5, 1, CONF))
    storage.abandon()
    lazy.power_loss()
    reopened = DiskStorage(data, segment_size=300)
    state = reopened.load()
    assert (state.hard_state.term, state.hard_state.vote) == (2, 3)
    assert state.snapshot == SnapshotMeta(5, 1, CONF)
    assert state.entries == saved[5:]
    reopened.close()


@pytest.mark.parametrize("mode", ["lazy", "strict"])
def test_a_committed_snapshot_survives_a_power_loss(lazyfs, mode):
    lazy = lazyfs(mode)
    data = Path(lazy.mountpoint) / "node"
    store = SnapshotStore(data, keep=2)
    for index in (10, 20, 30):
        write_snapshot(store, SnapshotMeta(index, 1, CONF), bytes([index]) * 500)
    lazy.power_loss()
    reopened = SnapshotStore(data, keep=2)
    assert [m.index for m in reopened.metas()] == [30, 20]
    assert reopened.newest() == SnapshotMeta(30, 1, CONF)
    assert read_snapshot(reopened, SnapshotMeta(30, 1, CONF)) == bytes([30]) * 500


@pytest.mark.parametrize("mode", ["lazy", "strict"])
def test_fsync_never_always_reopens_after_a_power_loss(lazyfs, mode):
    """Repeated write / power loss / reopen cycles, with snapshots, compactions, elections and
    segment rolls: every reopen succeeds, keeps the last term and vote, and holds a prefix of
    the log that was saved (what fsync never may lose is recent entries, nothing else)."""
    lazy = lazyfs(mode)
    data = Path(lazy.mountpoint) / "node"
    rng = random.Random(17)
    storage = DiskStorage(data, fsync="never", segment_size=400)
    storage.bootstrap(CONF)
    claim_data_dir(data, IDENTITY, "the test")
    lost = 0
    term, vote = 1, 1
    log: dict[int, tuple[int, bytes]] = {}
    for cycle in range(12):
        store = SnapshotStore(data, fsync="never")
        for _ in range(rng.randint(1, 4)):
            if rng.random() < 0.4:
                term, vote = term + 1, rng.choice([1, 2, 3])
            # Now and then a conflicting suffix is replaced, never a committed entry.
            first = max(storage.hard_state.commit + 1, storage.last_index + 1 - rng.randint(0, 2))
            batch = ents(first, first + rng.randint(0, 6), term)
            storage.save(HardState(term, vote, storage.hard_state.commit), batch)
            for e in batch:
                log[e.index] = (e.term, e.data)
            for stale in [i for i in log if i > batch[-1].index]:
                del log[stale]
            if rng.random() < 0.5:
                storage.save(HardState(term, vote, storage.last_index), [])
        if rng.random() < 0.5 and storage.last_index > storage.snapshot.index:
            at = rng.randint(storage.snapshot.index + 1, storage.last_index)
            meta = SnapshotMeta(at, storage.term(at), CONF)
            write_snapshot(store, meta, f"state at {at}".encode())
            storage.compact(meta)
        storage.abandon()
        lazy.power_loss()

        storage = DiskStorage(data, fsync="never", segment_size=400)
        state = storage.load()  # raises if the directory does not open
        assert check_identity(data, IDENTITY, "the test") == IDENTITY
        lost += max(log) - storage.last_index if log else 0
        assert (state.hard_state.term, state.hard_state.vote) == (term, vote), cycle
        assert state.hard_state.commit <= storage.last_index
        for e in state.entries:
            assert (e.term, e.data) == log[e.index], (cycle, e.index)
        if state.snapshot.index:
            assert SnapshotStore(data, fsync="never").newest() == state.snapshot
        # What was lost is lost: carry on from what the disk holds, as a restarted node would.
        log = {i: v for i, v in log.items() if i <= storage.last_index}
        term, vote = state.hard_state.term, state.hard_state.vote
    storage.close()
    assert lost > 0  # the power losses did bite: fsync never lost recent entries

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
from raftly.storage import DiskStorage, StorageError
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


def power_loss_cycles(lazy, fsync: str, *, partial: bool, cycles: int = 12) -> int:
    """Repeated write / power loss / reopen cycles, with snapshots, compactions, elections,
    conflicting suffixes replaced and segment rolls. Every reopen must succeed, keep the last
    term and vote, and hold a prefix of the log that was saved. ``partial``: each power loss
    writes back a random part of the unsynced data first (seeded). Returns how many saved
    entries were lost in all."""
    data = Path(lazy.mountpoint) / "node"
    rng = random.Random(17)
    storage = DiskStorage(data, fsync=fsync, segment_size=400)
    storage.bootstrap(CONF)
    claim_data_dir(data, IDENTITY, "the test")
    lost = 0
    term, vote = 1, 1
    log: dict[int, tuple[int, bytes]] = {}
    for cycle in range(cycles):
        store = SnapshotStore(data, fsync=fsync)
        for _ in range(rng.randint(1, 4)):
            if rng.random() < 0.4:
                term, vote = term + 1, rng.choice([1, 2, 3])
            # Now and then a conflicting suffix is replaced, never a committed (or snapshotted)
            # entry.
            first = max(storage.hard_state.commit + 1, storage.snapshot.index + 1,
                        storage.last_index + 1 - rng.randint(0, 2))
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
        seed = rng.randrange(1 << 30) if partial else None
        lazy.power_loss(seed)

        storage = DiskStorage(data, fsync=fsync, segment_size=400)
        state = storage.load()  # raises if the directory does not open
        assert check_identity(data, IDENTITY, "the test") == IDENTITY
        lost += max(log) - storage.last_index if log else 0
        assert (state.hard_state.term, state.hard_state.vote) == (term, vote), (cycle, seed)
        assert state.hard_state.commit <= storage.last_index
        for e in state.entries:
            assert (e.term, e.data) == log[e.index], (cycle, seed, e.index)
        if state.snapshot.index:
            assert SnapshotStore(data, fsync=fsync).newest() == state.snapshot
        # What was lost is lost: carry on from what the disk holds, as a restarted node would.
        log = {i: v for i, v in log.items() if i <= storage.last_index}
        term, vote = state.hard_state.term, state.hard_state.vote
    storage.close()
    return lost


@pytest.mark.parametrize("partial", [False, True], ids=["drop-all", "partial-writeback"])
@pytest.mark.parametrize("mode", ["lazy", "strict"])
def test_fsync_never_always_reopens_after_a_power_loss(lazyfs, mode, partial):
    """What fsync never may lose is recent entries, nothing else (``power_loss_cycles``)."""
    lost = power_loss_cycles(lazyfs(mode), "never", partial=partial)
    assert lost > 0  # the power losses did bite: fsync never lost recent entries


@pytest.mark.parametrize("mode", ["lazy", "strict"])
def test_fsync_always_loses_nothing_saved_across_partial_write_back_power_losses(lazyfs, mode):
    """Torn tails, new pages over an uncommitted truncation: nothing saved is ever lost."""
    assert power_loss_cycles(lazyfs(mode), "always", partial=True, cycles=20) == 0


def dying_flush(real_flush, crash_at: int):
    """A flush that raises, as if the machine died, instead of making its ``crash_at``-th
    call (and every later one)."""
    calls = iter(range(1, 1 << 30))

    def flush(fd: int) -> None:
        if next(calls) >= crash_at:
            raise OSError("the power went")
        real_flush(fd)

    return flush


@pytest.mark.parametrize("crash_at", [1, 2])
def test_fsync_always_reopens_after_a_power_loss_in_the_middle_of_a_conflicting_save(
    lazyfs, monkeypatch, crash_at
):
    """The machine dies at a flush of a save that replaces a suffix (the ``crash_at``-th
    flush never happens), after the kernel wrote back part of what it held: the directory
    opens, with the acknowledged prefix and, after it, old or new entries but never a mix."""
    from raftly.storage.disk import fsio

    lazy = lazyfs("lazy")
    real_flush = fsio._flush_file
    for seed in range(16):
        data = Path(lazy.mountpoint) / f"node{seed}"
        storage = DiskStorage(data, segment_size=1 << 20)
        storage.bootstrap(CONF)
        storage.save(HardState(1, 1, 0), ents(1, 60, 1, size=100))
        monkeypatch.setattr(fsio, "_flush_file", dying_flush(real_flush, crash_at))
        with pytest.raises(StorageError):
            storage.save(HardState(2, 2, 0), ents(20, 60, 2, size=100))
        monkeypatch.setattr(fsio, "_flush_file", real_flush)
        storage.abandon()
        lazy.power_loss(seed)
        reopened = DiskStorage(data, segment_size=1 << 20)
        entries = reopened.load().entries  # raises if old records follow new ones
        assert entries[:19] == ents(1, 19, 1, size=100), seed
        assert entries[19:] in (ents(20, len(entries), 1, size=100),
                                ents(20, len(entries), 2, size=100)), seed
        reopened.close()


def test_a_data_dir_made_by_someone_else_is_made_durable_when_opened(lazyfs):
    """``mkdir -p`` (or a crash before the parent's flush) left the directory unrecorded."""
    lazy = lazyfs("strict")
    data = Path(lazy.mountpoint) / "node"
    data.mkdir()  # its parent never fsynced
    storage = DiskStorage(data)
    storage.bootstrap(CONF)
    storage.save(HardState(1, 1, 0), ents(1, 3, 1))
    storage.abandon()
    lazy.power_loss()
    reopened = DiskStorage(data)
    assert reopened.load().entries == ents(1, 3, 1)
    reopened.close()

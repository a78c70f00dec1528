"""DiskStorage beyond the shared contract: segments, recovery from crashes, corruption, the lock,
the fsync policy and failing disks."""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from storage_helpers import ents, flip_bit

from raftly.core.types import ConfState, Entry, HardState, SnapshotMeta
from raftly.storage import DiskStorage, StorageError
from raftly.storage.disk import segment, state
from raftly.storage.disk.fsio import Syncer

CONF = ConfState(frozenset({1}))


def segments(path: Path) -> list[Path]:
    return sorted((path / "wal").glob("*.wal"))


@pytest.fixture
def node(tmp_path: Path) -> Path:
    return tmp_path / "node"


def open_disk(path: Path, **options: object) -> DiskStorage:
    options.setdefault("segment_size", 256)
    return DiskStorage(path, **options)  # type: ignore[arg-type]


@pytest.fixture
def rolled(node: Path) -> Iterator[list[Entry]]:
    """A closed node holding entries 1..30 over several small segments, commit 30."""
    written = ents(1, 30, 1, size=20)
    s = open_disk(node)
    s.bootstrap(CONF)
    for i in range(0, 30, 5):
        s.save(HardState(1, 1, written[i + 4].index), written[i : i + 5])
    s.close()
    yield written


def corruption(path: Path) -> str:
    """The message the storage at ``path`` refuses to start with."""
    s = open_disk(path)
    try:
        with pytest.raises(StorageError) as info:
            s.load()
    finally:
        s.close()
    message = str(info.value)
    assert "\n" not in message
    return message


# -- segments ------------------------------------------------------------------------------


def test_segments_roll_and_are_named_after_their_first_index(
    node: Path, rolled: list[Entry]
) -> None:
    files = segments(node)
    assert len(files) > 3
    firsts = [segment.parse_segment_name(f.name) for f in files]
    assert firsts[0] == 1
    for f in files:
        assert f.stat().st_size <= 256
    s = open_disk(node)
    assert s.load().entries == rolled
    assert s.entries(3, 27) == rolled[2:26]
    assert s.term(30) == 1 and s.term(0) == 0
    for first in firsts:
        assert s.entries(first, first + 1)[0].index == first  # type: ignore[operator]
    with pytest.raises(StorageError):
        s.entries(0, 3)
    with pytest.raises(StorageError):
        s.entries(29, 32)
    s.close()


def test_an_entry_larger_than_a_segment_gets_one_of_its_own(node: Path) -> None:
    s = open_disk(node, segment_size=64)
    s.bootstrap(CONF)
    big = ents(1, 3, 1, size=500)
    s.save(None, big)
    assert len(segments(node)) == 3
    s.close()
    assert open_disk(node, segment_size=64).load().entries == big


def test_compaction_removes_whole_segments_only(node: Path, rolled: list[Entry]) -> None:
    before = segments(node)
    s = open_disk(node)
    s.compact(SnapshotMeta(12, 1, CONF))
    after = segments(node)
    firsts = [segment.parse_segment_name(f.name) or 0 for f in after]
    assert len(after) < len(before)
    assert firsts[0] <= 13 < (firsts[1] if len(firsts) > 1 else 99)
    assert s.load().entries == rolled[12:]
    assert s.first_index == 13
    assert s.term(12) == 1
    s.close()


def test_an_interrupted_compaction_is_finished_on_open(node: Path, rolled: list[Entry]) -> None:
    # As if the process died after the snapshot metadata was written, before segments went.
    state.write_snapshot_meta(str(node), SnapshotMeta(17, 1, CONF), _syncer())
    s = open_disk(node)
    assert s.load().entries == rolled[17:]
    assert (segment.parse_segment_name(segments(node)[0].name) or 99) <= 18
    s.close()


def test_an_interrupted_compaction_of_a_disagreeing_log_drops_it(
    node: Path, rolled: list[Entry]
) -> None:
    state.write_snapshot_meta(str(node), SnapshotMeta(17, 5, CONF), _syncer())
    state.write_hard_state(str(node), HardState(5, None, 17), _syncer())
    s = open_disk(node)
    assert s.load().entries == []
    assert segments(node) == []
    s.close()


def _syncer() -> Syncer:
    return Syncer("never")


# -- crash points --------------------------------------------------------------------------


def test_every_crash_point_of_the_last_segment_recovers_a_prefix(node: Path) -> None:
    s = open_disk(node, segment_size=400)
    s.bootstrap(CONF)
    written: list[Entry] = []
    acked_at: list[tuple[str, int, int]] = []  # (last segment, its size, entries acked) per save
    for first, count in [(1, 3), (4, 1), (5, 4), (9, 1), (10, 2), (12, 1), (13, 3), (16, 1)]:
        batch = ents(first, first + count - 1, 1, size=first * 3 % 17)
        s.save(HardState(1, 1, 0), batch)
        written += batch
        last = segments(node)[-1]
        acked_at.append((last.name, last.stat().st_size, len(written)))
    s.save(HardState(1, 1, 3), [])
    s.close()
    last_seg = segments(node)[-1]
    original = last_seg.read_bytes()
    in_earlier = segment.parse_segment_name(last_seg.name) - 1  # type: ignore[operator]
    assert in_earlier >= 3  # the commit index survives every cut below
    assert len(segments(node)) >= 2
    assert sum(name == last_seg.name for name, _, _ in acked_at) >= 3
    for cut in range(len(original) + 1):
        last_seg.write_bytes(original[:cut])
        s = open_disk(node, segment_size=400)
        got = s.load().entries
        s.close()
        assert got == written[: len(got)], f"cut at {cut}: not a prefix"
        # Every save whose bytes were all on disk at the crash is still there.
        acked = max(
            [n for name, size, n in acked_at if name == last_seg.name and size <= cut],
            default=in_earlier,
        )
        assert len(got) >= acked, f"cut at {cut}: lost acknowledged entries"
        if cut == len(original):
            assert got == written
    # After a cut, the recovered log takes appends and keeps them.
    last_seg.write_bytes(original[: len(original) - 5])
    s = open_disk(node, segment_size=400)
    got = s.load().entries
    s.save(None, ents(len(got) + 1, len(got) + 2, 2))
    s.close()
    s = open_disk(node, segment_size=400)
    assert s.load().entries == got + ents(len(got) + 1, len(got) + 2, 2)
    s.close()


def test_a_new_segment_with_a_torn_header_is_dropped(node: Path, rolled: list[Entry]) -> None:
    (node / "wal" / segment.segment_name(31)).write_bytes(segment.MAGIC[:5])
    s = open_disk(node)
    assert s.load().entries == rolled
    s.save(None, ents(31, 31, 1))
    s.close()
    assert open_disk(node).load().entries[-1].index == 31


@pytest.mark.parametrize("written", [0, 5, 8])
def test_a_new_segment_whose_size_outran_its_header_is_dropped(
    node: Path, rolled: list[Entry], written: int
) -> None:
    """A power loss can keep a new file's size but not all of its data: a zero-filled tail."""
    header = segment.encode_header(31)[:written]
    record = segment.encode_record(ents(31, 31, 1)[0])
    (node / "wal" / segment.segment_name(31)).write_bytes(header.ljust(300, b"\0"))
    s = open_disk(node)
    assert s.load().entries == rolled
    s.save(None, ents(31, 31, 1))
    s.close()
    s = open_disk(node)
    assert s.load().entries[-1].index == 31
    s.close()
    # The same zeros before an intact record: written whole, damaged since.
    (node / "wal" / segment.segment_name(31)).write_bytes(header.ljust(16, b"\0") + record)
    with pytest.raises(StorageError, match="corrupt at byte offset 0"):
        open_disk(node).load()


# -- corruption ----------------------------------------------------------------------------


def test_every_bit_flip_in_a_sealed_segment_is_refused(node: Path, rolled: list[Entry]) -> None:
    sealed = segments(node)[1]
    size = sealed.stat().st_size
    pristine = node.parent / "pristine"
    shutil.copytree(node, pristine)
    for offset in range(size):
        flip_bit(sealed, offset, bit=offset % 8)
        message = corruption(node)
        assert str(sealed) in message
        at = int(re.search(r"byte offset (\d+)", message).group(1))  # type: ignore[union-attr]
        assert at <= offset, message
        shutil.copyfile(pristine / "wal" / sealed.name, sealed)
    assert open_disk(node).load().entries == rolled


@pytest.mark.parametrize("name", [state.HARD_STATE_NAME, state.SNAPSHOT_NAME])
def test_every_bit_flip_in_a_state_file_is_refused(
    node: Path, rolled: list[Entry], name: str
) -> None:
    target = node / name
    pristine = target.read_bytes()
    for offset in range(len(pristine)):
        flip_bit(target, offset, bit=(offset + 3) % 8)
        message = corruption(node)
        assert str(target) in message and "byte offset" in message, message
        target.write_bytes(pristine)
    target.write_bytes(pristine[:-1])
    assert "cut short" in corruption(node) or "length" in corruption(node)
    target.unlink()
    assert "missing" in corruption(node)


def test_a_missing_middle_segment_is_a_gap(node: Path, rolled: list[Entry]) -> None:
    files = segments(node)
    files[2].unlink()
    message = corruption(node)
    assert str(files[3]) in message and "byte offset 0" in message


def test_a_bad_record_in_the_last_segment_below_the_commit_is_refused(
    node: Path, rolled: list[Entry]
) -> None:
    # A torn tail is cut, but never below what the hard state says was committed.
    last = segments(node)[-1]
    records = sorted(int(o) for o in segment.scan(last.read_bytes(), 26).offsets)
    flip_bit(last, records[-2] + 12)  # the last record: no intact record follows it
    message = corruption(node)
    assert "commit index 30" in message
    assert f"{last}: bad record at byte offset {records[-2]}" in message


def test_a_bad_record_followed_by_an_intact_one_is_corruption_even_past_the_commit(
    node: Path,
) -> None:
    s = open_disk(node, segment_size=1 << 20)
    s.bootstrap(CONF)
    s.save(HardState(1, None, 0), ents(1, 5, 1))  # commit 0 on disk: nothing vouches for them
    s.close()
    last = segments(node)[-1]
    flip_bit(last, segment.HEADER_SIZE + 12)  # inside entry 1, entries 2..5 intact
    message = corruption(node)
    assert f"{last}: corrupt at byte offset {segment.HEADER_SIZE}" in message
    assert "an intact record follows" in message


def test_a_damaged_length_field_followed_by_intact_records_is_corruption(node: Path) -> None:
    s = open_disk(node, segment_size=1 << 20)
    s.bootstrap(CONF)
    s.save(HardState(1, None, 0), ents(1, 5, 1))  # acknowledged, commit not yet on disk
    s.close()
    last = segments(node)[-1]
    flip_bit(last, segment.HEADER_SIZE + 1)  # entry 1's length now runs past the data
    message = corruption(node)
    assert f"{last}: corrupt at byte offset {segment.HEADER_SIZE}" in message
    assert "an intact record follows" in message


def test_a_zeroed_sector_with_intact_records_after_it_is_a_torn_write(node: Path) -> None:
    s = open_disk(node, segment_size=1 << 20)
    s.bootstrap(CONF)
    s.save(HardState(1, None, 0), ents(1, 2, 1))
    s.save(None, [Entry(3, 1, bytes(range(256)) * 8), *ents(4, 5, 1)])
    s.close()
    last = segments(node)[-1]
    data = bytearray(last.read_bytes())
    record_3 = sorted(int(o) for o in segment.scan(bytes(data), 1).offsets)[2]
    aligned = -(-(record_3 + 8) // 512) * 512
    data[aligned : aligned + 512] = bytes(512)  # a block of entry 3 the crash never wrote
    last.write_bytes(bytes(data))
    s = open_disk(node, segment_size=1 << 20)
    assert [e.index for e in s.load().entries] == [1, 2]
    s.close()


def test_bad_record_in_the_last_segment_is_cut_with_a_warning(
    node: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = open_disk(node)
    s.bootstrap(CONF)
    s.save(HardState(1, None, 1), ents(1, 3, 1))
    s.close()
    last = segments(node)[-1]
    flip_bit(last, last.stat().st_size - 1)
    with caplog.at_level(logging.WARNING, logger="raftly.storage.disk"):
        s = open_disk(node)
    assert s.load().entries == ents(1, 2, 1)
    assert any(
        "torn tail" in r.getMessage() and str(last) in r.getMessage() for r in caplog.records
    )
    s.close()


def test_corruption_leaves_the_files_untouched(node: Path, rolled: list[Entry]) -> None:
    files = segments(node)
    flip_bit(files[0], 40)
    before = {f: f.read_bytes() for f in files}
    corruption(node)
    assert {f: f.read_bytes() for f in segments(node)} == before


# -- lock, policy, failures ----------------------------------------------------------------


def test_the_lock_prevents_a_second_open(node: Path) -> None:
    s = open_disk(node)
    with pytest.raises(StorageError, match="locked"):
        open_disk(node)
    s.close()
    open_disk(node).close()


def test_a_closed_storage_refuses_use(node: Path) -> None:
    s = open_disk(node)
    s.bootstrap(CONF)
    s.close()
    s.close()
    with pytest.raises(StorageError, match="closed"):
        s.save(None, ents(1, 1, 1))


def test_startup_logs_the_fsync_policy(node: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="raftly.storage.disk"):
        open_disk(node, fsync="never").close()
        open_disk(node).close()
    lines = [r.getMessage() for r in caplog.records]
    assert any("fsync=never" in line for line in lines)
    assert any("fsync=always" in line for line in lines)
    with pytest.raises(ValueError, match="fsync"):
        open_disk(node, fsync="sometimes")


def test_disk_full_mid_write_poisons_and_leaves_a_clean_log(
    node: Path, rolled: list[Entry], monkeypatch: pytest.MonkeyPatch
) -> None:
    s = open_disk(node)
    real_pwrite = os.pwrite

    def half_then_full(fd: int, data: bytes, offset: int) -> int:
        if len(data) > 8:
            real_pwrite(fd, bytes(data)[: len(data) // 2], offset)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", half_then_full)
    with pytest.raises(StorageError, match="No space left"):
        s.save(HardState(1, 1, 30), ents(31, 33, 1, size=20))
    monkeypatch.setattr(os, "pwrite", real_pwrite)
    # Poisoned: nothing more is acknowledged, even though the disk "works" again.
    with pytest.raises(StorageError, match="refuses"):
        s.save(None, ents(31, 31, 1))
    with pytest.raises(StorageError, match="refuses"):
        s.load()
    s.close()
    reopened = open_disk(node)
    assert reopened.load().entries == rolled
    reopened.save(None, ents(31, 31, 2))
    reopened.close()


def test_a_failed_fsync_poisons(node: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = open_disk(node)
    s.bootstrap(CONF)

    def eio(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", eio)
    monkeypatch.setattr(os, "fsync", eio)
    with pytest.raises(StorageError, match="Input/output"):
        s.save(HardState(1, 1, 0), ents(1, 1, 1))
    monkeypatch.undo()
    with pytest.raises(StorageError, match="refuses"):
        s.save(HardState(1, 1, 0), [])
    s.close()


def test_seed_starts_an_empty_storage_at_a_snapshot_with_its_hard_state(node: Path) -> None:
    """A node restored from a backup: the log starts after the seed, and a restart reads
    exactly that back; entries then follow it."""
    meta = SnapshotMeta(40, 3, ConfState(frozenset({1, 2, 3})))
    s = open_disk(node)
    s.seed(meta, HardState(3, None, 40))
    assert (s.first_index, s.last_index, s.term(40)) == (41, 40, 3)
    s.close()
    s = open_disk(node)
    loaded = s.load()
    assert (loaded.hard_state, loaded.snapshot, loaded.entries) == (HardState(3, None, 40),
                                                                   meta, [])
    s.save(HardState(4, 2, 40), ents(41, 42, 4))
    assert s.last_index == 42
    with pytest.raises(StorageError, match="already holds state"):
        s.seed(meta, HardState(3, None, 40))
    s.close()


@pytest.mark.parametrize("hard_state", [HardState(2, None, 40), HardState(3, None, 39),
                                        HardState(3, None, 41)])
def test_seed_refuses_a_hard_state_below_the_snapshots_term_or_not_committed_there(
    node: Path, hard_state: HardState,
) -> None:
    s = open_disk(node)
    with pytest.raises(ValueError, match="seed at 40/3"):
        s.seed(SnapshotMeta(40, 3, CONF), hard_state)
    s.close()
    assert not state.is_bootstrapped(str(node))


def test_a_seed_cut_short_before_its_hard_state_refuses_to_open(node: Path) -> None:
    """The snapshot metadata is written first: without the hard state after it the directory
    neither opens as an empty node nor with a term below its log's."""
    s = open_disk(node)
    s.seed(SnapshotMeta(40, 3, CONF), HardState(3, None, 40))
    s.close()
    (node / state.HARD_STATE_NAME).unlink()
    s = open_disk(node)
    assert s.bootstrapped
    with pytest.raises(StorageError, match="hardstate"):
        s.load()
    s.close()


@pytest.mark.parametrize("fsync", ["always", "never"])
def test_a_log_truncation_is_flushed_before_entries_are_written_over_it(
    node: Path, fsync: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Else a crash may keep the new records but not the cut: old records after new ones."""
    from raftly.storage.disk import fsio, log

    storage = open_disk(node, fsync=fsync, segment_size=1 << 20)
    storage.bootstrap(ConfState(frozenset({1, 2, 3})))
    storage.save(HardState(1, 1, 0), ents(1, 30, 1, size=100))
    events: list[tuple[str, int]] = []
    real_truncate, real_flush, real_write = os.ftruncate, fsio._flush_file, log.pwrite_all
    monkeypatch.setattr(os, "ftruncate",
                        lambda fd, n: (events.append(("cut", fd)), real_truncate(fd, n))[1])
    monkeypatch.setattr(fsio, "_flush_file",
                        lambda fd: (events.append(("flush", fd)), real_flush(fd))[1])
    monkeypatch.setattr(log, "pwrite_all",
                        lambda fd, *a: (events.append(("write", fd)), real_write(fd, *a))[1])
    storage.save(HardState(2, 2, 0), ents(20, 40, 2, size=100))  # conflict from 20
    storage.close()
    cut = events.index(next(e for e in events if e[0] == "cut"))
    fd = events[cut][1]
    after = [kind for kind, f in events[cut + 1 :] if f == fd]
    assert after[:2] == ["flush", "write"], events

"""SnapshotStore: the file format, crash points of a write, damage, fallback, transfers, pruning,
and the log's compaction around a snapshot."""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import struct
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conf_strategies import conf_states
from hypothesis import given, settings
from storage_helpers import ents, flip_bit

from raftly.core.types import ConfState, HardState, Member, SnapshotMeta
from raftly.storage import DiskStorage, StorageError
from raftly.storage.snapshots import SNAPSHOT_DIR, SnapshotStore, verify

CONF = ConfState(frozenset({1, 2, 3}))
FRAME = 64
"""A small frame size, so a few hundred bytes make several frames."""
HEADER = 16 + 20 + len(CONF.encode())
"""A snapshot file's header: the frame, index, term, conf length and conf of ``meta``."""


def meta(index: int, term: int = 1) -> SnapshotMeta:
    return SnapshotMeta(index, term, CONF)


def payload(index: int, size: int = 300) -> bytes:
    head = f"<state at {index}>".encode()
    return (head * (size // len(head) + 1))[:size]


def write(store: SnapshotStore, m: SnapshotMeta, data: bytes, pieces: int = 7) -> None:
    writer = store.create(m, frame_size=FRAME)
    step = max(1, len(data) // pieces)
    for lo in range(0, len(data), step):
        assert writer.write(data[lo : lo + step]) == len(data[lo : lo + step])
    writer.commit()


def read_all(store: SnapshotStore, m: SnapshotMeta) -> bytes:
    with store.open(m) as reader:
        return reader.read()


def snap_files(root: Path) -> list[str]:
    return sorted(os.listdir(root / SNAPSHOT_DIR))


def corrupt_offset(message: str, path: str) -> int:
    match = re.match(rf"^{re.escape(path)}: corrupt at byte offset (\d+): ", message)
    assert match is not None, message
    return int(match.group(1))


@pytest.fixture
def store(tmp_path: Path) -> SnapshotStore:
    return SnapshotStore(tmp_path, keep=2)


# -- writing and reading ---------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, FRAME - 1, FRAME, FRAME + 1, 10 * FRAME, 1000])
@pytest.mark.parametrize("pieces", [1, 3, 1000])
def test_payload_round_trips_whatever_the_write_sizes(
    store: SnapshotStore, size: int, pieces: int
) -> None:
    data = payload(5, size)
    write(store, meta(5), data, pieces)
    assert read_all(store, meta(5)) == data
    with store.open(meta(5)) as reader:
        got = b""
        for n in (1, 0, 7, FRAME, 3 * FRAME + 5):
            got += reader.read(n)
        got += reader.read(2)
        while chunk := reader.read(13):
            got += chunk
    assert got == data
    assert store.metas() == [meta(5)]
    assert store.size(meta(5)) == os.path.getsize(store.path(meta(5)))
    assert store.total_bytes() == store.size(meta(5))


def test_large_writes_are_framed_without_a_frame_larger_than_asked(store: SnapshotStore) -> None:
    data = os.urandom(5 * FRAME + 3)
    writer = store.create(meta(9), frame_size=FRAME)
    writer.write(b"x")
    writer.write(memoryview(data))
    writer.commit()
    assert read_all(store, meta(9)) == b"x" + data
    # 5 full frames, 1 of 4 bytes: header + 6 * 8-byte frame heads + payload + trailer.
    assert store.size(meta(9)) == HEADER + 6 * 8 + len(data) + 1 + 28


def test_a_writer_in_a_worker_thread_commits_while_the_store_is_read(store: SnapshotStore) -> None:
    write(store, meta(3), payload(3))
    data = payload(8, 50_000)
    errors: list[BaseException] = []

    def persist() -> None:
        try:
            write(store, meta(8), data, pieces=500)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    worker = threading.Thread(target=persist)
    worker.start()
    while worker.is_alive():
        assert meta(3) in store.metas()
        assert read_all(store, meta(3)) == payload(3)
    worker.join()
    assert errors == []
    assert store.metas() == [meta(8), meta(3)]
    assert read_all(store, meta(8)) == data


def test_a_writer_is_done_after_commit_or_abort(store: SnapshotStore, tmp_path: Path) -> None:
    writer = store.create(meta(4))
    writer.write(b"abc")
    writer.commit()
    with pytest.raises(StorageError, match="already committed or aborted"):
        writer.write(b"more")
    writer.abort()  # harmless after a commit
    assert store.metas() == [meta(4)]
    with store.create(meta(6)) as unfinished:
        unfinished.write(b"abc")
    # Leaving the block without commit aborted it: no file, no snapshot.
    assert snap_files(tmp_path) == [os.path.basename(store.path(meta(4)))]
    with pytest.raises(StorageError, match="already committed or aborted"):
        unfinished.commit()


def test_open_of_a_missing_or_different_snapshot_raises(store: SnapshotStore) -> None:
    write(store, meta(4, 2), b"abc")
    with pytest.raises(StorageError, match="no such snapshot"):
        store.open(meta(5, 2))
    with pytest.raises(StorageError, match="corrupt at byte offset 0: header holds"):
        store.open(SnapshotMeta(4, 2, ConfState(frozenset({1}))))


def test_metas_are_newest_first_and_keep_prunes_the_oldest(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, keep=3)
    for index in (10, 30, 20, 40):
        write(store, meta(index), payload(index))
    assert store.metas() == [meta(40), meta(30), meta(20)]
    write(store, meta(5), payload(5))  # older than all it keeps: pruned at once
    assert store.metas() == [meta(40), meta(30), meta(20)]
    assert len(snap_files(tmp_path)) == 3
    with pytest.raises(ValueError, match="keep"):
        SnapshotStore(tmp_path, keep=0)


def test_temporary_files_are_removed_at_open_and_never_listed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SnapshotStore(tmp_path)
    write(store, meta(3), payload(3))
    abandoned = store.create(meta(7))
    abandoned.write(b"half a snapshot")  # a crash now leaves this temporary file
    incoming = store.receive()
    incoming.write(b"part of a transfer")
    (tmp_path / SNAPSHOT_DIR / "notes.txt").write_text("an operator's file")
    assert store.metas() == [meta(3)]
    assert len(snap_files(tmp_path)) == 4
    caplog.set_level(logging.WARNING)
    reopened = SnapshotStore(tmp_path)
    assert snap_files(tmp_path) == sorted([os.path.basename(store.path(meta(3))), "notes.txt"])
    assert reopened.newest() == meta(3)
    assert any("notes.txt: not a snapshot file" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("policy", [True, "always", False, "never"])
def test_a_commit_flushes_file_then_directory_whatever_the_fsync_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: object
) -> None:
    """Snapshots are rare and the log they replace is deleted after them, so even fsync never
    flushes them: a power loss must not leave a node without its snapshot (issue 17)."""
    store = SnapshotStore(tmp_path, fsync=policy)  # type: ignore[arg-type]
    calls: list[str] = []

    def recorded(name: str) -> Callable[..., object]:
        real = getattr(os, name)

        def call(*args: object) -> object:
            calls.append(name)
            return real(*args)
        return call

    for name in ("fsync", "fdatasync", "replace"):
        monkeypatch.setattr(os, name, recorded(name))
    write(store, meta(2), payload(2))
    # The file is flushed before the rename, the directory after it.
    assert calls == ["fdatasync", "replace", "fsync"]


# -- crash points of a write ------------------------------------------------------------------


def _states_during(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                   action: Callable[[], None]) -> list[Path]:
    """Copies of the snapshot directory before every write, flush, rename and unlink that
    ``action`` makes, and after the last: what a crash at each of those instants leaves."""
    states: list[Path] = []
    source = tmp_path / "node" / SNAPSHOT_DIR

    def capture() -> None:
        copy = tmp_path / f"crash{len(states)}"
        shutil.copytree(source, copy / SNAPSHOT_DIR)
        states.append(copy)

    for name in ("pwrite", "fsync", "fdatasync", "replace", "unlink"):
        real = getattr(os, name)

        def hooked(*args: object, real: Callable[..., object] = real) -> object:
            capture()
            return real(*args)

        monkeypatch.setattr(os, name, hooked)
    action()
    monkeypatch.undo()
    capture()
    return states


def test_a_crash_at_any_step_of_a_snapshot_write_leaves_the_old_or_the_new(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SnapshotStore(tmp_path / "node", keep=2)
    write(store, meta(10), payload(10))
    write(store, meta(20), payload(20))
    new = payload(30, 400)
    states = _states_during(tmp_path, monkeypatch, lambda: write(store, meta(30), new))
    assert len(states) > 10  # header, frames, trailer, flush, rename, directory, prune
    seen = set()
    for copy in states:
        # A process crash leaves the files as they are; a power cut may also lose any part of
        # a file not yet flushed: only the temporary file can be in that state.
        temporaries = [p.name for p in (copy / SNAPSHOT_DIR).iterdir() if p.name.endswith(".tmp")]
        sizes = {name: (copy / SNAPSHOT_DIR / name).stat().st_size for name in temporaries}
        variants = [None] + [(name, n) for name in temporaries for n in range(0, sizes[name], 7)]
        for variant in variants:
            trial = tmp_path / "trial"
            shutil.rmtree(trial, ignore_errors=True)
            shutil.copytree(copy, trial)
            if variant is not None:
                os.truncate(trial / SNAPSHOT_DIR / variant[0], variant[1])
            reopened = SnapshotStore(trial)
            newest = reopened.newest(covered=lambda m: False)
            assert newest in (meta(20), meta(30)), (copy, variant)
            assert read_all(reopened, newest) == (new if newest == meta(30) else payload(20))
            assert not any(p.name.endswith(".tmp") for p in (trial / SNAPSHOT_DIR).iterdir())
            seen.add(newest.index)
    assert seen == {20, 30}


def _fail_at(step: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the ``step``-th write, flush or rename (from 0) fail as a full disk does."""
    calls = 0

    def failing(real: Callable[..., object]) -> Callable[..., object]:
        def call(*args: object) -> object:
            nonlocal calls
            calls += 1
            if calls == step + 1:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(*args)
        return call

    for name in ("pwrite", "fsync", "fdatasync", "replace"):
        monkeypatch.setattr(os, name, failing(getattr(os, name)))


def test_a_failure_at_any_step_of_a_snapshot_write_raises_and_leaves_no_debris(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    new = payload(30, 400)
    step = 0
    failed = True
    while failed:
        node = tmp_path / f"node{step}"
        store = SnapshotStore(node, keep=2)
        write(store, meta(10), payload(10))
        _fail_at(step, monkeypatch)
        try:
            write(store, meta(30), new)
        except StorageError as exc:
            assert "No space left" in str(exc)
        else:
            failed = False
        monkeypatch.undo()
        assert not any(p.name.endswith(".tmp") for p in (node / SNAPSHOT_DIR).iterdir())
        newest = SnapshotStore(node).newest(covered=lambda m: False)
        # Only a failed directory flush (after the rename) leaves the new snapshot, complete.
        assert newest == meta(10) or (newest == meta(30) and read_all(store, newest) == new)
        step += 1
    assert step > 10


# -- damage --------------------------------------------------------------------------------


def test_every_bit_flip_in_a_snapshot_is_refused_with_the_file_and_offset(
    store: SnapshotStore,
) -> None:
    write(store, meta(7), payload(7, 500))
    path = store.path(meta(7))
    size = os.path.getsize(path)
    for offset in range(size):
        flip_bit(path, offset, offset % 8)
        with pytest.raises(StorageError) as info:
            verify(path)
        found = corrupt_offset(str(info.value), path)
        # Located to the damaged frame (or the header field, or the trailer).
        assert abs(offset - found) < FRAME + 8, (offset, str(info.value))
        flip_bit(path, offset, offset % 8)
    assert verify(path) == meta(7)


def test_a_reader_hands_out_intact_frames_and_stops_at_the_damaged_one(
    store: SnapshotStore,
) -> None:
    data = payload(7, 10 * FRAME)
    write(store, meta(7), data)
    path = store.path(meta(7))
    frame_start = HEADER + 4 * (FRAME + 8)  # the fifth frame
    flip_bit(path, frame_start + 8 + 10)
    with store.open(meta(7)) as reader:
        assert reader.read(4 * FRAME) == data[: 4 * FRAME]
        with pytest.raises(StorageError, match=f"{re.escape(path)}: corrupt at byte offset "
                           f"{frame_start}: frame checksum mismatch"):
            reader.read(1)


def test_a_file_cut_short_anywhere_is_refused(store: SnapshotStore, tmp_path: Path) -> None:
    write(store, meta(7), payload(7))
    path = store.path(meta(7))
    whole = Path(path).read_bytes()
    cut = str(tmp_path / "cut.snap")
    for length in range(len(whole)):
        Path(cut).write_bytes(whole[:length])
        with pytest.raises(StorageError, match=f"^{re.escape(cut)}: corrupt at byte offset"):
            verify(cut)


def test_a_header_that_disagrees_with_the_file_name_is_refused(store: SnapshotStore) -> None:
    write(store, meta(7), payload(7))
    os.rename(store.path(meta(7)), store.path(meta(8)))
    with pytest.raises(StorageError, match="header says index 7 term 1, the file name index 8"):
        store.newest(covered=lambda m: False)


# -- the header's configuration ------------------------------------------------------------


def snapshot_file(magic: bytes, meta_payload: bytes, data: bytes) -> bytes:
    """A snapshot file built by hand from the format description: header, frames, trailer."""
    header_crc = zlib.crc32(meta_payload)
    out = [magic, struct.pack("<II", len(meta_payload), header_crc), meta_payload]
    frames = [data[lo : lo + FRAME] for lo in range(0, len(data), FRAME)]
    for piece in frames:
        length = struct.pack("<I", len(piece))
        out += [length, struct.pack("<I", zlib.crc32(piece, zlib.crc32(length))), piece]
    fields = b"RFTLSEND" + struct.pack("<QQ", len(data), len(frames))
    out += [fields, struct.pack("<I", zlib.crc32(struct.pack("<I", header_crc),
                                                  zlib.crc32(fields)))]
    return b"".join(out)


def v2_meta(index: int, term: int, conf: bytes, length: int | None = None) -> bytes:
    return struct.pack("<QQI", index, term, len(conf) if length is None else length) + conf


def put(store: SnapshotStore, m: SnapshotMeta, raw: bytes) -> str:
    path = store.path(m)
    Path(path).write_bytes(raw)
    return path


@given(conf_states())
@settings(max_examples=50)
def test_a_snapshot_carries_whatever_its_configuration_holds(conf: ConfState) -> None:
    with tempfile.TemporaryDirectory() as directory:
        store = SnapshotStore(directory)
        m = SnapshotMeta(12, 3, conf)
        write(store, m, payload(12))
        expected = SnapshotMeta(12, 3, ConfState.decode(conf.encode()))
        assert store.metas() == [expected] and verify(store.path(m)) == expected
        assert Path(store.path(m)).read_bytes() == snapshot_file(
            b"RFTLSNP2", v2_meta(12, 3, conf.encode()), payload(12))
        with store.open(expected) as reader:
            assert reader.meta == expected and reader.read() == payload(12)


def test_a_configuration_beyond_the_first_read_of_the_header_round_trips(
    store: SnapshotStore,
) -> None:
    ids = range(1, 1001)
    members = tuple(Member(i, f"node-{i:04d}-" + "x" * 60, f"10.0.{i // 256}.{i % 256}:7000",
                           f"10.0.{i // 256}.{i % 256}:8000") for i in ids)
    conf = ConfState(frozenset(ids), frozenset(), members)
    assert len(conf.encode()) > 64 << 10
    m = SnapshotMeta(30, 2, conf)
    write(store, m, payload(30))
    assert verify(store.path(m)) == m and store.newest() == m
    assert read_all(store, m) == payload(30)


def test_a_snapshot_file_of_the_previous_format_is_read_listed_and_received(
    tmp_path: Path,
) -> None:
    # Format 1: voter count (u32) and voters (u64 each) after index and term.
    voters = struct.pack("<QQIQQQ", 40, 3, 3, 1, 2, 3)
    old = snapshot_file(b"RFTLSNP1", voters, payload(40, 500))
    m = SnapshotMeta(40, 3, ConfState(frozenset({1, 2, 3})))
    leader = SnapshotStore(tmp_path / "leader")
    path = put(leader, m, old)
    assert leader.metas() == [m] and leader.newest() == m and verify(path) == m
    assert read_all(leader, m) == payload(40, 500)
    follower = SnapshotStore(tmp_path / "follower")
    incoming = follower.receive()
    _send(path, incoming.write)
    assert incoming.finish() == m and follower.install(incoming) == m
    assert read_all(follower, m) == payload(40, 500)


@pytest.mark.parametrize(
    ("meta_payload", "offset", "what"),
    [
        pytest.param(v2_meta(5, 1, b"2,1"), 36, "malformed configuration", id="unsorted"),
        pytest.param(v2_meta(5, 1, b"\xff\xfe"), 36, "malformed configuration", id="not-ascii"),
        pytest.param(v2_meta(5, 1, b'{"learners":[],"members":[],"v":1,"voters":[]}'), 36,
                     "malformed configuration", id="no-voter"),
        pytest.param(v2_meta(5, 1, b"1,2", length=2), 32, "does not match", id="bad-length"),
        pytest.param(v2_meta(5, 1, b"1", length=2**32 - 1), 32, "exceeds the limit",
                     id="oversized-conf"),
    ],
)
def test_a_malformed_configuration_in_a_header_is_corruption_at_its_offset(
    store: SnapshotStore, meta_payload: bytes, offset: int, what: str
) -> None:
    path = put(store, meta(5), snapshot_file(b"RFTLSNP2", meta_payload, payload(5)))
    with pytest.raises(StorageError) as info:
        verify(path)
    assert corrupt_offset(str(info.value), path) == offset and what in str(info.value)
    assert store.metas() == []  # left out of the listing, logged


def test_a_header_longer_than_any_configuration_is_refused_before_it_is_read(
    store: SnapshotStore,
) -> None:
    raw = bytearray(snapshot_file(b"RFTLSNP2", v2_meta(5, 1, b"1"), payload(5)))
    raw[8:12] = struct.pack("<I", 2**32 - 1)
    path = put(store, meta(5), bytes(raw))
    with pytest.raises(StorageError, match=f"^{re.escape(path)}: corrupt at byte offset 8: "
                       "header of \\d+ bytes exceeds the limit"):
        verify(path)


def test_a_configuration_too_large_to_read_back_is_never_written(
    store: SnapshotStore, tmp_path: Path
) -> None:
    huge = SnapshotMeta(5, 1, ConfState(frozenset(range(200_000))))
    with pytest.raises(StorageError, match=r"\.tmp: configuration of \d+ bytes exceeds"):
        store.create(huge)
    assert os.listdir(tmp_path / SNAPSHOT_DIR) == []


# -- newest and fallback -------------------------------------------------------------------


def test_newest_is_none_for_an_empty_store(store: SnapshotStore) -> None:
    assert store.newest() is None


def test_a_damaged_newest_falls_back_to_an_older_one_only_if_the_log_covers_it(
    store: SnapshotStore, caplog: pytest.LogCaptureFixture
) -> None:
    write(store, meta(10), payload(10))
    write(store, meta(20), payload(20))
    assert store.newest(covered=lambda m: False) == meta(20)  # intact: no fallback needed
    flip_bit(store.path(meta(20)), 100)
    damaged = f"{store.path(meta(20))}: corrupt at byte offset"
    with caplog.at_level(logging.ERROR):
        assert store.newest(covered=lambda m: m.index >= 10) == meta(10)
    assert any(r.getMessage().startswith(damaged) for r in caplog.records)
    with pytest.raises(StorageError, match=f"^{re.escape(damaged)}.*index 10"):
        store.newest(covered=lambda m: m.index >= 15)
    # Never deleted by the store: the operator gets to look at it.
    assert os.path.exists(store.path(meta(20)))


def test_a_damaged_only_snapshot_means_none_only_if_the_log_starts_at_the_beginning(
    store: SnapshotStore,
) -> None:
    write(store, meta(10), payload(10))
    flip_bit(store.path(meta(10)), 70)
    assert store.newest(covered=lambda m: m.index >= 0) is None
    with pytest.raises(StorageError, match=r"corrupt at byte offset.*no older snapshot"):
        store.newest(covered=lambda m: m.index >= 1)


# -- snapshots received from a leader ------------------------------------------------------


def _send(source: str, incoming_write: Callable[[bytes], int], chunk: int = 100) -> None:
    data = Path(source).read_bytes()
    for lo in range(0, len(data), chunk):
        incoming_write(data[lo : lo + chunk])


def test_a_received_snapshot_is_verified_then_installed(tmp_path: Path) -> None:
    leader = SnapshotStore(tmp_path / "leader")
    write(leader, meta(50, 4), payload(50, 2000))
    follower = SnapshotStore(tmp_path / "follower", keep=1)
    write(follower, meta(10), payload(10))
    incoming = follower.receive()
    _send(leader.path(meta(50, 4)), incoming.write)
    assert follower.metas() == [meta(10)]  # not before install
    assert incoming.finish() == meta(50, 4)
    assert follower.install(incoming) == meta(50, 4)
    assert follower.metas() == [meta(50, 4)]  # keep=1 pruned the older one
    assert read_all(follower, meta(50, 4)) == payload(50, 2000)
    assert follower.size(meta(50, 4)) == leader.size(meta(50, 4))
    with pytest.raises(StorageError, match="unfinished or closed"):
        follower.install(incoming)


@pytest.mark.parametrize("damage", ["flip", "cut"])
def test_a_damaged_transfer_is_refused_and_leaves_nothing(tmp_path: Path, damage: str) -> None:
    leader = SnapshotStore(tmp_path / "leader")
    write(leader, meta(50, 4), payload(50, 2000))
    source = leader.path(meta(50, 4))
    if damage == "flip":
        flip_bit(source, 1000)
    else:
        os.truncate(source, 1500)
    follower = SnapshotStore(tmp_path / "follower")
    incoming = follower.receive()
    _send(source, incoming.write)
    with pytest.raises(StorageError, match=r"incoming-.*\.tmp: corrupt at byte offset"):
        incoming.finish()
    assert snap_files(tmp_path / "follower") == []
    with pytest.raises(StorageError, match="unfinished or closed"):
        follower.install(incoming)


def test_a_discarded_transfer_leaves_nothing(tmp_path: Path) -> None:
    leader = SnapshotStore(tmp_path / "leader")
    write(leader, meta(50, 4), payload(50))
    follower = SnapshotStore(tmp_path / "follower")
    for finish in (False, True):
        incoming = follower.receive()
        _send(leader.path(meta(50, 4)), incoming.write)
        if finish:
            incoming.finish()
        follower.discard(incoming)
        assert snap_files(tmp_path / "follower") == []
        with pytest.raises(StorageError):
            incoming.write(b"late chunk")


# -- with the log ----------------------------------------------------------------------------


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Path]:
    """A data directory with entries 1..30 in small segments, commit 30, and no snapshot."""
    path = tmp_path / "node"
    s = DiskStorage(path, segment_size=256)
    s.bootstrap(CONF)
    s.save(HardState(1, 1, 30), ents(1, 30, 1, size=20))
    s.close()
    yield path


def _segments(node: Path) -> list[str]:
    return sorted(os.listdir(node / "wal"))


def test_a_crash_between_the_snapshot_and_the_segment_removal_recovers(
    node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SnapshotStore(node)
    write(store, meta(20), payload(20))
    storage = DiskStorage(node, segment_size=256)
    before = _segments(node)
    real_unlink = os.unlink

    def crash(path: str) -> None:
        raise OSError(errno.EIO, "crashed before the segments went")

    monkeypatch.setattr(os, "unlink", crash)
    with pytest.raises(StorageError, match="crashed before"):
        storage.compact(meta(20))
    monkeypatch.setattr(os, "unlink", real_unlink)
    storage.abandon()
    assert _segments(node) == before

    storage = DiskStorage(node, segment_size=256)
    state = storage.load()
    newest = SnapshotStore(node).newest(covered=lambda m: m.index >= state.snapshot.index)
    assert newest == meta(20) == state.snapshot
    assert state.entries == ents(21, 30, 1, size=20)
    # The open finished the removal: no segment holds only entries up to the log start.
    firsts = [int(name.split(".")[0]) for name in _segments(node)]
    assert len(firsts) < len(before) and firsts[0] <= 21 and (len(firsts) == 1 or firsts[1] > 21)
    storage.close()


def test_a_crash_after_the_snapshot_before_compaction_keeps_the_whole_log(node: Path) -> None:
    write(SnapshotStore(node), meta(20), payload(20))
    storage = DiskStorage(node, segment_size=256)
    state = storage.load()
    assert state.snapshot.index == 0 and len(state.entries) == 30
    assert SnapshotStore(node).newest(covered=lambda m: m.index >= 0) == meta(20)
    storage.close()


def test_disk_use_stays_bounded_under_steady_writes_and_compaction(tmp_path: Path) -> None:
    path = tmp_path / "node"
    storage = DiskStorage(path, segment_size=1024, fsync="never")
    store = SnapshotStore(path, fsync="never", keep=2)
    storage.bootstrap(CONF)
    every, retain = 100, 40
    peak_log = peak_total = 0
    for first in range(1, 5001, 10):
        last = first + 9
        storage.save(HardState(1, 1, last), ents(first, last, 1, size=50))
        if last % every == 0:
            write(store, meta(last), payload(last, 2000))
            storage.compact(meta(last - retain))
        peak_log = max(peak_log, storage.log_bytes)
        total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        peak_total = max(peak_total, total)
        assert storage.log_bytes == sum(f.stat().st_size for f in (path / "wal").iterdir())
    # At most every + retain entries of ~75 bytes on disk, plus one partial segment.
    assert peak_log < (every + retain) * 75 + 1024
    assert peak_total < peak_log + 2 * store.size(meta(5000)) + 1024
    assert len(store.metas()) == 2
    assert len(_segments(path)) <= (every + retain) * 75 // 1024 + 2
    storage.close()


def test_a_held_snapshot_is_not_pruned_until_let_go(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, keep=1)
    write(store, meta(5), payload(5))
    with store.hold(meta(5)) as path:
        write(store, meta(9), payload(9))
        assert Path(path).exists()  # a transfer still reads it
    write(store, meta(12), payload(12))
    assert [m.index for m in store.metas()] == [12]

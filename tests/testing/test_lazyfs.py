"""The lazy file system forgets exactly what was not fsynced (and, strict, what no directory
fsync covered), and otherwise behaves as a file system the storage can run on."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from polling import wait_until

from raftly.testing.lazyfs import LazyMount, unavailable
from raftly.testing.lazyfs.cache import PAGE, PendingFile
from raftly.testing.lazyfs.mount import STOP_TIMEOUT, mounted


def write(path: Path, data: bytes, *, sync: bool, append: bool = False) -> None:
    flags = os.O_CREAT | os.O_WRONLY | (os.O_APPEND if append else 0)
    fd = os.open(path, flags, 0o644)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def test_fsynced_data_survives_a_power_loss_and_unsynced_data_does_not(lazyfs):
    lazy = lazyfs()
    mnt = Path(lazy.mountpoint)
    write(mnt / "f", b"durable", sync=True)
    write(mnt / "f", b"+lost", sync=False, append=True)
    assert (mnt / "f").read_bytes() == b"durable+lost"  # reads see the page cache
    assert (mnt / "f").stat().st_size == 12
    lazy.power_loss()
    assert (mnt / "f").read_bytes() == b"durable"
    assert (mnt / "f").stat().st_size == 7


def test_an_fsync_flushes_only_its_own_file(lazyfs):
    lazy = lazyfs()
    mnt = Path(lazy.mountpoint)
    write(mnt / "a", b"", sync=True)
    write(mnt / "b", b"", sync=True)
    write(mnt / "a", b"synced", sync=True)
    write(mnt / "b", b"not synced", sync=False)
    lazy.power_loss()
    assert (mnt / "a").read_bytes() == b"synced"
    assert (mnt / "b").read_bytes() == b""


def test_pwrite_truncate_and_ftruncate_are_cached_until_fsync(lazyfs):
    lazy = lazyfs()
    mnt = Path(lazy.mountpoint)
    write(mnt / "f", b"x" * (3 * PAGE), sync=True)
    fd = os.open(mnt / "f", os.O_RDWR)
    try:
        os.pwrite(fd, b"yy", PAGE - 1)  # across a page boundary
        os.ftruncate(fd, PAGE + 5)
        os.ftruncate(fd, PAGE + 10)  # grown again: the cut bytes read as zeros
        expected = b"x" * (PAGE - 1) + b"yy" + b"x" * 4 + bytes(5)
        assert os.pread(fd, 2 * PAGE, 0) == expected
        assert os.fstat(fd).st_size == PAGE + 10
    finally:
        os.close(fd)
    os.truncate(mnt / "f", 1)
    assert (mnt / "f").read_bytes() == b"x"
    lazy.power_loss()
    assert (mnt / "f").read_bytes() == b"x" * (3 * PAGE)
    fd = os.open(mnt / "f", os.O_RDWR)
    try:
        os.ftruncate(fd, PAGE + 1)
        os.pwrite(fd, b"z", 2 * PAGE)
        os.fsync(fd)
    finally:
        os.close(fd)
    lazy.power_loss()
    assert (mnt / "f").read_bytes() == b"x" * (PAGE + 1) + bytes(PAGE - 1) + b"z"


@pytest.mark.parametrize("mode", ["lazy", "strict"])
def test_a_rename_without_a_directory_fsync(lazyfs, mode):
    """Lazy mode keeps namespace changes as they happen; strict mode undoes the rename."""
    lazy = lazyfs(mode)
    mnt = Path(lazy.mountpoint)
    write(mnt / "old", b"data", sync=True)
    sync_dir(mnt)
    os.rename(mnt / "old", mnt / "new")
    lazy.power_loss()
    if mode == "lazy":
        assert sorted(os.listdir(mnt)) == ["new"]
        assert (mnt / "new").read_bytes() == b"data"
    else:
        assert sorted(os.listdir(mnt)) == ["old"]
        assert (mnt / "old").read_bytes() == b"data"


def test_strict_mode_keeps_a_rename_followed_by_a_directory_fsync(lazyfs):
    lazy = lazyfs("strict")
    mnt = Path(lazy.mountpoint)
    write(mnt / "target", b"old version", sync=True)
    write(mnt / "target.tmp", b"new version", sync=True)
    sync_dir(mnt)
    write(mnt / "target.tmp", b"NEW", sync=True)
    os.replace(mnt / "target.tmp", mnt / "target")
    sync_dir(mnt)
    lazy.power_loss()
    assert sorted(os.listdir(mnt)) == ["target"]
    assert (mnt / "target").read_bytes() == b"NEW version"


def test_strict_mode_forgets_files_and_directories_no_directory_fsync_made_durable(lazyfs):
    lazy = lazyfs("strict")
    mnt = Path(lazy.mountpoint)
    write(mnt / "kept", b"k", sync=True)
    os.mkdir(mnt / "sub")
    sync_dir(mnt)
    write(mnt / "sub" / "inner", b"i", sync=True)  # sub's own entries were never synced
    write(mnt / "created", b"c", sync=True)
    os.mkdir(mnt / "newdir")
    os.unlink(mnt / "kept")  # an unlink not made durable comes back
    lazy.power_loss()
    assert sorted(os.listdir(mnt)) == ["kept", "sub"]
    assert os.listdir(mnt / "sub") == []
    assert (mnt / "kept").read_bytes() == b"k"


def test_strict_mode_keeps_a_durable_unlink(lazyfs):
    lazy = lazyfs("strict")
    mnt = Path(lazy.mountpoint)
    write(mnt / "gone", b"g", sync=True)
    sync_dir(mnt)
    os.unlink(mnt / "gone")
    sync_dir(mnt)
    lazy.power_loss()
    assert os.listdir(mnt) == []


def test_lazy_mode_keeps_creations_with_their_synced_data(lazyfs):
    lazy = lazyfs("lazy")
    mnt = Path(lazy.mountpoint)
    os.mkdir(mnt / "d")
    write(mnt / "d" / "f", b"synced", sync=True)
    write(mnt / "d" / "g", b"not synced", sync=False)
    lazy.power_loss()
    assert sorted(os.listdir(mnt / "d")) == ["f", "g"]
    assert (mnt / "d" / "f").read_bytes() == b"synced"
    assert (mnt / "d" / "g").read_bytes() == b""


def test_flock_is_exclusive_on_the_mount(lazyfs):
    mnt = Path(lazyfs().mountpoint)
    first = os.open(mnt / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
    second = os.open(mnt / "LOCK", os.O_RDWR)
    try:
        fcntl.flock(first, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(BlockingIOError):
            fcntl.flock(second, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(first)
        os.close(second)


def test_stop_unmounts_even_while_a_file_is_open(lazyfs):
    lazy = lazyfs()
    fd = os.open(Path(lazy.mountpoint) / "busy", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        began = time.monotonic()
        lazy.stop()
        assert not mounted(lazy.mountpoint)
        assert time.monotonic() - began < STOP_TIMEOUT / 2  # the child is ended, not awaited
    finally:
        with contextlib.suppress(OSError):  # the file system behind it is gone
            os.close(fd)


def test_the_page_cache_reads_backing_bytes_it_does_not_hold(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abcdef")
    fd = os.open(path, os.O_RDWR)
    try:
        cache = PendingFile(6)
        cache.write(fd, 2, b"XY")
        assert cache.read(fd, 0, 100) == b"abXYef"
        cache.truncate(fd, 3)
        cache.write(fd, 5, b"Z")
        assert cache.read(fd, 0, 100) == b"abX\0\0Z"
        assert path.read_bytes() == b"abcdef"  # nothing reached the file before flush
        cache.flush(fd)
        assert path.read_bytes() == b"abX\0\0Z"
    finally:
        os.close(fd)


def _exited(pid: int) -> bool:
    """Gone, or a zombie nobody reaped (a container's init may not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_mount_whose_starter_died_unmounts_itself(tmp_path):
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    mountpoint = tmp_path / "mnt"
    starter = ("import sys, os\nfrom raftly.testing.lazyfs import LazyMount\n"
               "m = LazyMount(sys.argv[1], sys.argv[2])\nm.start()\nprint(m._process.pid)\n"
               "sys.stdout.flush()\nos._exit(0)\n")
    try:
        done = subprocess.run([sys.executable, "-c", starter, str(tmp_path / "backing"),
                               str(mountpoint)], check=True, timeout=60, capture_output=True)
        child = int(done.stdout)
        wait_until("the orphaned mount is gone", lambda: not os.path.ismount(mountpoint))
        wait_until("the orphaned child exited", lambda: _exited(child))
    finally:
        if os.path.ismount(mountpoint):
            subprocess.run(["fusermount3", "-uz", str(mountpoint)], check=False)


def test_stop_unmounts_a_mount_whose_child_died(lazyfs):
    lazy = lazyfs()
    process = lazy._process
    os.kill(process.pid, signal.SIGKILL)
    process.wait(30)
    assert mounted(lazy.mountpoint)  # dead but still mounted ("transport endpoint ...")
    lazy.stop()
    assert not mounted(lazy.mountpoint)


def test_a_failed_start_reports_the_exit_status_and_the_log(tmp_path):
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    lazy = LazyMount(tmp_path / "backing", tmp_path / "mnt", mode="bogus")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match=r"(?s)lazyfs exited with 2:.*invalid choice"):
        lazy.start()
    assert not mounted(lazy.mountpoint)


def test_a_mount_works_in_a_directory_too_deep_for_a_unix_socket_path(lazyfs, tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    with LazyMount(deep / "backing", deep / "mnt", mode="strict") as lazy:
        assert len(os.fsencode(str(deep / "mnt.lazyfs.sock"))) > 107
        write(deep / "mnt" / "f", b"x", sync=True)
        lazy.power_loss()
        assert not (deep / "mnt" / "f").exists()  # its directory entry was never synced
    assert not mounted(str(deep / "mnt"))


def test_a_partial_write_back_keeps_a_prefix_of_the_new_bytes_over_the_old(tmp_path):
    """Each seed writes back the dirty pages in order up to a random byte, with or without
    the size change; across seeds every shape occurs: nothing, torn pages, all, the old size
    with new bytes over bytes a truncation should have cut."""
    import random

    old = b"A" * 5000
    new = b"A" * 100 + b"B" * 8000
    shapes = set()
    for seed in range(64):
        path = tmp_path / f"f{seed}"
        path.write_bytes(old)
        fd = os.open(path, os.O_RDWR)
        try:
            cache = PendingFile(len(old))
            cache.truncate(fd, 100)
            cache.write(fd, 100, b"B" * 8000)
            cache.write_back_some(fd, random.Random(seed))
        finally:
            os.close(fd)
        got = path.read_bytes()
        assert len(got) in (len(old), len(new)), seed
        rest = old if len(got) == len(old) else bytes(len(new))
        cut = next((i for i in range(len(got)) if got[i] != new[i]), len(got))
        assert got[cut:] == rest[cut:], seed
        shapes.add((len(got), cut == len(got), cut % PAGE != 0 and cut < len(got)))
    assert {(len(old), True), (len(new), True)} <= {s[:2] for s in shapes}  # all written back
    assert any(torn for *_, torn in shapes)  # a page torn at a byte
    assert (len(old), False, False) in shapes or (len(old), False, True) in shapes


def test_a_seeded_power_loss_writes_back_part_of_the_unsynced_data(lazyfs):
    lazy = lazyfs()
    mnt = Path(lazy.mountpoint)
    data = bytes(range(1, 256)) * 40
    kept = set()
    for seed in range(8):
        write(mnt / f"f{seed}", b"", sync=True)
        write(mnt / f"f{seed}", data, sync=False)
        lazy.power_loss(seed)
        got = (mnt / f"f{seed}").read_bytes()
        written = len(got.rstrip(b"\0"))
        assert got[:written] == data[:written] and len(got) in (0, len(data)), seed
        kept.add(written)
    assert len(kept) > 1  # the seeds chose differently
    assert "power loss with partial write-back, seed 7" in lazy.log_tail(50)


def test_a_strict_power_loss_that_fails_half_way_puts_the_tree_back(tmp_path, monkeypatch):
    pytest.importorskip("mfusepy")
    from raftly.testing.lazyfs.fs import LazyOperations

    backing = tmp_path / "backing"
    (backing / "d").mkdir(parents=True)
    (backing / "d" / "f").write_bytes(b"data")
    (backing / "g").write_bytes(b"more")
    ops = LazyOperations(str(backing), "strict")
    real_link = os.link
    links = iter(range(2))

    def failing_link(source, target):  # the second link fails: a half-built tree
        if next(links):
            raise OSError(28, "No space left on device")
        real_link(source, target)

    monkeypatch.setattr(os, "link", failing_link)
    with pytest.raises(OSError, match="No space"):
        ops.power_loss()
    monkeypatch.setattr(os, "link", real_link)
    assert (backing / "d" / "f").read_bytes() == b"data"
    assert (backing / "g").read_bytes() == b"more"
    assert sorted(os.listdir(backing)) == [".lazyfs", "d", "g"]
    LazyOperations(str(backing), "strict").power_loss()  # mounts again, and works
    assert (backing / "d" / "f").read_bytes() == b"data"


def test_a_mount_refuses_a_backing_directory_left_by_an_unfinished_power_loss(tmp_path):
    pytest.importorskip("mfusepy")
    from raftly.testing.lazyfs.fs import ASIDE, HIDDEN, LazyOperations

    aside = tmp_path / HIDDEN / ASIDE
    aside.mkdir(parents=True)
    (aside / "data").write_bytes(b"the only copy")
    with pytest.raises(RuntimeError, match="unfinished power loss"):
        LazyOperations(str(tmp_path), "strict")
    assert (aside / "data").read_bytes() == b"the only copy"

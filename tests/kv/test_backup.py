"""The backup file format (raftly.kv.backup): a round trip through ``BackupWriter`` and
``verify``, and every kind of wrong, damaged or cut file refused with an error that names it."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import struct
import zlib
from pathlib import Path

import pytest

from raftly.kv.backup import (
    MAGIC,
    STREAM_TRAILER,
    BackupError,
    BackupHeader,
    BackupWriter,
    check_stream_trailer,
    parse_stream_headers,
    quote_cluster_id,
    stream_trailer,
    verify,
)
from raftly.kv.cluster_file import parse_cluster_text, render_cluster
from raftly.kv.commands import LeaseGrant
from raftly.kv.state_machine import Delete, KVStateMachine, Put, encode
from raftly.localcluster import plan_loopback

HEADER = BackupHeader("cluster-a", index=50, term=3, created_ms=1_700_000_000_000, keys=20)


def _payload(keys: int = 20, last: int = 40) -> bytes:
    """A KV snapshot stream of ``keys`` keys (one with a lease) applied up to ``last``."""
    sm = KVStateMachine()
    sm.apply(1, encode(LeaseGrant(ttl=60, id=7)))
    for i in range(keys + 1):
        sm.apply(2 + i, encode(Put(f"k{i:02d}", b"v" * i, 7 if i == 0 else 0)))
    sm.apply(last, encode(Delete(f"k{keys:02d}")))
    sink = io.BytesIO()
    sm.capture().persist(sink)
    return sink.getvalue()


def _write(path: Path, payload: bytes, header: BackupHeader = HEADER) -> None:
    writer = BackupWriter(path, header)
    writer.write(payload)
    writer.commit(hashlib.sha256(payload).digest())


def _raw(header: BackupHeader, payload: bytes, *, version: int = 1) -> bytes:
    """A file's bytes built by hand (so that a field the writer refuses can be written)."""
    cluster_id = header.cluster_id.encode()
    head = (MAGIC + struct.pack("<H", version)
            + struct.pack("<QQQQQH", header.index, header.term, header.created_ms,
                          len(payload), header.keys, len(cluster_id)) + cluster_id)
    return head + struct.pack("<I", zlib.crc32(head)) + payload + hashlib.sha256(payload).digest()


def test_a_written_backup_verifies_with_its_metadata_and_what_its_payload_holds(
    tmp_path: Path,
) -> None:
    payload = _payload()
    path = tmp_path / "b.rbk"
    _write(path, payload)
    info = verify(path)
    assert info.header == BackupHeader("cluster-a", 50, 3, 1_700_000_000_000, 20, len(payload))
    assert (info.revision, info.leases, info.sessions) == (40, 1, 0)
    assert info.sha256 == hashlib.sha256(payload).hexdigest()
    assert info.file_size == path.stat().st_size
    assert path.read_bytes() == _raw(HEADER, payload)  # the layout the docstring gives
    assert [p.name for p in tmp_path.iterdir()] == ["b.rbk"]  # no temporary file left


@pytest.mark.parametrize(("damage", "message"), [
    (lambda raw: b"hello, this is a text file\n", "not a raftly backup"),
    (lambda raw: b"", "not a raftly backup"),
    (lambda raw: raw[:9], "cut short"),
    (lambda raw: raw[:30], "cut short"),
    (lambda raw: raw[:-1], "cut short"),
    (lambda raw: raw[:-40], "cut short"),
    (lambda raw: raw + b"\0", "1 bytes more than the header promises"),
    (lambda raw: raw[:20] + bytes([raw[20] ^ 1]) + raw[21:], "header damaged (checksum"),
    (lambda raw: raw[:-50] + bytes([raw[-50] ^ 1]) + raw[-49:], "checksum mismatch: file damaged"),
    (lambda raw: raw[:-1] + bytes([raw[-1] ^ 1]), "checksum mismatch: file damaged"),
])
def test_a_damaged_cut_or_foreign_file_is_refused_naming_what_is_wrong(
    tmp_path: Path, damage: object, message: str,
) -> None:
    raw = _raw(HEADER, _payload())
    path = tmp_path / "b.rbk"
    assert callable(damage)
    path.write_bytes(damage(raw))
    with pytest.raises(BackupError, match=message.replace("(", r"\(")):
        verify(path)


def test_a_newer_format_version_is_refused_as_newer_than_this_raftly(tmp_path: Path) -> None:
    path = tmp_path / "b.rbk"
    path.write_bytes(_raw(HEADER, _payload(), version=2))
    with pytest.raises(BackupError, match="version 2 is newer than this raftly"):
        verify(path)
    path.write_bytes(_raw(HEADER, _payload(), version=0))
    with pytest.raises(BackupError, match="version 0 is not a valid version"):
        verify(path)


@pytest.mark.parametrize(("fields", "message"), [
    ({"index": 0}, "index 0 is not an integer from 1"),
    ({"term": 0}, "term 0 is not an integer from 1"),
    ({"index": 1 << 63}, "index .* is not an integer"),
    ({"keys": 21}, "the header says 21 keys, the payload holds 20"),
    ({"index": 39}, "applied up to index 40, past the header's index 39"),
])
def test_header_fields_out_of_range_or_contradicting_the_payload_are_refused(
    tmp_path: Path, fields: dict[str, int], message: str,
) -> None:
    header = {"cluster_id": "cluster-a", "index": 50, "term": 3, "created_ms": 0, "keys": 20,
              **fields}
    path = tmp_path / "b.rbk"
    fake = BackupHeader.__new__(BackupHeader)  # skips the checks, as a hostile file would
    for name, value in header.items():
        object.__setattr__(fake, name, value)
    path.write_bytes(_raw(fake, _payload()))
    with pytest.raises(BackupError, match=message):
        verify(path)


def test_a_cluster_id_that_is_not_utf8_or_has_a_bad_length_is_header_damage(
    tmp_path: Path,
) -> None:
    raw = bytearray(_raw(HEADER, _payload()))
    id_at = 8 + 2 + 40 + 2
    raw[id_at] = 0xFF
    raw[id_at + 9: id_at + 13] = struct.pack("<I", zlib.crc32(bytes(raw[:id_at + 9])))
    path = tmp_path / "b.rbk"
    path.write_bytes(bytes(raw))
    with pytest.raises(BackupError, match="cluster id is not UTF-8"):
        verify(path)
    raw[id_at - 2: id_at] = struct.pack("<H", 0)
    path.write_bytes(bytes(raw))
    with pytest.raises(BackupError, match="cluster id length 0"):
        verify(path)


def test_a_payload_with_a_good_checksum_that_is_not_a_kv_snapshot_is_refused(
    tmp_path: Path,
) -> None:
    path = tmp_path / "b.rbk"
    path.write_bytes(_raw(HEADER, b"\x93\x01\x02\x03 not a snapshot"))
    with pytest.raises(BackupError, match="malformed KV snapshot"):
        verify(path)


def test_an_existing_file_is_kept_unless_force_and_a_failed_commit_leaves_nothing(
    tmp_path: Path,
) -> None:
    payload = _payload()
    path = tmp_path / "b.rbk"
    path.write_bytes(b"precious")
    with pytest.raises(BackupError, match=r"exists.*--force"):
        BackupWriter(path, HEADER)
    writer = BackupWriter(path, HEADER, force=True)
    writer.write(payload)
    with pytest.raises(BackupError, match="checksum mismatch"):
        writer.commit(b"\0" * 32)
    assert path.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.rbk"]
    writer = BackupWriter(path, HEADER, force=True)
    writer.write(payload)
    writer.commit()
    assert verify(path).header.payload_size == len(payload)


def _commit_after_someone_else_wrote(path: Path) -> None:
    """A save whose file name is taken by another while it writes: refused, theirs kept."""
    writer = BackupWriter(path, HEADER)
    writer.write(_payload())
    path.write_bytes(b"someone else's")
    with pytest.raises(BackupError, match="exists"):
        writer.commit()
    assert path.read_bytes() == b"someone else's"


def test_a_file_that_appears_while_saving_is_not_replaced_without_force(tmp_path: Path) -> None:
    _commit_after_someone_else_wrote(tmp_path / "b.rbk")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.rbk"]


@pytest.mark.parametrize("code", [errno.EPERM, errno.ENOTSUP])
def test_a_file_system_without_hard_links_still_gets_the_backup_but_never_over_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int,
) -> None:
    """vfat, some SMB and FUSE mounts refuse os.link: the file is renamed into place instead,
    still never over a file that appeared meanwhile."""
    def no_links(src: str, dst: str) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "b.rbk"
    _write(path, _payload())
    assert verify(path).header.payload_size == len(_payload())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.rbk"]
    _commit_after_someone_else_wrote(tmp_path / "c.rbk")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.rbk", "c.rbk"]


def test_a_payload_that_is_not_a_valid_snapshot_is_never_published(tmp_path: Path) -> None:
    path = tmp_path / "b.rbk"
    writer = BackupWriter(path, HEADER)
    writer.write(b"garbage")
    with pytest.raises(BackupError, match="malformed KV snapshot"):
        writer.commit()
    assert list(tmp_path.iterdir()) == []


def test_the_stream_trailer_must_be_whole_and_match_the_bytes_received() -> None:
    digest = hashlib.sha256(b"abc").digest()
    assert check_stream_trailer(stream_trailer(3, digest), 3) == digest
    with pytest.raises(BackupError, match="cut short"):
        check_stream_trailer(stream_trailer(3, digest)[:-1], 3)
    with pytest.raises(BackupError, match="cut short or damaged"):
        check_stream_trailer(stream_trailer(4, digest), 3)
    with pytest.raises(BackupError, match="cut short or damaged"):
        check_stream_trailer(b"X" * STREAM_TRAILER.size, 3)


@pytest.mark.parametrize(("headers", "message"), [
    ({}, "is not a number"),
    ({"x-raftly-snapshot-index": "-1"}, "Index header '-1' is not a number"),
    ({"x-raftly-snapshot-index": "1" * 20}, "is not a number"),
    ({"x-raftly-snapshot-term": "0"}, "term 0 is not an integer"),
    ({"x-raftly-cluster-id": ""}, "cluster id '' is not"),
    ({"x-raftly-cluster-id": "x" * 256}, "cluster id .* is not"),
    ({"x-raftly-cluster-id": "%FF"}, "not percent-encoded UTF-8"),
])
def test_stream_metadata_is_checked_field_by_field(headers: dict[str, str],
                                                  message: str) -> None:
    good = {"x-raftly-cluster-id": "c", "x-raftly-snapshot-index": "5",
            "x-raftly-snapshot-term": "2", "x-raftly-snapshot-keys": "0",
            "x-raftly-snapshot-created": "0"}
    assert parse_stream_headers(good) == BackupHeader("c", 5, 2, 0, 0)
    assert parse_stream_headers({**good, "x-raftly-cluster-id": quote_cluster_id("é/ü x")}
                                ).cluster_id == "é/ü x"
    broken = {**good, **headers} if headers else {}
    with pytest.raises(BackupError, match=message):
        parse_stream_headers(broken)


def test_any_cluster_id_a_cluster_file_allows_can_be_backed_up(tmp_path: Path) -> None:
    """255 characters (what a cluster file allows) of 2 and 4 UTF-8 bytes each: in the stream's
    headers and in a file, written and read back."""
    for cluster_id in ("é" * 255, "😀" * 255):
        spec = parse_cluster_text(render_cluster(plan_loopback(3, cluster_id=cluster_id)))
        assert spec.cluster_id == cluster_id  # the cluster file allows it
        header = BackupHeader(cluster_id, index=50, term=3, created_ms=0, keys=20)
        good = {"x-raftly-cluster-id": quote_cluster_id(cluster_id),
                "x-raftly-snapshot-index": "50", "x-raftly-snapshot-term": "3",
                "x-raftly-snapshot-keys": "20", "x-raftly-snapshot-created": "0"}
        assert parse_stream_headers(good) == header
        path = tmp_path / "id.rbk"
        _write(path, _payload(), header)
        assert verify(path).header.cluster_id == cluster_id
        path.unlink()
    with pytest.raises(BackupError, match="at most 255 characters"):
        BackupHeader("é" * 256, index=50, term=3, created_ms=0, keys=20)

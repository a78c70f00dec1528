"""The state files' encoding of the log start: the configuration stored as ``ConfState.encode()``
bytes (length-prefixed, bounded), data dirs of the previous format still read, and a malformed
configuration reported as corruption with the file and byte offset."""

from __future__ import annotations

import os
import struct
import tempfile
import zlib
from pathlib import Path

import pytest
from conf_strategies import addressed, conf_states
from hypothesis import given
from hypothesis import strategies as st

from raftly.core.types import ConfState, SnapshotMeta
from raftly.storage import DiskStorage, StorageError
from raftly.storage.disk import state
from raftly.storage.disk.fsio import Syncer

RICH = addressed({1, 2}, {3})
CONF_AT = 16 + 20
"""Where the configuration starts in the ``snapshot`` state file: frame, index, term, length."""


def _syncer() -> Syncer:
    return Syncer("never")


def state_file(magic: bytes, payload: bytes) -> bytes:
    """A state file built by hand: magic, payload length, crc32, payload."""
    return magic + struct.pack("<II", len(payload), zlib.crc32(payload)) + payload


def v2(index: int, term: int, conf: bytes, length: int | None = None) -> bytes:
    size = len(conf) if length is None else length
    return state_file(b"RFTLSM02", struct.pack("<QQI", index, term, size) + conf)


def v1(index: int, term: int, voters: list[int]) -> bytes:
    """The format before configurations were stored as their encoding: voters as u64s."""
    payload = struct.pack("<QQI", index, term, len(voters))
    return state_file(b"RFTLSM01", payload + b"".join(struct.pack("<Q", v) for v in voters))


def read_back(directory: Path, raw: bytes) -> SnapshotMeta:
    (directory / state.SNAPSHOT_NAME).write_bytes(raw)
    return state.read_snapshot_meta(str(directory))


@given(conf_states(), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_the_log_start_round_trips_whatever_the_configuration_holds(
    conf: ConfState, index: int, term: int
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        state.write_snapshot_meta(directory, SnapshotMeta(index, term, conf), _syncer())
        got = state.read_snapshot_meta(directory)
    assert got == SnapshotMeta(index, term, ConfState.decode(conf.encode()))
    assert got.conf.voters == conf.voters


def test_the_file_holds_the_encoded_configuration_behind_its_length(tmp_path: Path) -> None:
    state.write_snapshot_meta(str(tmp_path), SnapshotMeta(7, 3, RICH), _syncer())
    assert (tmp_path / state.SNAPSHOT_NAME).read_bytes() == v2(7, 3, RICH.encode())


def test_a_data_dir_of_the_previous_format_still_opens(tmp_path: Path) -> None:
    node = tmp_path / "node"
    s = DiskStorage(node)
    s.bootstrap(ConfState(frozenset({1, 2, 3})))
    s.close()
    (node / state.SNAPSHOT_NAME).write_bytes(v1(0, 0, [1, 2, 3]))
    s = DiskStorage(node)
    assert s.load().snapshot == SnapshotMeta(0, 0, ConfState(frozenset({1, 2, 3})))
    s.close()
    assert read_back(tmp_path, v1(9, 2, [])) == SnapshotMeta(9, 2, ConfState(frozenset()))
    assert read_back(tmp_path, v1(9, 2, [5, 2**64 - 1])) == SnapshotMeta(
        9, 2, ConfState(frozenset({5, 2**64 - 1})))


def test_the_next_write_replaces_the_previous_format(tmp_path: Path) -> None:
    (tmp_path / state.SNAPSHOT_NAME).write_bytes(v1(4, 1, [1]))
    meta = state.read_snapshot_meta(str(tmp_path))
    state.write_snapshot_meta(str(tmp_path), SnapshotMeta(5, 1, meta.conf), _syncer())
    assert (tmp_path / state.SNAPSHOT_NAME).read_bytes() == v2(5, 1, b"1")


@pytest.mark.parametrize(
    ("raw", "offset", "what"),
    [
        pytest.param(v2(1, 1, b"2,1"), CONF_AT, "malformed configuration", id="unsorted"),
        pytest.param(v2(1, 1, b"1,,2"), CONF_AT, "malformed configuration", id="empty-id"),
        pytest.param(v2(1, 1, b"\xff"), CONF_AT, "malformed configuration", id="not-ascii"),
        pytest.param(v2(1, 1, b'{"v":1'), CONF_AT, "malformed configuration", id="cut-json"),
        pytest.param(v2(1, 1, b'{"learners":[1],"members":[],"v":1,"voters":[1]}'), CONF_AT,
                     "malformed configuration", id="voter-and-learner"),
        pytest.param(v2(1, 1, b'{"v":' + b"[" * 100_000), CONF_AT, "malformed configuration",
                     id="deeply-nested-json"),
        pytest.param(v2(1, 1, b"1", length=2), 32, "does not match", id="length-too-long"),
        pytest.param(v2(1, 1, b"1,2", length=1), 32, "does not match", id="length-too-short"),
        pytest.param(v2(1, 1, b"1", length=2**32 - 1), 32, "exceeds the limit", id="oversized"),
        pytest.param(state_file(b"RFTLSM02", struct.pack("<QQB", 1, 1, 0)), 16,
                     "snapshot metadata of 17 bytes", id="no-length"),
        pytest.param(state_file(b"RFTLSM01", struct.pack("<QQIQ", 1, 1, 2, 1)), 32,
                     "voter count 2", id="v1-voter-missing"),
        pytest.param(state_file(b"RFTLSM03", b""), 0, "bad magic", id="unknown-version"),
    ],
)
def test_a_malformed_configuration_is_corruption_at_its_offset(
    tmp_path: Path, raw: bytes, offset: int, what: str
) -> None:
    path = tmp_path / state.SNAPSHOT_NAME
    with pytest.raises(StorageError) as info:
        read_back(tmp_path, raw)
    assert str(info.value).startswith(f"{path}: corrupt at byte offset {offset}: "), info.value
    assert what in str(info.value)


def test_a_configuration_too_large_to_read_back_is_never_written(tmp_path: Path) -> None:
    huge = ConfState(frozenset(range(200_000)))
    assert len(huge.encode()) > state.MAX_CONF_SIZE
    state.write_snapshot_meta(str(tmp_path), SnapshotMeta(1, 1, RICH), _syncer())
    path = os.path.join(tmp_path, state.SNAPSHOT_NAME)
    with pytest.raises(StorageError, match=f"^{path}: configuration of \\d+ bytes exceeds"):
        state.write_snapshot_meta(str(tmp_path), SnapshotMeta(2, 1, huge), _syncer())
    assert state.read_snapshot_meta(str(tmp_path)) == SnapshotMeta(1, 1, RICH)

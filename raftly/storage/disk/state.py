"""The two small state files beside the log: the hard state and the snapshot metadata.

``hardstate`` holds (term, vote, commit); ``snapshot`` holds the index, term and configuration
the log starts after (index 0 and the bootstrap configuration for a new node). Its presence is
what marks a directory as bootstrapped. Both use one framing::

    magic (8 bytes) | payload length (u32) | crc32 of payload (u32) | payload

and are only ever replaced atomically (``fsio.replace_file``), so a crash leaves the old or the
new version, never a mix. (The files of ``raftly.storage.snapshots`` open with the same framing
of the same metadata.) Anything else found on disk is corruption and is reported with the
file and byte offset.
"""

from __future__ import annotations

import os
import struct
import zlib

from raftly.core.types import ConfState, HardState, SnapshotMeta
from raftly.storage.disk.fsio import Syncer, replace_file
from raftly.storage.errors import StorageError, corrupt

HARD_STATE_NAME = "hardstate"
SNAPSHOT_NAME = "snapshot"

_HARD_STATE_MAGIC = b"RFTLHS01"
_SNAPSHOT_MAGIC = b"RFTLSM01"
FRAME = struct.Struct("<8sII")
_HARD_STATE = struct.Struct("<QqQ")
_SNAPSHOT_HEAD = struct.Struct("<QQI")
_VOTER = struct.Struct("<Q")
_NO_VOTE = -1


def frame(magic: bytes, payload: bytes) -> bytes:
    """``payload`` framed with ``magic``, its length and its checksum."""
    return FRAME.pack(magic, len(payload), zlib.crc32(payload)) + payload


def _unframe(path: str, magic: bytes) -> bytes:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise StorageError(f"{path}: missing") from None
    except OSError as exc:
        raise StorageError(f"{path}: unreadable: {exc}") from exc
    return unframe(path, raw, magic)


def unframe(path: str, raw: bytes, magic: bytes, *, whole: bool = True) -> bytes:
    """The checked payload of the frame at the start of ``raw`` (read from ``path``), which is
    the whole of ``raw`` unless ``whole`` is false (a header with more of the file after it)."""
    if len(raw) < FRAME.size:
        raise corrupt(path, len(raw), "file cut short")
    found, length, crc = FRAME.unpack_from(raw, 0)
    if found != magic:
        raise corrupt(path, 0, f"bad magic {found!r}")
    end = FRAME.size + length
    if len(raw) != end if whole else len(raw) < end:
        raise corrupt(path, 8, f"length field {length} but {len(raw) - FRAME.size} bytes follow")
    payload = raw[FRAME.size : end]
    if zlib.crc32(payload) != crc:
        raise corrupt(path, FRAME.size, "checksum mismatch")
    return payload


def write_hard_state(directory: str, hs: HardState, syncer: Syncer) -> None:
    vote = _NO_VOTE if hs.vote is None else hs.vote
    payload = _HARD_STATE.pack(hs.term, vote, hs.commit)
    replace_file(directory, HARD_STATE_NAME, frame(_HARD_STATE_MAGIC, payload), syncer)


def read_hard_state(directory: str) -> HardState:
    path = os.path.join(directory, HARD_STATE_NAME)
    payload = _unframe(path, _HARD_STATE_MAGIC)
    if len(payload) != _HARD_STATE.size:
        raise corrupt(path, FRAME.size, f"hard state of {len(payload)} bytes")
    term, vote, commit = _HARD_STATE.unpack(payload)
    if vote < _NO_VOTE:
        raise corrupt(path, FRAME.size + 8, f"negative vote {vote}")
    return HardState(term, None if vote == _NO_VOTE else vote, commit)


def write_snapshot_meta(directory: str, meta: SnapshotMeta, syncer: Syncer) -> None:
    replace_file(directory, SNAPSHOT_NAME, frame(_SNAPSHOT_MAGIC, encode_meta(meta)), syncer)


def read_snapshot_meta(directory: str) -> SnapshotMeta:
    path = os.path.join(directory, SNAPSHOT_NAME)
    return decode_meta(path, _unframe(path, _SNAPSHOT_MAGIC), FRAME.size)


def encode_meta(meta: SnapshotMeta) -> bytes:
    """Index, term and voters of a snapshot (or log start), as the state files hold them."""
    voters = sorted(meta.conf.voters)
    return _SNAPSHOT_HEAD.pack(meta.index, meta.term, len(voters)) + b"".join(
        _VOTER.pack(v) for v in voters
    )


def decode_meta(path: str, payload: bytes, at: int) -> SnapshotMeta:
    """The inverse of ``encode_meta`` for a checked ``payload`` found at byte ``at`` of ``path``."""
    if len(payload) < _SNAPSHOT_HEAD.size:
        raise corrupt(path, at, f"snapshot metadata of {len(payload)} bytes")
    index, term, count = _SNAPSHOT_HEAD.unpack_from(payload, 0)
    if len(payload) != _SNAPSHOT_HEAD.size + count * _VOTER.size:
        raise corrupt(path, at + 16, f"voter count {count} does not match the length")
    voters = frozenset(
        _VOTER.unpack_from(payload, _SNAPSHOT_HEAD.size + i * _VOTER.size)[0] for i in range(count)
    )
    return SnapshotMeta(index, term, ConfState(voters))


def is_bootstrapped(directory: str) -> bool:
    return os.path.exists(os.path.join(directory, SNAPSHOT_NAME))

"""The two small state files beside the log: the hard state and the snapshot metadata.

``hardstate`` holds (term, vote, commit); ``snapshot`` holds the index, term and configuration
the log starts after (index 0 and the bootstrap configuration for a new node). Its presence is
what marks a directory as bootstrapped. Both use one framing::

    magic (8 bytes) | payload length (u32) | crc32 of payload (u32) | payload

and are only ever replaced atomically (``fsio.replace_file``), so a crash leaves the old or the
new version, never a mix. (The files of ``raftly.storage.snapshots`` open with the same framing
of the same metadata.) Anything else found on disk is corruption and is reported with the
file and byte offset.

The snapshot metadata's payload is::

    index (u64) | term (u64) | conf length (u32, at most MAX_CONF_SIZE) | conf
                                                           (magic b"RFTLSM02")

where ``conf`` is ``ConfState.encode()``, stored as is so that whatever a configuration holds
(voters, learners, members' addresses) survives a restart without this module knowing of it.
Data dirs written before it (magic b"RFTLSM01") hold ``voter count (u32) | voters (u64 each)``
after index and term instead; they are still read, and the next write replaces them.
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
_SNAPSHOT_MAGIC = b"RFTLSM02"
_SNAPSHOT_MAGIC_V1 = b"RFTLSM01"
FRAME = struct.Struct("<8sII")
_HARD_STATE = struct.Struct("<QqQ")
_SNAPSHOT_HEAD = struct.Struct("<QQI")
"""index, term, then the configuration's length (format 2) or voter count (format 1)."""
_VOTER = struct.Struct("<Q")
MAX_CONF_SIZE = 1 << 20
"""The largest encoded configuration stored: far beyond any real cluster (a member's entry is
some hundred bytes), small enough that a damaged length field never means a large read."""
MAX_META_SIZE = _SNAPSHOT_HEAD.size + MAX_CONF_SIZE
"""The largest snapshot metadata payload written."""
_NO_VOTE = -1


def frame(magic: bytes, payload: bytes) -> bytes:
    """``payload`` framed with ``magic``, its length and its checksum."""
    return FRAME.pack(magic, len(payload), zlib.crc32(payload)) + payload


def _unframe(path: str, *magics: bytes) -> tuple[bytes, bytes]:
    """The magic found and the checked payload of the state file at ``path``."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise StorageError(f"{path}: missing") from None
    except OSError as exc:
        raise StorageError(f"{path}: unreadable: {exc}") from exc
    return unframe(path, raw, magics)


def unframe(path: str, raw: bytes, magics: tuple[bytes, ...], *,
            whole: bool = True) -> tuple[bytes, bytes]:
    """The magic (one of ``magics``: the format versions read) and the checked payload of the
    frame at the start of ``raw`` (read from ``path``), which is the whole of ``raw`` unless
    ``whole`` is false (a header with more of the file after it)."""
    if len(raw) < FRAME.size:
        raise corrupt(path, len(raw), "file cut short")
    found, length, crc = FRAME.unpack_from(raw, 0)
    if found not in magics:
        raise corrupt(path, 0, f"bad magic {found!r}")
    end = FRAME.size + length
    if len(raw) != end if whole else len(raw) < end:
        raise corrupt(path, 8, f"length field {length} but {len(raw) - FRAME.size} bytes follow")
    payload = raw[FRAME.size : end]
    if zlib.crc32(payload) != crc:
        raise corrupt(path, FRAME.size, "checksum mismatch")
    return found, payload


def write_hard_state(directory: str, hs: HardState, syncer: Syncer) -> None:
    vote = _NO_VOTE if hs.vote is None else hs.vote
    payload = _HARD_STATE.pack(hs.term, vote, hs.commit)
    replace_file(directory, HARD_STATE_NAME, frame(_HARD_STATE_MAGIC, payload), syncer)


def read_hard_state(directory: str) -> HardState:
    path = os.path.join(directory, HARD_STATE_NAME)
    _, payload = _unframe(path, _HARD_STATE_MAGIC)
    if len(payload) != _HARD_STATE.size:
        raise corrupt(path, FRAME.size, f"hard state of {len(payload)} bytes")
    term, vote, commit = _HARD_STATE.unpack(payload)
    if vote < _NO_VOTE:
        raise corrupt(path, FRAME.size + 8, f"negative vote {vote}")
    return HardState(term, None if vote == _NO_VOTE else vote, commit)


def write_snapshot_meta(directory: str, meta: SnapshotMeta, syncer: Syncer) -> None:
    path = os.path.join(directory, SNAPSHOT_NAME)
    replace_file(directory, SNAPSHOT_NAME, frame(_SNAPSHOT_MAGIC, encode_meta(path, meta)),
                 syncer)


def read_snapshot_meta(directory: str) -> SnapshotMeta:
    path = os.path.join(directory, SNAPSHOT_NAME)
    found, payload = _unframe(path, _SNAPSHOT_MAGIC, _SNAPSHOT_MAGIC_V1)
    return decode_meta(path, payload, FRAME.size, legacy=found == _SNAPSHOT_MAGIC_V1)


def encode_meta(path: str, meta: SnapshotMeta) -> bytes:
    """Index, term and configuration of a snapshot (or log start), as the files hold them.

    Raises StorageError (naming ``path``, the file it is for) for a configuration larger than
    ``MAX_CONF_SIZE``: written, it could not be read back.
    """
    conf = meta.conf.encode()
    if len(conf) > MAX_CONF_SIZE:
        raise StorageError(f"{path}: configuration of {len(conf)} bytes exceeds the limit of "
                           f"{MAX_CONF_SIZE}")
    return _SNAPSHOT_HEAD.pack(meta.index, meta.term, len(conf)) + conf


def decode_meta(path: str, payload: bytes, at: int, *, legacy: bool = False) -> SnapshotMeta:
    """The inverse of ``encode_meta`` for a checked ``payload`` found at byte ``at`` of ``path``;
    ``legacy`` for a payload of format 1 (voters as integers)."""
    if len(payload) < _SNAPSHOT_HEAD.size:
        raise corrupt(path, at, f"snapshot metadata of {len(payload)} bytes")
    index, term, size = _SNAPSHOT_HEAD.unpack_from(payload, 0)
    start = _SNAPSHOT_HEAD.size
    if legacy:
        if len(payload) != start + size * _VOTER.size:
            raise corrupt(path, at + 16, f"voter count {size} does not match the length")
        voters = frozenset(_VOTER.unpack_from(payload, start + i * _VOTER.size)[0]
                           for i in range(size))
        return SnapshotMeta(index, term, ConfState(voters))
    if size > MAX_CONF_SIZE:
        raise corrupt(path, at + 16, f"configuration length {size} exceeds the limit of "
                      f"{MAX_CONF_SIZE}")
    if len(payload) != start + size:
        raise corrupt(path, at + 16, f"configuration length {size} does not match the length")
    try:
        conf = ConfState.decode(payload[start:])
    except ValueError as exc:
        raise corrupt(path, at + start, f"malformed configuration: {exc}") from None
    return SnapshotMeta(index, term, conf)


def is_bootstrapped(directory: str) -> bool:
    return os.path.exists(os.path.join(directory, SNAPSHOT_NAME))

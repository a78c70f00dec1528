"""The on-disk format of one write-ahead log segment, and nothing else.

A segment file is a 16-byte header followed by records::

    header  = magic (8 bytes, b"RFTLWAL1") | first index (u64, little endian)
    record  = length (u32) | crc32 (u32) | payload (``length`` bytes)
    payload = index (u64) | term (u64) | type (u8) | data

The checksum (zlib's CRC-32, the only one in the standard library) covers the length field and
the payload, so a corrupted length is caught too. The file is named after the index of its first
entry (``00000000000000000042.wal``) so the log can be put in order without opening every file.

``scan`` reads a whole segment back and reports either where every record starts or the first
byte offset at which the file stops making sense, leaving the decision "torn tail or corruption"
to the log, which knows whether the segment is the last one.
"""

from __future__ import annotations

import re
import struct
import zlib
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

from raftly.core.types import Entry, EntryType

MAGIC = b"RFTLWAL1"
HEADER = struct.Struct("<8sQ")
HEADER_SIZE = HEADER.size
RECORD_HEADER = struct.Struct("<II")
ENTRY_HEADER = struct.Struct("<QQB")
RECORD_OVERHEAD = RECORD_HEADER.size + ENTRY_HEADER.size
"""Bytes a record takes on disk beyond its entry's data."""

MAX_PAYLOAD = (1 << 31) - 1
"""A length above this is treated as garbage, not as an instruction to read 4 GiB."""

SUFFIX = ".wal"
_NAME = re.compile(r"^(\d{20})\.wal$")


def segment_name(first_index: int) -> str:
    """The file name of the segment whose first entry is ``first_index``."""
    return f"{first_index:020d}{SUFFIX}"


def parse_segment_name(name: str) -> int | None:
    """The first index a segment file name carries, or None if ``name`` is not a segment."""
    match = _NAME.match(name)
    return int(match.group(1)) if match else None


def encode_header(first_index: int) -> bytes:
    return HEADER.pack(MAGIC, first_index)


def record_crc(length_field: bytes | memoryview, payload: bytes | bytearray | memoryview) -> int:
    """The checksum a record carries: of its length field, then its payload."""
    return zlib.crc32(payload, zlib.crc32(length_field))


def encode_record(entry: Entry) -> bytes:
    """One entry framed as a record, ready to be appended to a segment."""
    payload = ENTRY_HEADER.pack(entry.index, entry.term, int(entry.type)) + entry.data
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"entry {entry.index} is too large ({len(entry.data)} bytes)")
    length_field = struct.pack("<I", len(payload))
    return length_field + struct.pack("<I", record_crc(length_field, payload)) + payload


def decode_records(buf: bytes | memoryview, offsets: Sequence[int]) -> list[Entry]:
    """Decode the records that start at ``offsets`` in ``buf`` (already checked by ``scan``)."""
    out: list[Entry] = []
    for off in offsets:
        length = RECORD_HEADER.unpack_from(buf, off)[0]
        start = off + RECORD_HEADER.size
        index, term, kind = ENTRY_HEADER.unpack_from(buf, start)
        data = bytes(buf[start + ENTRY_HEADER.size : start + length])
        out.append(Entry(index, term, data, EntryType(kind)))
    return out


@dataclass(slots=True)
class ScanResult:
    """What ``scan`` found in a segment.

    ``offsets`` holds where each good record starts, plus one more element: the offset just after
    the last good record. ``error`` is None if the whole file was good records; otherwise it
    says what is wrong at byte ``offsets[-1]`` (for a short header, at byte 0 with no offsets).
    ``torn`` tells whether that problem looks like an interrupted write (a short or
    checksum-failing record) rather than a well-formed record that makes no sense.
    """

    offsets: array[int]
    terms: array[int]
    error: str | None = None
    torn: bool = False


def scan(buf: bytes | memoryview, first_index: int) -> ScanResult:
    """Check every record of a segment whose name says it starts at ``first_index``."""
    offsets: array[int] = array("Q")
    terms: array[int] = array("Q")
    size = len(buf)
    if size < HEADER_SIZE:
        return ScanResult(offsets, terms, f"segment header cut short ({size} bytes)", torn=True)
    if _torn_header(buf, first_index):
        return ScanResult(offsets, terms, "segment header torn (zeros after its start)",
                          torn=True)
    magic, header_index = HEADER.unpack_from(buf, 0)
    if magic != MAGIC:
        return ScanResult(offsets, terms, "not a raftly log segment (bad magic)")
    if header_index != first_index:
        return ScanResult(
            offsets, terms, f"header says first index {header_index}, name says {first_index}"
        )
    off = HEADER_SIZE
    expected = first_index
    while True:
        offsets.append(off)
        if off == size:
            return ScanResult(offsets, terms)
        if size - off < RECORD_HEADER.size:
            return ScanResult(offsets, terms, "record header cut short", torn=True)
        length, crc = RECORD_HEADER.unpack_from(buf, off)
        start = off + RECORD_HEADER.size
        if length < ENTRY_HEADER.size or length > MAX_PAYLOAD or start + length > size:
            return _bad_record(buf, off, expected, offsets, terms,
                               f"record length {length} runs past the data")
        if record_crc(buf[off : off + 4], buf[start : start + length]) != crc:
            return _bad_record(buf, off, expected, offsets, terms, "record checksum mismatch")
        # From here on the record is exactly what was written, so nonsense is corruption (or
        # a bug), never a torn write.
        index, term, kind = ENTRY_HEADER.unpack_from(buf, start)
        if index != expected:
            return ScanResult(offsets, terms, f"record holds index {index}, expected {expected}")
        if kind not in _ENTRY_TYPES:
            return ScanResult(offsets, terms, f"record of unknown entry type {kind}")
        terms.append(term)
        expected += 1
        off = start + length


_ENTRY_TYPES = frozenset(int(t) for t in EntryType)
_SECTOR = 512
_ZERO_SECTOR = bytes(_SECTOR)


def _has_zero_sector(buf: bytes | memoryview, lo: int, hi: int) -> bool:
    """Whether a whole, aligned 512-byte sector within [lo, hi) of ``buf`` is all zeros."""
    first = -(-lo // _SECTOR) * _SECTOR
    end = min(hi, len(buf))
    return any(buf[s : s + _SECTOR] == _ZERO_SECTOR
               for s in range(first, end - _SECTOR + 1, _SECTOR))


def _torn_header(buf: bytes | memoryview, first_index: int) -> bool:
    """Whether the header is what a crash leaves of a new segment's: the start of the right
    header, then zeros (the file's size reached the disk, its data not all of it), and no
    intact record after it (else it was written whole and damaged afterwards)."""
    head = bytes(buf[:HEADER_SIZE])
    whole = encode_header(first_index)
    written = len(head.rstrip(b"\0"))
    return (head != whole and head[:written] == whole[:written]
            and _next_intact_record(buf, HEADER_SIZE, first_index) is None)


def _bad_record(buf: bytes | memoryview, off: int, expected: int, offsets: array[int],
                terms: array[int], reason: str) -> ScanResult:
    """Tell a torn write from corruption at a record that fails its checks.

    A crash mid-append leaves the end of the file short or garbled, or blocks the kernel never
    wrote, which read back as zeros (etcd's rule). So when an intact later record follows and no
    zeroed sector lies between, the bad record was written whole and damaged afterwards:
    corruption, never to be cut silently.
    """
    following = _next_intact_record(buf, off + 1, expected + 1)
    if following is None or _has_zero_sector(buf, off, following):
        return ScanResult(offsets, terms, reason, torn=True)
    return ScanResult(offsets, terms, f"{reason}; an intact record follows at byte offset "
                      f"{following}: corruption, not a torn write")


def _next_intact_record(buf: bytes | memoryview, start: int, min_index: int) -> int | None:
    """The first offset from ``start`` holding a record of an index >= ``min_index`` whose
    checksum holds. Only used on the error path, so a byte-by-byte search is fine."""
    size = len(buf)
    for off in range(start, size - RECORD_OVERHEAD + 1):
        length, crc = RECORD_HEADER.unpack_from(buf, off)
        begin = off + RECORD_HEADER.size
        if length < ENTRY_HEADER.size or begin + length > size:
            continue
        if ENTRY_HEADER.unpack_from(buf, begin)[0] < min_index:
            continue
        if record_crc(buf[off : off + 4], buf[begin : begin + length]) == crc:
            return off
    return None


"""Small builders shared by the storage tests."""

from __future__ import annotations

import os

from raftly.core.types import Entry


def ents(first: int, last: int, term: int, size: int = 8) -> list[Entry]:
    """Entries ``first..last`` of ``term`` whose data says where they belong."""
    return [Entry(i, term, payload(i, term, size)) for i in range(first, last + 1)]


def payload(index: int, term: int, size: int = 8) -> bytes:
    head = f"{index}:{term}:".encode()
    return (head * (size // len(head) + 1))[:size] if size else b""


def flip_bit(path: str | os.PathLike[str], offset: int, bit: int = 0) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ (1 << bit)]))

"""The page cache of one file: what was written but not yet fsynced.

A ``PendingFile`` overlays the backing file (which holds exactly what was fsynced) with the pages
written since, the file's current size, and how far the backing file's bytes still count after a
truncation. Reads combine the two like the kernel's page cache would; ``flush`` writes the
overlay into the backing file (the fsync); dropping the object is a power loss for this file,
and ``write_back_some`` first writes part of it back, as a kernel may have before the power
went. Pure data structure over a file descriptor: no FUSE, no locking (the caller serialises).
"""

from __future__ import annotations

import os
import random

PAGE = 4096


class PendingFile:
    """Unsynced writes and truncations of one backing file (see the module docstring)."""

    __slots__ = ("_floor", "_pages", "size")

    def __init__(self, backing_size: int) -> None:
        self.size = backing_size
        """The size readers see: the backing file's, changed by writes and truncations."""
        self._floor = backing_size
        """Backing bytes at or after this offset read as zeros: a truncation removed them."""
        self._pages: dict[int, bytearray] = {}

    @property
    def dirty(self) -> bool:
        return bool(self._pages) or self.size != self._floor

    def _backing(self, fd: int, offset: int, size: int) -> bytes:
        """Bytes of the backing file that still count, zero-padded to ``size``."""
        end = min(offset + size, self._floor)
        data = os.pread(fd, end - offset, offset) if end > offset else b""
        return data + bytes(size - len(data))

    def _page(self, fd: int, number: int) -> bytearray:
        page = self._pages.get(number)
        if page is None:
            page = self._pages[number] = bytearray(self._backing(fd, number * PAGE, PAGE))
        return page

    def read(self, fd: int, offset: int, size: int) -> bytes:
        end = min(offset + size, self.size)
        out = bytearray()
        at = offset
        while at < end:
            number, skip = divmod(at, PAGE)
            take = min(PAGE - skip, end - at)
            page = self._pages.get(number)
            if page is None:
                out += self._backing(fd, at, take)
            else:
                out += page[skip : skip + take]
            at += take
        return bytes(out)

    def write(self, fd: int, offset: int, data: bytes) -> None:
        at = offset
        view = memoryview(data)
        while view:
            number, skip = divmod(at, PAGE)
            take = min(PAGE - skip, len(view))
            self._page(fd, number)[skip : skip + take] = view[:take]
            view = view[take:]
            at += take
        self.size = max(self.size, offset + len(data))

    def truncate(self, fd: int, length: int) -> None:
        if length < self.size:
            number, keep = divmod(length, PAGE)
            if keep:  # the page that now ends the file: its tail must read as zeros later
                page = self._page(fd, number)
                page[keep:] = bytes(PAGE - keep)
            for n in [n for n in self._pages if n * PAGE >= length]:
                del self._pages[n]
            self._floor = min(self._floor, length)
        self.size = length

    def flush(self, fd: int) -> None:
        """Write the overlay into the backing file and make it durable there."""
        os.ftruncate(fd, min(self._floor, self.size))
        for number in sorted(self._pages):
            page = self._pages[number]
            start = number * PAGE
            if start < self.size:
                os.pwrite(fd, page[: self.size - start], start)
        os.ftruncate(fd, self.size)
        os.fsync(fd)
        self._pages.clear()
        self._floor = self.size

    def write_back_some(self, fd: int, rng: random.Random) -> str:
        """Write back part of the overlay, as the kernel may have before a power loss; returns
        what it did, for the log.

        The dirty pages are written in file order and the writing stops at a random point,
        possibly in the middle of a page at a random byte (LazyFS's ``torn-seq``); the file's
        size change (a truncation, an extension) reaches the disk or not, at random. So the
        file may end up with new bytes over old ones not yet cut off, or with its new size but
        a zero-filled or torn tail. Out-of-order write-back (a later page without an earlier
        one) is not modelled.
        """
        pages = sorted(self._pages)
        chosen = pages[: rng.randint(0, len(pages))]
        tear = rng.randint(1, PAGE - 1) if chosen and rng.random() < 0.5 else PAGE
        resize = rng.random() < 0.5
        length = self.size if resize else os.fstat(fd).st_size
        if resize:
            os.ftruncate(fd, min(self._floor, self.size))
        for number in chosen:
            start = number * PAGE
            take = min(tear if number == chosen[-1] else PAGE, length - start)
            if take > 0:
                os.pwrite(fd, self._pages[number][:take], start)
        if resize:
            os.ftruncate(fd, self.size)
        os.fsync(fd)
        torn = f", the last torn after {tear} bytes" if tear < PAGE else ""
        return (f"{len(chosen)} of {len(pages)} dirty pages{torn}, size "
                f"{'changed to ' + str(self.size) if resize else 'kept at ' + str(length)}")

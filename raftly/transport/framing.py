"""Reading one length-prefixed frame off an asyncio stream.

The one frame reader of handshakes and snapshot streams (message connections split frames in
bulk with ``codec.FrameDecoder`` instead). Kept apart from ``tcp`` so that ``snapshot_stream``,
which ``tcp`` drives, can use it too.
"""

from __future__ import annotations

import asyncio

from raftly.transport.codec import DEFAULT_MAX_FRAME_SIZE, HEADER_SIZE, CodecError, frame_length

__all__ = ["read_frame"]


async def read_frame(
    reader: asyncio.StreamReader, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
) -> bytes | None:
    """Read one frame's payload; None on a clean end of stream before any byte of a frame.

    Raises FrameTooLarge before reading the body of an oversized frame, and CodecError if the
    stream ends in the middle of a frame.
    """
    try:
        header = await reader.readexactly(HEADER_SIZE)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise CodecError("stream ended inside a frame header") from None
    size = frame_length(header, max_frame_size)
    try:
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError as exc:
        raise CodecError(
            f"stream ended inside a frame ({len(exc.partial)} of {size} bytes)"
        ) from None

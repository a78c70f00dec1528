"""One snapshot file streamed over one connection: the sender's and the receiver's halves.

The connection is already open and its handshake accepted (``TcpTransport`` does that, with a
handshake naming the snapshot channel). The sender writes a header frame (the ``InstallSnapshot``
message, meta only, and the file's size), then the file in chunk frames, never more than
``window`` of them unacknowledged. The receiver writes each chunk to its sink in a worker thread
and acknowledges it once written, so a slow disk throttles the sender instead of filling memory.
After the last byte the receiver calls ``sink.finish()`` (verification, fsync: also in the worker
thread), hands the message to ``on_message`` and answers "done"; only then does the sender count
the transfer as a success. Every wait is bounded by ``timeout``: a transfer that makes no
progress for that long fails. The frame layouts are in ``raftly.transport.codec``.

Failures raise ``TransferError`` (or ``CodecError``/``OSError``) on the sender, for the
transport to log once and turn into False. The receiver handles its own: it logs one line,
aborts the sink, tells the sender why and closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO, TypeVar

from raftly.core.messages import InstallSnapshot
from raftly.logevents import event
from raftly.transport.base import IncomingSnapshotSink, MessageHandler, SnapshotSinkFactory
from raftly.transport.codec import (
    CodecError,
    SnapshotReply,
    decode_snapshot_chunk,
    decode_snapshot_header,
    decode_snapshot_reply,
    encode_frame,
    encode_snapshot_ack,
    encode_snapshot_done,
    encode_snapshot_header,
    encode_snapshot_refusal,
    snapshot_chunk_prefix,
)
from raftly.transport.framing import read_frame

__all__ = ["TransferError", "describe", "receive_snapshot", "send_snapshot_stream"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_REPLY_MAX_FRAME_SIZE = 8192
"""Acks and "done" are tiny; a refusal's reason is bounded by the codec."""
_LINGER = 2.0
"""Seconds a refusing receiver keeps reading (and discarding) what the sender still had in
flight, so that closing does not reset the connection before the sender has read the reason."""


class TransferError(Exception):
    """A snapshot transfer failed; the text says why, for the one log line about it."""


def describe(exc: BaseException) -> str:
    """``Type: text`` of an exception, for log lines."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _read(reader: asyncio.StreamReader, max_frame_size: int, timeout: float,
                peer: str) -> bytes:
    try:
        async with asyncio.timeout(timeout):
            payload = await read_frame(reader, max_frame_size)
    except TimeoutError:
        raise TransferError(f"no progress for {timeout:g}s") from None
    if payload is None:
        raise TransferError(f"the {peer} closed the connection")
    return payload


async def _write(writer: asyncio.StreamWriter, timeout: float, *data: bytes) -> None:
    for part in data:
        writer.write(part)
    try:
        async with asyncio.timeout(timeout):
            await writer.drain()
    except TimeoutError:
        raise TransferError(f"no progress for {timeout:g}s") from None


async def _in_thread(executor: ThreadPoolExecutor, what: str, fn: Callable[..., T],
                     *args: object) -> T:
    """``fn(*args)`` in the transfer's worker thread; any exception becomes a TransferError."""
    try:
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)
    except Exception as exc:
        raise TransferError(f"{what} failed: {describe(exc)}") from exc


# -- sender -------------------------------------------------------------------------------------


async def send_snapshot_stream(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    msg: InstallSnapshot,
    file: BinaryIO,
    size: int,
    *,
    chunk_size: int,
    window: int,
    timeout: float,
    executor: ThreadPoolExecutor,
) -> None:
    """Stream ``size`` bytes of ``file`` after the header; return once the receiver said done."""
    await _write(writer, timeout, encode_frame(encode_snapshot_header(msg, size)))
    sent = 0
    unacked: deque[int] = deque()  # the byte counts the receiver's next acks must name
    while sent < size or unacked:
        if sent < size and len(unacked) < window:
            n = min(chunk_size, size - sent)
            chunk = await _in_thread(executor, "reading the snapshot file", file.read, n)
            if len(chunk) != n:
                raise TransferError(f"the file ended at byte {sent + len(chunk)} of {size}")
            sent += n
            unacked.append(sent)
            await _write(writer, timeout, snapshot_chunk_prefix(n), chunk)
            continue
        reply = await _reply(reader, timeout)
        if reply.kind != "ack" or reply.received != unacked[0]:
            raise TransferError(f"expected an ack of {unacked[0]} bytes, got {reply}")
        unacked.popleft()
    reply = await _reply(reader, timeout)
    if reply.kind != "done":
        raise TransferError(f"expected done, got {reply}")


async def _reply(reader: asyncio.StreamReader, timeout: float) -> SnapshotReply:
    reply = decode_snapshot_reply(await _read(reader, _REPLY_MAX_FRAME_SIZE, timeout, "receiver"))
    if reply.kind == "refused":
        raise TransferError(f"refused by the receiver: {reply.reason}")
    return reply


# -- receiver -----------------------------------------------------------------------------------


async def receive_snapshot(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    node: int,
    me: int,
    sink_factory: SnapshotSinkFactory | None,
    on_message: MessageHandler,
    timeout: float,
    max_frame_size: int,
    decode_kwargs: dict[str, int],
) -> bool:
    """Serve the snapshot stream of ``node`` (handshake done); True once delivered and confirmed.

    On any failure: one log line, the sink aborted (unless the message was already delivered:
    then the node holds the data and only the confirmation was lost), a refusal sent, False.
    """
    executor = ThreadPoolExecutor(1, thread_name_prefix=f"raftly-snapshot-{me}-from-{node}")
    sink = None
    delivered = False
    what = "snapshot"
    index: int | None = None  # for the events: known once the header is read
    try:
        msg, size = decode_snapshot_header(
            await _read(reader, max_frame_size, timeout, "sender"), **decode_kwargs
        )
        meta = msg.snapshot.meta
        what = f"snapshot {meta.term}/{meta.index} ({size} bytes)"
        index = meta.index
        if msg.src != node or msg.dst != me:
            raise CodecError(f"InstallSnapshot from {msg.src} to {msg.dst} on a stream of "
                             f"node {node} to node {me}")
        if sink_factory is None:
            raise TransferError("this node does not accept snapshots")
        try:
            sink = sink_factory(msg)
        except Exception as exc:
            raise TransferError(f"refused by this node: {describe(exc)}") from exc
        if sink is None:
            raise TransferError("refused by this node")
        received = 0
        while received < size:
            chunk = decode_snapshot_chunk(await _read(reader, max_frame_size, timeout, "sender"))
            if received + len(chunk) > size:
                raise TransferError(f"more than the {size} bytes announced")
            await _in_thread(executor, "writing", sink.write, chunk)
            received += len(chunk)
            await _write(writer, timeout, encode_frame(encode_snapshot_ack(received)))
        got = await _in_thread(executor, "finishing (verification)", sink.finish)
        if got is not None and got != meta:
            raise TransferError(f"the file holds snapshot {got}, the header announced {meta}")
        delivered = True
        try:
            on_message(msg)
        except Exception:
            # The handler's bug, not the peer's: loud, and the leader will try again.
            logger.exception("node %d: on_message failed for the %s from node %d", me, what,
                             node)
            delivered = False
            raise TransferError("this node failed to take it") from None
        await _write(writer, timeout, encode_frame(encode_snapshot_done()))
        logger.info("node %d: received %s from node %d", me, what, node,
                    extra=event("snapshot_received", peer=node, index=index, size=size))
        return True
    except (TransferError, CodecError, OSError) as exc:
        why = str(exc) if isinstance(exc, TransferError) else describe(exc)
        logger.warning("node %d: %s from node %d failed: %s", me, what, node, why,
                       extra=event("snapshot_receive_failed", peer=node, index=index,
                                   reason=why))
        if not delivered:
            _abort(executor, sink, me, node)
            sink = None
            await _refuse(reader, writer, str(exc))
        return False
    finally:
        if sink is not None and not delivered:  # cancelled (transport closing, superseded)
            _abort(executor, sink, me, node)
        executor.shutdown(wait=False)  # the thread still runs what was submitted


def _abort(executor: ThreadPoolExecutor, sink: IncomingSnapshotSink | None, me: int,
           node: int) -> None:
    """Queue ``sink.abort()`` in the worker thread, after any write still running there.

    Not awaited: a write stuck on a dead disk must not hold up the transport's close().
    """
    if sink is None:
        return

    def run() -> None:
        try:
            sink.abort()
        except Exception:
            logger.exception("node %d: aborting the snapshot sink of node %d failed", me, node)

    executor.submit(run)


async def _refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reason: str) -> None:
    with contextlib.suppress(OSError, TimeoutError, TransferError):
        await _write(writer, _LINGER, encode_frame(encode_snapshot_refusal(reason)))
        async with asyncio.timeout(_LINGER):
            while await reader.read(1 << 16):
                pass

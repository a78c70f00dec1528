"""Moving Raft messages between nodes: the wire codec, TCP, and an in-memory network for tests.

- ``codec``: msgpack encoding of every core message, length-prefixed frames, the handshake, and
  strict validation of everything decoded (``CodecError`` on any malformed input).
- ``base``: the ``Transport`` protocol the server drives (``start``, ``send``, ``send_snapshot``,
  ``close``) and ``IncomingSnapshotSink``, where a received snapshot file is written.
- ``tcp``: ``TcpTransport``, asyncio TCP (optionally mutual TLS) with handshake, bounded queues
  and reconnection.
- ``snapshot_stream``: one snapshot file in chunks over its own connection, with flow control.
- ``framing``: reading one frame off an asyncio stream.
- ``memory``: ``MemoryNetwork`` of in-process transports with partitions, for server tests.
"""

from raftly.transport.base import (
    IncomingSnapshotSink,
    MessageHandler,
    PeerTraffic,
    SnapshotSinkFactory,
    Transport,
)
from raftly.transport.codec import (
    PROTOCOL_VERSION,
    CodecError,
    FrameDecoder,
    FrameTooLarge,
    Handshake,
    HandshakeReply,
    decode_handshake,
    decode_handshake_reply,
    decode_message,
    encode_frame,
    encode_handshake,
    encode_handshake_reply,
    encode_message,
    frame_message,
)
from raftly.transport.framing import read_frame
from raftly.transport.memory import MemoryNetwork, MemoryTransport
from raftly.transport.tcp import TcpTransport

__all__ = [
    "PROTOCOL_VERSION",
    "CodecError",
    "FrameDecoder",
    "FrameTooLarge",
    "Handshake",
    "HandshakeReply",
    "IncomingSnapshotSink",
    "MemoryNetwork",
    "MemoryTransport",
    "MessageHandler",
    "PeerTraffic",
    "SnapshotSinkFactory",
    "TcpTransport",
    "Transport",
    "decode_handshake",
    "decode_handshake_reply",
    "decode_message",
    "encode_frame",
    "encode_handshake",
    "encode_handshake_reply",
    "encode_message",
    "frame_message",
    "read_frame",
]

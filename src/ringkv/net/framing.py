"""Length-prefixed frames of the inter-node RPC stream (docs/formats/rpc.md, "Frames").

A frame is a 4-byte big-endian unsigned payload length followed by that many payload bytes.
This module is pure, in the way of h11: bytes go in, whole frame payloads come out; it never
reads a socket, so the TCP protocol, the tests and any future transport share one parser.

Contract: a `FrameDecoder` belongs to one byte stream. Once it has raised
`FrameTooLargeError` the stream is out of step and must be closed; the decoder raises again on
every later call rather than guess where the next frame starts.
"""

from __future__ import annotations

import struct

from ringkv.errors import FrameTooLargeError

FRAME_HEADER_BYTES = 4
DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024
# The length field is a u32, so no limit can be above this.
LARGEST_MAX_FRAME_BYTES = 2**32 - 1

_HEADER = struct.Struct(">I")


def encode_frame(payload: bytes, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> bytes:
    """Return `payload` with its length header. Raises FrameTooLargeError over the limit."""
    if len(payload) > max_frame_bytes:
        raise FrameTooLargeError(len(payload), max_frame_bytes)
    return _HEADER.pack(len(payload)) + payload


def begin_frame(buffer: bytearray) -> int:
    """Reserve a header at the end of `buffer` and return where the frame starts.

    With `end_frame` this lets a message be encoded straight into an output buffer (msgspec's
    `encode_into`) instead of into a temporary bytes object that is then copied.
    """
    start = len(buffer)
    buffer += b"\0\0\0\0"
    return start


def end_frame(buffer: bytearray, start: int, max_frame_bytes: int) -> int:
    """Write the header of the frame begun at `start`; return its payload length.

    Over the limit the frame is removed from `buffer` again (the buffer is as it was before
    `begin_frame`) and FrameTooLargeError is raised.
    """
    length = len(buffer) - start - FRAME_HEADER_BYTES
    if length > max_frame_bytes:
        del buffer[start:]
        raise FrameTooLargeError(length, max_frame_bytes)
    _HEADER.pack_into(buffer, start, length)
    return length


class FrameDecoder:
    """Split a byte stream into frame payloads.

    `feed(data)` returns the payloads completed by `data`, in order, possibly none; bytes of an
    unfinished frame are kept for the next call. A length over `max_frame_bytes` raises as soon
    as its header has arrived, before any of its payload is buffered, so a peer cannot make us
    hold more than one frame's worth of memory.
    """

    __slots__ = ("_buffer", "_failed", "max_frame_bytes")

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES):
        if not 0 <= max_frame_bytes <= LARGEST_MAX_FRAME_BYTES:
            raise ValueError(
                f"max_frame_bytes must be in [0, {LARGEST_MAX_FRAME_BYTES}], got {max_frame_bytes}"
            )
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._failed: FrameTooLargeError | None = None

    @property
    def buffered_bytes(self) -> int:
        """Bytes received that do not yet make a whole frame."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview, max_frames: int = 0) -> list[bytes]:
        """The payloads `data` completes, at most `max_frames` of them (0: all); bytes of
        frames not returned stay buffered, their headers unread, for the next call: a
        connection reading a handshake takes one frame at a time under a smaller limit."""
        if self._failed is not None:
            raise FrameTooLargeError(self._failed.size_bytes, self.max_frame_bytes)
        buffer = self._buffer
        if buffer:
            buffer += data
            view: bytes | bytearray | memoryview = buffer
        else:
            # Fast path: nothing is pending, so whole frames are sliced straight out of `data`
            # without first copying it into our buffer.
            view = data
        frames: list[bytes] = []
        size = len(view)
        position = 0
        limit = self.max_frame_bytes
        while size - position >= FRAME_HEADER_BYTES:
            if max_frames and len(frames) >= max_frames:
                break
            (length,) = _HEADER.unpack_from(view, position)
            if length > limit:
                self._failed = FrameTooLargeError(length, limit)
                buffer.clear()
                raise self._failed
            end = position + FRAME_HEADER_BYTES + length
            if end > size:
                break
            frames.append(bytes(view[position + FRAME_HEADER_BYTES : end]))
            position = end
        if view is buffer:
            del buffer[:position]
        elif position < size:
            buffer += view[position:]
        return frames

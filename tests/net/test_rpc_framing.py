"""Frames of the RPC stream: any split of the bytes decodes to the same frames; a length over
the limit is refused before its payload is buffered (docs/formats/rpc.md, "Frames")."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringkv.errors import FrameTooLargeError, LimitError, RpcError
from ringkv.net.framing import (
    FRAME_HEADER_BYTES,
    FrameDecoder,
    begin_frame,
    encode_frame,
    end_frame,
)

payloads = st.lists(st.binary(max_size=300), max_size=20)


@st.composite
def stream_and_cuts(draw: st.DrawFn) -> tuple[list[bytes], bytes, list[int]]:
    frames = draw(payloads)
    stream = b"".join(encode_frame(frame) for frame in frames)
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=30)))
    return frames, stream, cuts


@given(stream_and_cuts())
def test_any_split_of_the_stream_decodes_to_the_same_frames(case):
    frames, stream, cuts = case
    decoder = FrameDecoder()
    decoded: list[bytes] = []
    previous = 0
    for cut in [*cuts, len(stream)]:
        decoded += decoder.feed(stream[previous:cut])
        previous = cut
    assert decoded == frames
    assert decoder.buffered_bytes == 0


@given(payloads)
def test_one_byte_at_a_time_decodes_to_the_same_frames(frames):
    stream = b"".join(encode_frame(frame) for frame in frames)
    decoder = FrameDecoder()
    decoded = [frame for i in range(len(stream)) for frame in decoder.feed(stream[i : i + 1])]
    assert decoded == frames


@given(payloads, st.sampled_from([bytes, bytearray, memoryview]))
def test_feeding_bytearray_or_memoryview_is_the_same_as_bytes(frames, kind):
    stream = b"".join(encode_frame(frame) for frame in frames)
    decoder = FrameDecoder()
    half = len(stream) // 2
    decoded = decoder.feed(kind(stream[:half])) + decoder.feed(kind(stream[half:]))
    assert decoded == frames
    assert all(type(frame) is bytes for frame in decoded)


@given(st.integers(min_value=1001, max_value=2**32 - 1), st.binary(max_size=50))
def test_length_over_the_limit_is_refused_as_soon_as_the_header_arrives(length, tail):
    decoder = FrameDecoder(max_frame_bytes=1000)
    with pytest.raises(FrameTooLargeError) as caught:
        decoder.feed(struct.pack(">I", length) + tail)
    assert caught.value.size_bytes == length
    assert "max_frame_bytes=1000" in str(caught.value)
    assert decoder.buffered_bytes == 0  # nothing of the oversize frame is held


def test_oversize_header_split_across_feeds_is_still_refused():
    decoder = FrameDecoder(max_frame_bytes=10)
    assert decoder.feed(b"\x00\x00") == []
    with pytest.raises(FrameTooLargeError):
        decoder.feed(b"\x00\x0b")


def test_decoder_stays_failed_after_an_oversize_frame():
    decoder = FrameDecoder(max_frame_bytes=10)
    with pytest.raises(FrameTooLargeError):
        decoder.feed(struct.pack(">I", 11))
    with pytest.raises(FrameTooLargeError):
        decoder.feed(encode_frame(b"ok"))


def test_frames_before_an_oversize_one_are_not_returned_but_the_stream_is_refused():
    # The connection is closed anyway; what matters is that no bytes after the bad header
    # are taken as a frame.
    decoder = FrameDecoder(max_frame_bytes=10)
    with pytest.raises(FrameTooLargeError):
        decoder.feed(encode_frame(b"fine") + struct.pack(">I", 11))


def test_frame_exactly_at_the_limit_is_accepted():
    decoder = FrameDecoder(max_frame_bytes=10)
    assert decoder.feed(encode_frame(b"x" * 10, max_frame_bytes=10)) == [b"x" * 10]


def test_empty_frame_is_a_frame():
    assert FrameDecoder().feed(encode_frame(b"") + encode_frame(b"a")) == [b"", b"a"]


def test_encoding_a_frame_over_the_limit_is_refused():
    with pytest.raises(FrameTooLargeError) as caught:
        encode_frame(b"x" * 11, max_frame_bytes=10)
    assert isinstance(caught.value, LimitError) and isinstance(caught.value, RpcError)


def test_header_is_four_bytes_big_endian_length():
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert FRAME_HEADER_BYTES == 4


def test_frame_built_in_place_matches_encode_frame():
    buffer = bytearray(b"earlier")
    start = begin_frame(buffer)
    buffer += b"payload"
    assert end_frame(buffer, start, max_frame_bytes=100) == 7
    assert bytes(buffer) == b"earlier" + encode_frame(b"payload")


def test_frame_built_in_place_over_the_limit_leaves_the_buffer_as_it_was():
    buffer = bytearray(b"earlier")
    start = begin_frame(buffer)
    buffer += b"x" * 11
    with pytest.raises(FrameTooLargeError):
        end_frame(buffer, start, max_frame_bytes=10)
    assert bytes(buffer) == b"earlier"


def test_negative_limit_is_rejected():
    with pytest.raises(ValueError, match="max_frame_bytes"):
        FrameDecoder(max_frame_bytes=-1)

"""A decompression bomb in a frame message is refused before any pixel is decoded, whether
its message headers tell the truth about its size or not."""

from __future__ import annotations

import struct
import tracemalloc

import cv2
import numpy as np
import pytest
from facescreen.bus.codecs import FrameMeta
from facescreen.bus.deadletter import DeadLetter, MessageRef
from facescreen.bus.entry import FramePolicy, check_frame, decode_frame


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A real 64x48 JPEG whose frame header (SOF0) is rewritten to claim width x height."""
    ok, data = cv2.imencode(".jpg", np.full((48, 64, 3), 128, np.uint8))
    assert ok
    jpeg = bytearray(data.tobytes())
    sof = jpeg.find(b"\xff\xc0")
    assert sof > 0
    jpeg[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(jpeg)


def _ref(data: bytes, width: int, height: int) -> MessageRef:
    headers = FrameMeta("cam", "s", 0, 0, 0.0, width, height).headers()
    return MessageRef("frames", 0, 7, b"cam", data, headers)


def test_headers_claiming_a_huge_frame_are_refused_before_decoding() -> None:
    bomb = _jpeg_claiming(16384, 12288)
    with pytest.raises(DeadLetter) as caught:
        check_frame(_ref(bomb, 16384, 12288), FramePolicy())
    assert caught.value.reason == "too_many_pixels"


def test_a_jpeg_bigger_than_its_headers_say_is_refused_without_decoding() -> None:
    bomb = _jpeg_claiming(16384, 12288)
    ref = _ref(bomb, 64, 48)  # the producer lies: a small frame
    meta = check_frame(ref, FramePolicy())
    tracemalloc.start()
    try:
        with pytest.raises(DeadLetter) as caught:
            decode_frame(ref, meta)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert caught.value.reason == "corrupt_image" and "exceeds the limit" in caught.value.detail
    assert peak < 10 * 1024 * 1024  # nothing near 600 MB of pixels was allocated

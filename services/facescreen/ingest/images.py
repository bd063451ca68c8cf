"""Loading photos (watch-list enrolment, single-image screening) into 8-bit BGR.

The pixel count is read from the file header before anything is decoded: OpenCV would
happily allocate gigabytes for a small, highly compressed "decompression bomb", so a
20000x20000 PNG is refused from its first bytes. Only formats whose header this module
can read are accepted: PNG, JPEG, BMP and WebP.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import BinaryIO, cast

import cv2
import numpy as np

from facescreen.core.types import ImageBGR

DEFAULT_MAX_PIXELS = 40_000_000
_HEADER_BYTES = 64
_JPEG_MAX_STRAY = 4096
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class ImageError(ValueError):
    """The input is not a usable image; the message says why and names the input."""


def load_image(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageBGR:
    """Read an image file as uint8 HxWx3 BGR (see `decode_image` for the conversions).

    The header is checked from the open file before the rest is read, so an oversized
    image costs a few bytes of I/O, not its file size.
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(f"image file not found: {path}")
    if not path.is_file():
        raise ImageError(f"not a regular file: {path}")
    with path.open("rb") as fh:
        if fh.read(1) == b"":
            raise ImageError(f"image file is empty: {path}")
        fh.seek(0)
        fmt = _check_header(fh, str(path), max_pixels)
        fh.seek(0)
        data = fh.read()
    return _decode(data, fmt, str(path), max_pixels)


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                 name: str = "<bytes>") -> ImageBGR:
    """Decode in-memory image bytes to uint8 HxWx3 BGR; `name` is used in error messages.

    Conversions, so every later stage sees one layout:
    - grayscale -> BGR by repeating the channel;
    - alpha (BGRA, gray+alpha) -> composited over white, not dropped: transparent pixels
      often hold arbitrary colour (commonly black), and a cut-out portrait on white looks
      like the ID photo it usually is;
    - 16-bit -> 8-bit by scaling the full range (v / 257, rounded);
    - JPEG EXIF orientation is applied, so the face is upright;
    - BMP is read as colour without alpha: 32-bit BMPs often carry an unused, all-zero
      alpha byte that would otherwise turn the whole picture white.
    """
    if not data:
        raise ImageError(f"{name}: no data (empty image)")
    fmt = _check_header(io.BytesIO(data), name, max_pixels)
    return _decode(data, fmt, name, max_pixels)


# -- header sniffing -------------------------------------------------------------------


def image_size(fh: BinaryIO) -> tuple[str, int, int] | None:
    """(format, width, height) from the header of a PNG/JPEG/BMP/WebP, or None if unknown.

    Reads only headers (for JPEG, the marker segments up to the frame header), never
    pixel data. Raises ImageError for a recognised but malformed header.
    """
    head = fh.read(_HEADER_BYTES)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        if len(head) < 24 or head[12:16] != b"IHDR":
            raise ImageError("PNG without an IHDR header")
        width, height = struct.unpack(">II", head[16:24])
        return "PNG", width, height
    if head.startswith(b"\xff\xd8\xff"):
        fh.seek(2)
        width, height = _jpeg_size(fh)
        return "JPEG", width, height
    if head.startswith(b"BM") and len(head) >= 26:
        (dib_size,) = struct.unpack("<I", head[14:18])
        if dib_size == 12:  # OS/2 BITMAPCOREHEADER
            width, height = struct.unpack("<HH", head[18:22])
        elif dib_size >= 40:
            width, height = struct.unpack("<ii", head[18:26])
            height = abs(height)  # negative: rows stored top-down
        else:
            raise ImageError(f"BMP with unknown header size {dib_size}")
        if width < 0:
            raise ImageError("BMP with a negative width")
        return "BMP", width, height
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP" and len(head) >= 30:
        chunk = head[12:16]
        if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
            w, h = struct.unpack("<HH", head[26:30])
            return "WebP", w & 0x3FFF, h & 0x3FFF
        if chunk == b"VP8L" and head[20] == 0x2F:
            (bits,) = struct.unpack("<I", head[21:25])
            return "WebP", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if chunk == b"VP8X":
            width = int.from_bytes(head[24:27], "little") + 1
            height = int.from_bytes(head[27:30], "little") + 1
            return "WebP", width, height
        raise ImageError("WebP with an unknown or malformed first chunk")
    return None


def _jpeg_size(fh: BinaryIO) -> tuple[int, int]:
    """Walk JPEG marker segments (EXIF and ICC blocks may come first) to the SOF header.

    Stray bytes between segments are skipped, as libjpeg does, up to a bound.
    """
    stray = 0
    while True:
        byte = fh.read(1)
        if not byte:
            break
        if byte != b"\xff":
            stray += 1
            if stray > _JPEG_MAX_STRAY:
                break
            continue
        marker = fh.read(1)
        while marker == b"\xff":  # fill bytes
            marker = fh.read(1)
        if not marker:
            break
        code = marker[0]
        if code == 0x01 or 0xD0 <= code <= 0xD8:  # stand-alone markers, no length
            continue
        if code in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            break
        length_bytes = fh.read(2)
        if len(length_bytes) < 2:
            break
        (length,) = struct.unpack(">H", length_bytes)
        if length < 2:
            raise ImageError("JPEG segment with an invalid length")
        if code in _JPEG_SOF:
            sof = fh.read(5)
            if len(sof) < 5:
                break
            height, width = struct.unpack(">HH", sof[1:5])
            return width, height
        fh.seek(length - 2, io.SEEK_CUR)
    raise ImageError("JPEG without a frame header (truncated or corrupt)")


def _check_header(fh: BinaryIO, name: str, max_pixels: int) -> str:
    """Refuse unknown, zero-size and oversized images from their header; return the format."""
    try:
        found = image_size(fh)
    except ImageError as exc:
        raise ImageError(f"{name}: {exc}") from None
    if found is None:
        raise ImageError(f"{name}: not an image (no PNG, JPEG, BMP or WebP signature)")
    fmt, width, height = found
    if width == 0 or height == 0:
        raise ImageError(f"{name}: zero-size {fmt} image ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(f"{name}: {fmt} image of {width}x{height} = {width * height:,} pixels "
                         f"exceeds the limit of {max_pixels:,}")
    return fmt


# -- decoding --------------------------------------------------------------------------


def _decode(data: bytes, fmt: str, name: str, max_pixels: int) -> ImageBGR:
    buf = np.frombuffer(data, dtype=np.uint8)
    # IMREAD_UNCHANGED keeps alpha and 16 bits but ignores EXIF orientation; JPEG has no
    # alpha, so it is read in colour, which applies the orientation.
    flags = cv2.IMREAD_COLOR if fmt in ("JPEG", "BMP") else cv2.IMREAD_UNCHANGED
    image = cv2.imdecode(buf, flags)
    if image is None or image.size == 0:
        raise ImageError(f"{name}: corrupt or undecodable image data")
    if image.shape[0] * image.shape[1] > max_pixels:  # header and decoder disagree
        raise ImageError(f"{name}: decoded image exceeds the limit of {max_pixels:,} pixels")
    return _to_bgr8(image, name)


def _to_bgr8(image: np.ndarray, name: str) -> ImageBGR:
    if image.dtype == np.uint16:
        image = ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageError(f"{name}: unsupported pixel type {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return cast(ImageBGR, cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
    channels = image.shape[2]
    if channels == 3:
        return cast(ImageBGR, np.ascontiguousarray(image))
    if channels == 2:  # gray + alpha
        colour = cv2.cvtColor(np.ascontiguousarray(image[:, :, 0]), cv2.COLOR_GRAY2BGR)
        return _over_white(colour, image[:, :, 1])
    if channels == 4:
        return _over_white(image[:, :, :3], image[:, :, 3])
    raise ImageError(f"{name}: unsupported channel count {channels}")


def _over_white(colour: np.ndarray, alpha: np.ndarray) -> ImageBGR:
    """Composite over white in integer math: c*a + 255*(255-a) fits in uint16."""
    a = alpha.astype(np.uint16)[:, :, None]
    out = (colour.astype(np.uint16) * a + 255 * (255 - a) + 127) // 255
    return cast(ImageBGR, out.astype(np.uint8))

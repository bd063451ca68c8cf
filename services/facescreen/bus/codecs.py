"""Message codecs: frame headers, embeddings as base64, face events to and from core `Face`s.

The matcher rebuilds the very `Face` objects the analyzer produced (float32 embeddings and
landmarks survive the trip bit for bit; JSON numbers are Python's shortest round-trip
repr), so `SourceScreener` decides exactly as it would in the embedded pipeline.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from facescreen.core.types import Detection, Face, FloatArray, Quality

SCHEMA_VERSION = 1
JPEG = "image/jpeg"
EmbeddingDtype = Literal["float32", "float16"]
_DTYPES: dict[str, np.dtype[Any]] = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}
_NORM_TOLERANCE = {"float32": 1e-3, "float16": 1e-2}
Headers = list[tuple[str, bytes]]


class CodecError(ValueError):
    """A message cannot be decoded; the message says why (never what the payload held)."""


# -- frames --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameMeta:
    """What the headers of a frame message say about the JPEG it carries."""

    camera: str
    session: str
    seq: int
    frame_index: int
    captured_at: float
    width: int
    height: int

    def headers(self) -> Headers:
        values: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION, "camera": self.camera, "session": self.session,
            "seq": self.seq, "frame_index": self.frame_index,
            "captured_at": repr(float(self.captured_at)), "width": self.width,
            "height": self.height, "content_type": JPEG,
        }
        return [(k, str(v).encode()) for k, v in values.items()]


_INT_HEADERS = ("schema_version", "seq", "frame_index", "width", "height")
_FLOAT_HEADERS = ("captured_at",)


def headers_as_text(headers: Iterable[tuple[str, bytes | None]] | Mapping[str, bytes] | None,
                    ) -> dict[str, str]:
    """Kafka headers as a str -> str dict; the last of repeated names wins.

    Raises CodecError for a value that is not UTF-8.
    """
    if headers is None:
        return {}
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, str] = {}
    for name, value in items:
        try:
            out[str(name)] = (value or b"").decode("utf-8")
        except UnicodeDecodeError:
            raise CodecError(f"header {name!r} is not UTF-8") from None
    return out


def typed_frame_headers(text: Mapping[str, str]) -> dict[str, Any]:
    """Numbers parsed where they parse; anything else is left as text for the schema to refuse."""
    typed: dict[str, Any] = dict(text)
    for name in _INT_HEADERS:
        if name in typed:
            with contextlib.suppress(ValueError):
                typed[name] = int(typed[name])
    for name in _FLOAT_HEADERS:
        if name in typed:
            try:
                number = float(typed[name])
            except ValueError:
                continue
            if np.isfinite(number):
                typed[name] = number
    return typed


def frame_meta(typed: Mapping[str, Any]) -> FrameMeta:
    """The FrameMeta of headers that passed `frame.schema.json`."""
    return FrameMeta(camera=typed["camera"], session=typed["session"], seq=typed["seq"],
                     frame_index=typed["frame_index"], captured_at=float(typed["captured_at"]),
                     width=typed["width"], height=typed["height"])


# -- embeddings ----------------------------------------------------------------------------


def encode_embedding(vector: FloatArray, dtype: EmbeddingDtype = "float32") -> str:
    """Base64 of the little-endian vector in `dtype`."""
    array = np.asarray(vector, dtype=_DTYPES[dtype])
    if array.ndim != 1:
        raise ValueError(f"an embedding is one vector, got shape {array.shape}")
    return base64.b64encode(array.tobytes()).decode("ascii")


def decode_embedding(text: str, dtype: EmbeddingDtype, dim: int) -> FloatArray:
    """The float32 vector of `encode_embedding` output, checked for size and unit length.

    float16 vectors are renormalised after widening (rounding moves the norm a little);
    float32 ones are returned exactly as sent.
    """
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CodecError("embedding is not valid base64") from None
    width = _DTYPES[dtype].itemsize
    if len(raw) != dim * width:
        raise CodecError(f"embedding has {len(raw)} bytes, expected {dim} x {width} ({dtype})")
    vector = np.frombuffer(raw, dtype=_DTYPES[dtype]).astype(np.float32)
    if not np.all(np.isfinite(vector)):
        raise CodecError("embedding has non-finite values")
    norm = float(np.linalg.norm(vector))
    if abs(norm - 1.0) > _NORM_TOLERANCE[dtype]:
        raise CodecError(f"embedding is not L2-normalised (norm {norm:.4f})")
    if dtype != "float32":
        vector = (vector / norm).astype(np.float32)
    return vector


# -- face events ---------------------------------------------------------------------------


def _face_doc(face: Face, dtype: EmbeddingDtype) -> dict[str, Any]:
    d = face.detection
    doc: dict[str, Any] = {
        "box": [float(v) for v in d.box],
        "landmarks": [[float(x), float(y)] for x, y in np.asarray(d.landmarks)],
        "detector_score": float(d.score),
        "quality": {
            "score": float(face.quality.score),
            "components": {k: float(v) for k, v in face.quality.components.items()},
            "reasons": list(face.quality.reasons),
        },
    }
    if face.embedding is not None:
        doc["embedding"] = encode_embedding(face.embedding, dtype)
    return doc


def build_face_event(meta: FrameMeta, faces: Sequence[Face], *, detector: str, embedder: str,
                     dim: int, dtype: EmbeddingDtype = "float32",
                     analyzed_at: float | None = None) -> dict[str, Any]:
    """One frame's face event (see `schemas/face_event.schema.json`)."""
    return {
        "schema_version": SCHEMA_VERSION, "camera": meta.camera, "session": meta.session,
        "seq": meta.seq, "frame_index": meta.frame_index, "captured_at": meta.captured_at,
        "analyzed_at": time.time() if analyzed_at is None else analyzed_at,
        "frame": {"width": meta.width, "height": meta.height},
        "models": {"detector": detector, "embedder": embedder},
        "embedding_dtype": dtype, "embedding_dim": dim,
        "faces": [_face_doc(f, dtype) for f in faces],
    }


def dumps(doc: Mapping[str, Any]) -> bytes:
    """Compact JSON; NaN and infinities are refused (they are not JSON)."""
    return json.dumps(doc, allow_nan=False, separators=(",", ":")).encode()


@dataclass(frozen=True)
class FaceEvent:
    """A parsed face event: its frame's identity and the rebuilt core faces."""

    camera: str
    session: str
    seq: int
    frame_index: int
    captured_at: float
    detector: str
    embedder: str
    faces: list[Face]


def parse_face_event(doc: Mapping[str, Any]) -> FaceEvent:
    """Rebuild core `Face`s from an event that passed `face_event.schema.json`.

    Raises CodecError when an embedding is undecodable, of the wrong size, not unit
    length, or present on a face that failed quality (or missing on one that passed).
    """
    dtype: EmbeddingDtype = doc["embedding_dtype"]
    dim = int(doc["embedding_dim"])
    faces = []
    for i, item in enumerate(doc["faces"]):
        q = item["quality"]
        quality = Quality(score=float(q["score"]),
                          components={k: float(v) for k, v in q["components"].items()},
                          reasons=tuple(q["reasons"]))
        encoded = item.get("embedding")
        if (encoded is not None) != quality.passed:
            state = "passed" if quality.passed else "failed"
            raise CodecError(f"face {i} {state} quality but "
                             f"{'has' if encoded is not None else 'lacks'} an embedding")
        try:
            embedding = None if encoded is None else decode_embedding(encoded, dtype, dim)
        except CodecError as exc:
            raise CodecError(f"face {i}: {exc}") from None
        box = tuple(float(v) for v in item["box"])
        detection = Detection(box=(box[0], box[1], box[2], box[3]),
                              landmarks=np.asarray(item["landmarks"], np.float32),
                              score=float(item["detector_score"]))
        faces.append(Face(detection=detection, quality=quality, embedding=embedding))
    return FaceEvent(camera=doc["camera"], session=doc["session"], seq=int(doc["seq"]),
                     frame_index=int(doc["frame_index"]), captured_at=float(doc["captured_at"]),
                     detector=doc["models"]["detector"], embedder=doc["models"]["embedder"],
                     faces=faces)

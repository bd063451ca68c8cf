"""Validation where a message enters a service: a usable value, or a `DeadLetter` with a reason.

Checks run cheapest first, and nothing is decoded before its headers and size are known
good, so a hostile or broken producer costs little: headers, schema version, key,
camera, size, JPEG signature and end marker, then (in the worker thread) decoding.

Face events get the same treatment before any of them touches the matcher's state: size,
nesting depth (measured without recursion), finite numbers, faces per event, the
schema, then plausibility (boxes inside a margin around the frame and not inverted,
capture time not in the future). Each limit is a `FaceEventPolicy` field; every check
costs time linear in the size of the message at most.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema

from facescreen.alerts.events import validator
from facescreen.bus.codecs import (
    SCHEMA_VERSION,
    CodecError,
    FaceEvent,
    FrameMeta,
    frame_meta,
    headers_as_text,
    parse_face_event,
    typed_frame_headers,
)
from facescreen.bus.deadletter import DeadLetter, MessageRef
from facescreen.bus.safejson import JsonLimitError, loads_bounded
from facescreen.core.types import ImageBGR
from facescreen.ingest.images import ImageError, decode_image

_FRAME_REQUIRED = ("schema_version", "camera", "session", "seq", "frame_index", "captured_at",
                   "width", "height", "content_type")
DEFAULT_MAX_FRAME_BYTES = 900_000
DEFAULT_MAX_FRAME_PIXELS = 12_000_000  # under Apache Kafka's default 1 MB message limit
DEFAULT_MAX_EVENT_BYTES = 1_048_576  # Apache Kafka's default message limit
DEFAULT_MAX_FRAME_AGE_S = 2.0  # as `facescreen run --max-frame-age`
# Capture times are seconds since the epoch (live) or since the start of a file: one after
# 2001-09-09 is a wall-clock time, since no video file runs for 31 years.
WALL_CLOCK_AFTER_S = 1e9


@dataclass(frozen=True)
class FramePolicy:
    """What the analyzer accepts: a size limit and, optionally, the cameras it knows.

    `max_age_s` (0: off) is freshness, not validity: a live frame captured longer ago is
    skipped unanalysed (see `is_stale`), never dead-lettered.
    """

    max_bytes: int = DEFAULT_MAX_FRAME_BYTES
    cameras: frozenset[str] | None = None
    # 4K UHD is 8.3 Mpixel; a 786 kB JPEG claiming 16384x12288 would take 600 MB decoded.
    max_pixels: int = DEFAULT_MAX_FRAME_PIXELS
    max_age_s: float = DEFAULT_MAX_FRAME_AGE_S

    def __post_init__(self) -> None:
        if not 0 <= self.max_age_s < float("inf"):
            raise ValueError(f"max frame age must be >= 0 s (0: off), got {self.max_age_s}")


@dataclass(frozen=True)
class FaceEventPolicy:
    """What the matcher accepts as a face event, before it touches any state.

    A face event carries about 1 kB per face, so the byte limit and the face limit agree;
    256 faces is a crowd far beyond what one 640-pixel detector pass resolves well, and
    screening cost grows with faces x tracks. Boxes and landmarks may overhang the frame
    by `box_margin` frame sizes (detectors clip differently), no more. Capture times are
    seconds since the epoch (live) or since the start of a file: never negative and
    never more than `max_future_s` ahead of this machine's clock.
    """

    max_bytes: int = DEFAULT_MAX_EVENT_BYTES
    max_depth: int = 8  # the deepest legitimate path is faces[i].landmarks[j]: depth 4
    max_faces: int = 256
    box_margin: float = 1.0
    max_future_s: float = 3600.0

    def __post_init__(self) -> None:
        if min(self.max_bytes, self.max_depth, self.max_faces) < 1 or self.box_margin < 0:
            raise ValueError("face event limits must be positive")


def _schema_error(error: jsonschema.ValidationError) -> str:
    """The schema violation without quoting a long value (it could be an embedding)."""
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    if len(repr(error.instance)) <= 80:
        return f"{where}: {error.message}"[:300]
    return f"{where}: fails {error.validator!r} {str(error.validator_value)[:80]}"


def check_frame(ref: MessageRef, policy: FramePolicy) -> FrameMeta:
    """Everything about a frame message that can be checked without decoding the JPEG."""
    try:
        text = headers_as_text(ref.headers)
    except CodecError as exc:
        raise DeadLetter("bad_headers", str(exc)) from None
    missing = [h for h in _FRAME_REQUIRED if h not in text]
    if missing:
        raise DeadLetter("missing_headers", f"missing header(s): {', '.join(missing)}")
    typed = typed_frame_headers(text)
    if typed["schema_version"] != SCHEMA_VERSION:
        raise DeadLetter("schema_version", f"frame schema version {text['schema_version']!r}; "
                         f"this service reads version {SCHEMA_VERSION}")
    errors = sorted(validator("frame").iter_errors(typed), key=lambda e: list(e.absolute_path))
    if errors:
        raise DeadLetter("bad_headers", "; ".join(_schema_error(e) for e in errors[:3]))
    meta = frame_meta(typed)
    if meta.width * meta.height > policy.max_pixels:
        raise DeadLetter("too_many_pixels", f"frame of {meta.width}x{meta.height} exceeds the "
                         f"limit of {policy.max_pixels:,} pixels")
    if ref.key is None or ref.key.decode("utf-8", "replace") != meta.camera:
        raise DeadLetter("key_mismatch", f"message key does not name camera {meta.camera!r}")
    if policy.cameras is not None and meta.camera not in policy.cameras:
        raise DeadLetter("unknown_camera", f"camera {meta.camera!r} is not configured")
    value = ref.value or b""
    if len(value) > policy.max_bytes:
        raise DeadLetter("oversized", f"frame of {len(value):,} bytes exceeds the limit of "
                         f"{policy.max_bytes:,}")
    if not value.startswith(b"\xff\xd8\xff"):
        raise DeadLetter("not_jpeg", f"value of {len(value):,} bytes is not a JPEG "
                         "(no start-of-image marker)")
    if not value.rstrip(b"\x00").endswith(b"\xff\xd9"):
        # libjpeg decodes a truncated JPEG with a grey bottom and only a warning.
        raise DeadLetter("truncated", "JPEG has no end-of-image marker (truncated)")
    return meta


def frame_age(meta: FrameMeta, now: float) -> float | None:
    """Seconds since a live frame was captured; None for a file's frame (video time)."""
    if meta.captured_at < WALL_CLOCK_AFTER_S:
        return None
    return now - meta.captured_at


def is_stale(meta: FrameMeta, policy: FramePolicy, now: float) -> bool:
    """A live frame too old to be worth analysing: under overload, what is screened stays
    at most `max_age_s` old instead of the backlog delaying every decision further.

    The embedded mode's rule (`facescreen run --max-frame-age`): only live frames, since
    a file is screened whole and in order (its capture times are video time). A frame is
    judged by its capture time, which ingest stamps as it reads it from the camera, so the
    time spent in ingest and on the broker counts; a clock ahead of ours is never stale.
    """
    age = frame_age(meta, now)
    return policy.max_age_s > 0 and age is not None and age > policy.max_age_s


def decode_frame(ref: MessageRef, meta: FrameMeta) -> ImageBGR:
    """The frame's pixels; the header sizes must be the decoded sizes.

    The JPEG's own frame header is read before anything is decoded and may claim no more
    pixels than the message headers (already bounded by the policy): a producer that lies
    in its headers cannot make the analyzer allocate a decompression bomb.
    """
    try:
        image = decode_image(ref.value or b"", name=f"frame {meta.camera}#{meta.seq}",
                             max_pixels=meta.width * meta.height)
    except ImageError as exc:
        raise DeadLetter("corrupt_image", str(exc)) from None
    height, width = image.shape[:2]
    if (width, height) != (meta.width, meta.height):
        raise DeadLetter("size_mismatch", f"decoded {width}x{height}, headers say "
                         f"{meta.width}x{meta.height}")
    return image


def _face_event_doc(ref: MessageRef, policy: FaceEventPolicy) -> dict[str, Any]:
    """The JSON object of a face event, parsed at a bounded cost."""
    value = ref.value or b""
    if len(value) > policy.max_bytes:
        raise DeadLetter("oversized", f"face event of {len(value):,} bytes exceeds the limit "
                         f"of {policy.max_bytes:,}")
    try:
        doc = loads_bounded(value, policy.max_depth)
    except JsonLimitError as exc:
        raise DeadLetter(exc.reason, str(exc)) from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise DeadLetter("invalid_json", f"not JSON: {exc.__class__.__name__} at byte "
                         f"{getattr(exc, 'pos', getattr(exc, 'start', '?'))}") from None
    if not isinstance(doc, dict):
        raise DeadLetter("invalid_event", f"a face event is a JSON object, got "
                         f"{type(doc).__name__}")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise DeadLetter("schema_version", f"face event schema version "
                         f"{str(doc.get('schema_version'))[:20]!r}; this service reads "
                         f"version {SCHEMA_VERSION}")
    faces = doc.get("faces")
    if isinstance(faces, list) and len(faces) > policy.max_faces:
        raise DeadLetter("too_many_faces", f"{len(faces)} faces in one event, the limit is "
                         f"{policy.max_faces}")
    return doc


def _outside(points: Sequence[Sequence[float]], width: int, height: int,
             margin: float) -> bool:
    return any(not (-margin * width <= x <= (1 + margin) * width
                    and -margin * height <= y <= (1 + margin) * height) for x, y in points)


def _check_plausible(doc: Mapping[str, Any], policy: FaceEventPolicy) -> None:
    """Values the schema cannot bound: they depend on the frame size and the clock."""
    captured_at = doc["captured_at"]
    latest = time.time() + policy.max_future_s
    if not 0 <= captured_at <= latest:
        raise DeadLetter("implausible_time", f"captured_at {captured_at:.6g} is outside "
                         f"[0, now + {policy.max_future_s:g} s]")
    width, height = doc["frame"]["width"], doc["frame"]["height"]
    for i, face in enumerate(doc["faces"]):
        x1, y1, x2, y2 = face["box"]
        if not (x1 < x2 and y1 < y2) or _outside(((x1, y1), (x2, y2)), width, height,
                                                 policy.box_margin):
            raise DeadLetter("implausible_box", f"face {i}: box is inverted, empty or "
                             f"outside the {width}x{height} frame's margin")
        if _outside(face["landmarks"], width, height, policy.box_margin):
            raise DeadLetter("implausible_box", f"face {i}: landmarks outside the "
                             f"{width}x{height} frame's margin")


def check_face_event(ref: MessageRef, embedder: str | None = None, dim: int | None = None,
                     policy: FaceEventPolicy | None = None) -> FaceEvent:
    """A face event parsed into core faces, or a DeadLetter saying what is wrong with it."""
    policy = policy or FaceEventPolicy()
    doc = _face_event_doc(ref, policy)
    errors = sorted(validator("face_event").iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        raise DeadLetter("invalid_event", "; ".join(_schema_error(e) for e in errors[:3]))
    if ref.key is None or ref.key.decode("utf-8", "replace") != doc["camera"]:
        raise DeadLetter("key_mismatch", f"message key does not name camera {doc['camera']!r}")
    if embedder is not None and doc["models"]["embedder"] != embedder:
        raise DeadLetter("model_mismatch", f"embeddings from {doc['models']['embedder']!r}, "
                         f"the watchlist holds {embedder!r} templates")
    if dim is not None and doc["embedding_dim"] != dim:
        raise DeadLetter("model_mismatch", f"embedding dim {doc['embedding_dim']}, the "
                         f"watchlist holds dim {dim}")
    _check_plausible(doc, policy)
    try:
        return parse_face_event(doc)
    except CodecError as exc:
        raise DeadLetter("bad_embedding", str(exc)) from None


def known_cameras(names: Collection[str] | None) -> frozenset[str] | None:
    return None if not names else frozenset(names)

"""Hostile frames at the analyzer's door, through the checks and the real models.

`FrameBatchAnalyzer.check` then `.analyze` are what the analyzer's agent runs for every
batch; together they may only give each frame a face event that passes its schema, a
dead letter with a reason, or Stale, never raise. Headers come from the frame schema
(valid, then broken in one place) and from a list of known triggers; bodies are random
bytes, damaged real JPEGs, other formats and a JPEG whose header claims 16384x12288.
Real frames among the hostile ones must still come out as face events with a face.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterator

import pytest
from facescreen.alerts.events import validator
from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.analyzer.backends import ModelMissingError
from facescreen.analyzer.runtime import make_backend
from facescreen.analyzer.service import FrameBatchAnalyzer, Stale
from facescreen.bus.codecs import FrameMeta, Headers, headers_as_text, typed_frame_headers
from facescreen.bus.deadletter import DeadLetter, MessageRef, dead_letter_event
from facescreen.bus.entry import FramePolicy
from facescreen.core.specs import PipelineConfig
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import REPO
from tests.fuzz.frame_cases import (
    Result,
    claiming,
    hostile_body,
    hostile_headers,
    jpeg,
    run_batch,
)
from tests.infra import missing

FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
REASON = re.compile(r"^[a-z][a-z0-9_]*$")
SMALL = (64, 48)  # real frames this small keep inference cheap; the face is still found


@pytest.fixture(scope="module")
def work() -> Iterator[FrameBatchAnalyzer]:
    config = PipelineConfig()
    try:
        backend = make_backend(config, REPO, 2)
    except ModelMissingError as exc:
        missing(f"{exc}")
    yield FrameBatchAnalyzer(FaceAnalyzer(backend, config), FramePolicy())


def _meta(seq: int = 0, size: tuple[int, int] = SMALL) -> FrameMeta:
    return FrameMeta("cam1", "s1", seq, seq, time.time(), size[0], size[1])


def _ref(value: bytes | None, headers: Headers, key: bytes | None = b"cam1") -> MessageRef:
    return MessageRef("facescreen.frames", 0, 7, key, value, headers)


def _judge(ref: MessageRef, result: Result) -> str:
    """The result's kind, after checking it is well formed."""
    if isinstance(result, DeadLetter):
        assert REASON.match(result.reason)
        assert result.detail and "\n" not in result.detail and len(result.detail) <= 1000
        dead_letter_event("analyzer", ref, result)  # publishable: validates its own schema
        return result.reason
    if isinstance(result, Stale):
        return "stale"
    validator("face_event").validate(result)
    return "face_event"


def _schema_invalid(headers: Headers) -> bool:
    try:
        typed = typed_frame_headers(headers_as_text(headers))
    except ValueError:
        return True
    return not validator("frame").is_valid(typed)


def _one(work: FrameBatchAnalyzer, ref: MessageRef) -> str:
    started = time.perf_counter()
    [result] = run_batch(work, [ref], time.time())
    assert time.perf_counter() - started < 30
    return _judge(ref, result)


@FUZZ
@given(st.randoms(use_true_random=False))
def test_hostile_headers(work: FrameBatchAnalyzer, rng: random.Random) -> None:
    meta = _meta()
    kind, key, headers = hostile_headers(rng, meta)
    outcome = _one(work, _ref(jpeg(*SMALL), headers, key))
    if _schema_invalid(headers):
        assert outcome not in ("face_event", "stale"), kind


@FUZZ
@given(st.randoms(use_true_random=False))
def test_hostile_bodies(work: FrameBatchAnalyzer, rng: random.Random) -> None:
    meta = _meta()
    kind, value = hostile_body(rng, jpeg(*SMALL))
    outcome = _one(work, _ref(value, meta.headers()))
    if kind in ("random", "empty", "png", "gif", "bomb_header", "no_end_marker", "other_size",
                "markers_only"):
        assert outcome not in ("face_event", "stale"), kind


def test_known_triggers_are_dead_letters(work: FrameBatchAnalyzer) -> None:
    meta, real = _meta(), jpeg(*SMALL)

    def with_header(name: str, value: bytes) -> str:
        headers = [(n, value if n == name else v) for n, v in meta.headers()]
        return _one(work, _ref(real, headers))

    assert _one(work, _ref(claiming(real, 16384, 12288), meta.headers())) == "corrupt_image"
    big = FrameMeta("cam1", "s1", 0, 0, time.time(), 16384, 12288)
    assert _one(work, _ref(claiming(real, 16384, 12288), big.headers())) == "too_many_pixels"
    assert _one(work, _ref(b"", meta.headers())) == "not_jpeg"
    assert _one(work, _ref(None, meta.headers())) == "not_jpeg"
    assert _one(work, _ref(real[:-2], meta.headers())) == "truncated"
    assert with_header("captured_at", b"nan") == "bad_headers"
    assert with_header("width", b"-640") == "bad_headers"
    assert with_header("camera", b"../etc") == "bad_headers"
    assert with_header("seq", b"\xff") == "bad_headers"
    assert _one(work, _ref(real, meta.headers(), key=None)) == "key_mismatch"
    assert _one(work, _ref(real, [h for h in meta.headers() if h[0] != "session"])) \
        == "missing_headers"


def test_headers_whose_face_event_would_fail_its_schema_are_dead_letters(
        work: FrameBatchAnalyzer) -> None:
    """A frame the frame schema lets through must make a face event the face-event schema
    accepts: a negative capture time or a seq beyond 2**53 - 1 (the face event's bounds)
    is the producer's fault, so a dead letter, not an exception in the analysis."""
    for captured_at, seq in ((-5.0, 0), (12.0, 2**53), (12.0, 10**17)):
        meta = FrameMeta("cam1", "s1", seq, 0, captured_at, *SMALL)
        assert _one(work, _ref(jpeg(*SMALL), meta.headers())) == "bad_headers"


def test_real_frames_among_hostile_ones_still_make_face_events(
        work: FrameBatchAnalyzer) -> None:
    rng = random.Random(5)
    refs, real = [], []
    for seq in range(8):
        meta = _meta(seq, (160, 120))
        if seq % 3 == 0:
            refs.append(_ref(jpeg(160, 120), meta.headers()))
            real.append(seq)
        elif seq % 3 == 1:
            refs.append(_ref(hostile_body(rng, jpeg(160, 120))[1], meta.headers()))
        else:
            _, key, headers = hostile_headers(rng, meta)
            refs.append(_ref(jpeg(160, 120), headers, key))
    results = run_batch(work, refs, time.time())
    outcomes = [_judge(ref, result) for ref, result in zip(refs, results, strict=True)]
    for seq in real:
        result = results[seq]
        assert outcomes[seq] == "face_event" and isinstance(result, dict)
        assert result["seq"] == seq and len(result["faces"]) == 1
        assert "embedding" in result["faces"][0]

"""Hostile face events at the matcher's door: every message is a FaceEvent or a DeadLetter
with a reason, never another exception, and each costs little however it is built."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
from facescreen.bus.codecs import FrameMeta, build_face_event, dumps
from facescreen.bus.deadletter import DeadLetter, MessageRef
from facescreen.bus.entry import check_face_event
from facescreen.core.alignment import l2_normalise
from facescreen.core.types import Detection, Face, Quality
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FUZZ = settings(max_examples=600, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
DIM = 128


def _valid_event(faces: int = 2) -> dict[str, Any]:
    meta = FrameMeta("cam1", "s1", 3, 3, time.time(), 640, 480)
    rng = np.random.default_rng(0)
    found = [Face(Detection((10.0 + 100 * i, 20.0, 90.0 + 100 * i, 120.0),
                            np.full((5, 2), 50.0 + 100 * i, np.float32), 0.9),
                  Quality(0.8, {"sharpness": 0.5}),
                  l2_normalise(rng.normal(size=DIM).astype(np.float32)))
             for i in range(faces)]
    return build_face_event(meta, found, detector="centerface", embedder="dlib-resnet29-128",
                            dim=DIM)


VALID = dumps(_valid_event())


def _ref(value: bytes | None, key: bytes | None = b"cam1") -> MessageRef:
    return MessageRef("facescreen.faces", 0, 0, key, value, [])


def _check(value: bytes | None, key: bytes | None = b"cam1") -> str:
    started = time.perf_counter()
    try:
        check_face_event(_ref(value, key), "dlib-resnet29-128", DIM)
        outcome = "ok"
    except DeadLetter as letter:
        assert letter.reason and letter.detail and "\n" not in letter.detail
        assert len(letter.detail) <= 1000  # never the payload
        outcome = letter.reason
    assert time.perf_counter() - started < 2.0
    return outcome


def test_the_valid_event_passes() -> None:
    assert _check(VALID) == "ok"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(
        st.text(max_size=10), children, max_size=5), max_leaves=30)


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes(value: bytes) -> None:
    _check(value)


@FUZZ
@given(json_values)
def test_random_json(value: Any) -> None:
    _check(json.dumps(value).encode())


@FUZZ
@given(st.sampled_from(sorted(_valid_event())), json_values)
def test_one_field_replaced(field: str, value: Any) -> None:
    doc = _valid_event()
    doc[field] = value
    _check(json.dumps(doc).encode())


FACE_FIELDS = sorted(_valid_event()["faces"][0])


@FUZZ
@given(st.sampled_from(FACE_FIELDS), json_values | st.sampled_from(
    [[float("1e39")] * 4, [-1e39, -1e39, 1e39, 1e39], [1e308] * 10, "A" * 4000]))
def test_one_face_field_replaced(field: str, value: Any) -> None:
    doc = _valid_event()
    doc["faces"][0][field] = value
    _check(json.dumps(doc).encode())


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)),
                min_size=1, max_size=8), st.integers(0, 200))
def test_mutated_bytes_of_a_valid_event(flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(VALID)
    for position, byte in flips:
        data[position] = byte
    _check(bytes(data[: len(data) - cut]))


def test_known_triggers_are_dead_letters() -> None:
    deep = b"[" * 2000 + b"]" * 2000
    assert _check(deep) != "ok"
    assert _check(b"[" * 100_000 + b"]" * 100_000) != "ok"
    nan = VALID.replace(b'"captured_at":', b'"captured_at":NaN,"x":', 1)
    assert _check(nan) != "ok"
    many = _valid_event(faces=1)
    many["faces"] = many["faces"] * 3000
    assert _check(dumps(many)) != "ok"
    assert _check(VALID, key=b"other-camera") == "key_mismatch"
    assert _check(None) != "ok" and _check(b"") != "ok"

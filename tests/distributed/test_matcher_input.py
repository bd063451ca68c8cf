"""The matcher's defences without a broker: bounded JSON, face event limits, seq
plausibility, and 'any failure is the message's dead letter, never the worker's end'."""

from __future__ import annotations

import json
import random
import time
from typing import Any

import numpy as np
import pytest
from facescreen.bus.codecs import FrameMeta, build_face_event, dumps
from facescreen.bus.deadletter import DeadLetter, MessageRef, failure_letter
from facescreen.bus.entry import FaceEventPolicy, check_face_event
from facescreen.bus.safejson import loads_bounded, nesting_depth
from facescreen.core.alignment import l2_normalise
from facescreen.core.matching import Candidate, GalleryIndex
from facescreen.core.types import Detection, Face, FloatArray, Quality
from facescreen.matcher.work import FaceEventMatcher

DIM = 16
TEMPLATE = l2_normalise(np.random.default_rng(3).normal(size=DIM).astype(np.float32))


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


def test_nesting_depth_agrees_with_the_parse_and_is_linear() -> None:
    rng = random.Random(0)
    tricky = ["a[b", 'q"\\[', "\\", "]]}", "{\\\\", '\\"[']

    def make(level: int) -> Any:
        roll = rng.random()
        if level > 6 or roll < 0.3:
            return rng.choice([1, 2.5, None, True, *tricky])
        if roll < 0.65:
            return [make(level + 1) for _ in range(rng.randint(0, 3))]
        return {rng.choice(tricky) + str(i): make(level + 1) for i in range(rng.randint(0, 3))}

    for _ in range(2000):
        value = make(0)
        assert nesting_depth(json.dumps(value).encode()) == _depth(value)
    # Worst cases for a scanner: a megabyte of brackets, and of escaped unclosed quotes.
    for data in (b"[" * 1_000_000, b'"' + b'\\"' * 500_000):
        started = time.perf_counter()
        nesting_depth(data)
        assert time.perf_counter() - started < 1.0
    with pytest.raises(ValueError, match="depth 2000"):
        loads_bounded(b"[" * 2000 + b"]" * 2000, 8)


def _face(box: tuple[float, float, float, float] = (100.0, 100.0, 200.0, 220.0),
          embedding: FloatArray | None = TEMPLATE) -> Face:
    landmarks = np.array([[130, 140], [170, 140], [150, 165], [135, 190], [165, 190]],
                         np.float32)
    return Face(Detection(box, landmarks, 0.9), Quality(0.8, {"sharpness": 0.5}), embedding)


def _doc(seq: int = 0, faces: list[Face] | None = None, camera: str = "cam",
         captured_at: float = 10.0) -> dict[str, Any]:
    meta = FrameMeta(camera, "s1", seq, seq, captured_at, 640, 480)
    return build_face_event(meta, [_face()] if faces is None else faces, detector="d",
                            embedder="e", dim=DIM)


def _ref(value: bytes, offset: int = 0, camera: str = "cam") -> MessageRef:
    return MessageRef("faces", 0, offset, camera.encode(), value)


def _reason(value: bytes) -> str:
    with pytest.raises(DeadLetter) as caught:
        check_face_event(_ref(value), "e", DIM, FaceEventPolicy(max_faces=64))
    return caught.value.reason


def test_every_known_trigger_is_refused_at_entry_with_its_reason() -> None:
    doc = _doc()
    assert check_face_event(_ref(dumps(doc)), "e", DIM).faces
    deep = b'{"a":' + b"[" * 2000 + b"]" * 2000 + b"}"  # 2,000 deep in 12 kB
    assert len(deep) < 12_500 and _reason(deep) == "too_deep"
    assert _reason(b"[" * 100_000 + b"]" * 100_000) == "too_deep"  # the 200 kB one
    nan_box = {**doc, "faces": [{**doc["faces"][0], "box": [float("nan")] * 4}]}
    assert _reason(json.dumps(nan_box).encode()) == "non_finite"
    huge_box = {**doc, "faces": [{**doc["faces"][0], "box": [-1e39, -1e39, 1e39, 1e39]}]}
    assert _reason(dumps(huge_box)) == "implausible_box"
    inverted = {**doc, "faces": [{**doc["faces"][0], "box": [200, 100, 100, 220]}]}
    assert _reason(dumps(inverted)) == "implausible_box"
    far_landmarks = {**doc, "faces": [{**doc["faces"][0], "landmarks": [[1e6, 0]] * 5}]}
    assert _reason(dumps(far_landmarks)) == "implausible_box"
    assert _reason(json.dumps({**doc, "captured_at": float("nan")}).encode()) == "non_finite"
    assert _reason(dumps({**doc, "captured_at": time.time() + 86_400})) == "implausible_time"
    assert _reason(dumps(doc).replace(b'"seq":0', b'"seq":1e999')) == "non_finite"
    assert _reason(dumps(doc).replace(b'"seq":0', b'"seq":' + b"9" * 40)) == \
        "number_out_of_range"
    crowd = {**doc, "faces": doc["faces"] * 65}
    assert _reason(dumps(crowd)) == "too_many_faces"
    with pytest.raises(DeadLetter, match="oversized"):
        check_face_event(_ref(dumps(doc)), "e", DIM, FaceEventPolicy(max_bytes=100))


def test_checking_a_megabyte_event_takes_bounded_time() -> None:
    crowd = _doc(faces=[_face() for _ in range(256)])
    value = dumps(crowd)
    started = time.perf_counter()
    assert len(check_face_event(_ref(value), "e", DIM).faces) == 256
    elapsed = time.perf_counter() - started
    print(f"\n256-face event of {len(value):,} bytes checked and parsed in {elapsed:.3f} s")
    assert elapsed < 2.0


def _matcher(search: Any = None, thresholds: dict[str, float] | None = None,
             ) -> FaceEventMatcher:
    index = GalleryIndex(("alice",), ("vip",), TEMPLATE[None].copy())
    # A threshold this high needs min_faces (3) faces before an alert: no early decision.
    return FaceEventMatcher(search or index.search, thresholds or {"vip": 0.98},
                            embedder="e", dim=DIM)


def _opened(matcher: FaceEventMatcher, seqs: range, offset: int = 0,
            camera: str = "cam") -> tuple[list[str], list[str]]:
    """Alert ids opened and dead-letter reasons, over face events of these seqs."""
    opened, reasons = [], []
    for seq in seqs:
        out = matcher.process(_ref(dumps(_doc(seq, camera=camera, captured_at=seq / 5)),
                                   offset + seq, camera))
        opened += [a.alert_id for a in out.alerts if a.state == "open"]
        reasons += [out.letter.reason] if out.letter else []
    return opened, reasons


def test_a_forged_seq_jump_is_dead_lettered_and_real_events_still_alert() -> None:
    matcher = _matcher()
    assert _opened(matcher, range(2)) == ([], [])
    forged = matcher.process(_ref(dumps(_doc(10**15)), 50))
    assert forged.letter is not None and forged.letter.reason == "seq_jump"
    opened, reasons = _opened(matcher, range(2, 5))  # the third face opens the alert
    assert len(opened) == 1 and reasons == []
    # A real gap (frames expired unread) resynchronises after three agreeing events.
    assert _opened(matcher, range(5000, 5003))[1] == ["seq_jump", "seq_jump"]
    assert matcher.process(_ref(dumps(_doc(5003)), 9)).letter is None
    assert matcher.process(_ref(dumps(_doc(5002)), 9)).duplicate


def test_an_exception_while_screening_is_that_events_dead_letter() -> None:
    index = GalleryIndex(("alice",), ("vip",), TEMPLATE[None].copy())
    calls = []

    def flaky(probes: FloatArray, k: int) -> list[list[Candidate]]:
        calls.append(len(probes))
        if len(calls) == 2:
            raise ZeroDivisionError("a defect in the search")
        return index.search(probes, k)

    matcher = _matcher(flaky)
    assert _opened(matcher, range(2)) == ([], ["internal_error"])
    # The camera's half-updated state was dropped; the next events are screened from a
    # fresh state and the person still alerts.
    opened, reasons = _opened(matcher, range(2, 5))
    assert len(opened) == 1 and reasons == []
    assert failure_letter(ZeroDivisionError("x")).detail == "builtins.ZeroDivisionError"


def test_an_alert_that_fails_its_own_schema_is_dead_lettered() -> None:
    matcher = _matcher(thresholds={"vip": -2.0})  # a corrupt threshold, out of cosine range
    out = matcher.process(_ref(dumps(_doc(0))))
    assert out.alerts == [] and out.letter is not None
    assert out.letter.reason == "invalid_output"
    assert "ValidationError" in out.letter.detail


def test_a_saved_camera_state_continues_in_another_matcher() -> None:
    """What the table holds is enough: a second matcher given the saved bytes continues
    the track (no second alert id), skips what was screened, and keeps a seq jump."""
    first = _matcher()
    saved, opened = None, []
    for seq in range(4):
        out = first.process(_ref(dumps(_doc(seq, captured_at=seq / 5)), seq))
        saved = out.state or saved
        opened += [a.alert_id for a in out.alerts if a.state == "open"]
    assert saved is not None and json.loads(saved)["last_seq"] == 3 and len(opened) == 1
    second = _matcher()
    assert second.process(_ref(dumps(_doc(3)), 3), saved).duplicate
    later = [second.process(_ref(dumps(_doc(4, captured_at=0.8)), 4), saved)]
    for n, seq in enumerate(range(5, 9)):  # nobody in view: the track ends
        later.append(second.process(_ref(dumps(_doc(seq, faces=[], captured_at=4.0 + 3 * n)),
                                         seq), saved))
    revisions = [(a.state, a.alert_id) for out in later for a in out.alerts]
    assert ("closed", opened[0]) in revisions
    assert all(alert_id == opened[0] for _, alert_id in revisions)
    assert "open" not in {state for state, _ in revisions}
    # An unreadable saved state starts the camera afresh instead of failing every event.
    fresh = _matcher().process(_ref(dumps(_doc(9)), 9), b'{"version": 99}')
    assert fresh.letter is None and fresh.state is not None


def test_feedback_messages_are_checked_before_they_reach_a_screener() -> None:
    from facescreen.alerts.feedback import feedback_to_doc, new_feedback

    matcher = _matcher()
    good = feedback_to_doc(new_feedback("00000000-0000-4000-8000-000000000000",
                                        actor="r", camera="cam"))
    cases = {
        "oversized": b"{" + b" " * 70_000 + b"}",
        "invalid_json": b"{nope",
        "too_deep": b"[" * 50 + b"]" * 50,
        "invalid_feedback": dumps({**good, "verdict": "accept"}),
        "key_mismatch": dumps({**good, "camera": "other"}),
    }
    for reason, value in cases.items():
        out = matcher.feedback(_ref(value))
        assert out.letter is not None and out.letter.reason == reason, (reason, out.letter)
    assert _reason_of(matcher, {**good, "camera": None}) == "invalid_feedback"
    unknown = matcher.feedback(_ref(dumps(good)))
    assert unknown.letter is None and not unknown.applied


def _reason_of(matcher: FaceEventMatcher, doc: dict[str, Any]) -> str | None:
    out = matcher.feedback(_ref(dumps(doc)))
    return None if out.letter is None else out.letter.reason

"""Quality verdicts, watchlist search and thresholds (tracking: test_tracking.py; the alert
life cycle: test_screening.py)."""

from __future__ import annotations

import numpy as np
import pytest
from facescreen.core.alignment import l2_normalise
from facescreen.core.matching import (
    Candidate,
    GalleryIndex,
    decide,
    subject_template,
    threshold_for_fpir,
)
from facescreen.core.quality import assess, pose_from_landmarks
from facescreen.core.specs import DLIB_150_TEMPLATE, QualityPolicy
from facescreen.core.types import Detection

FRONTAL = np.asarray(DLIB_150_TEMPLATE, np.float32)


def _detection(landmarks: np.ndarray = FRONTAL, score: float = 0.95,
               box: tuple[float, float, float, float] = (30, 20, 120, 130)) -> Detection:
    return Detection(box=box, landmarks=landmarks.astype(np.float32), score=score)


def _textured_chip(brightness: int = 128) -> np.ndarray:
    rng = np.random.default_rng(0)
    noise = rng.integers(-60, 60, (150, 150, 3))
    return np.clip(brightness + noise, 0, 255).astype(np.uint8)


def test_symmetric_face_has_near_zero_pose() -> None:
    symmetric = np.array([[50, 50], [100, 50], [75, 84], [55, 109], [95, 109]], np.float32)
    yaw, pitch, roll = pose_from_landmarks(symmetric)
    assert abs(yaw) < 1 and abs(pitch) < 3 and abs(roll) < 1


def test_pose_signs_follow_the_landmarks() -> None:
    turned = FRONTAL.copy()
    turned[2, 0] += 20  # nose towards the image-right eye
    assert pose_from_landmarks(turned)[0] > 20
    rotated = FRONTAL.copy()
    rotated[1, 1] += 30  # right eye lower: clockwise roll
    assert pose_from_landmarks(rotated)[2] > 20


def test_good_face_passes_and_each_bad_one_says_why() -> None:
    policy = QualityPolicy()
    good = assess(_detection(), _textured_chip(), policy)
    assert good.passed and 0 < good.score <= 1
    small = assess(_detection(FRONTAL * 0.2), _textured_chip(), policy)
    assert any("inter-ocular" in r for r in small.reasons)
    dark = assess(_detection(), _textured_chip(10), policy)
    assert any("dark" in r for r in dark.reasons)
    blurry = assess(_detection(), np.full((150, 150, 3), 128, np.uint8), policy)
    assert any("sharpness" in r for r in blurry.reasons)
    unsure = assess(_detection(score=0.3), _textured_chip(), policy)
    assert any("detector score" in r for r in unsure.reasons)


def _unit(seed: int, dim: int = 16) -> np.ndarray:
    return l2_normalise(np.random.default_rng(seed).normal(size=dim).astype(np.float32))


def test_gallery_search_ranks_and_filters_by_watchlist() -> None:
    a, b = _unit(1), _unit(2)
    index = GalleryIndex(("alice", "bob"), ("vip", "banned"), np.stack([a, b]))
    (top,) = index.search(a[None], k=2)
    assert [c.subject_id for c in top] == ["alice", "bob"]
    assert top[0].score == pytest.approx(1.0, abs=1e-5)
    (only_banned,) = index.search(a[None], k=2, watchlists=["banned"])
    assert [c.subject_id for c in only_banned] == ["bob"]


def test_decide_applies_each_watchlists_threshold() -> None:
    cands = [Candidate("a", "strict", 0.9), Candidate("b", "loose", 0.7),
             Candidate("c", "loose", 0.6)]
    got = decide(cands, {"strict": 0.95, "loose": 0.65})
    assert got == [Candidate("b", "loose", 0.7)]
    assert decide(cands, {}) == []


def test_threshold_for_fpir_allows_exactly_the_target_share() -> None:
    scores = np.linspace(0.0, 0.99, 100).astype(np.float32)
    t = threshold_for_fpir(scores, 0.05)
    assert int((scores >= t).sum()) == 5
    assert threshold_for_fpir(scores, 0.001) > scores.max()
    with pytest.raises(ValueError):
        threshold_for_fpir(np.array([], np.float32), 0.01)


def test_template_is_normalised_mean() -> None:
    t = subject_template(np.stack([_unit(1), _unit(1) * 3]))
    np.testing.assert_allclose(t, _unit(1), atol=1e-6)

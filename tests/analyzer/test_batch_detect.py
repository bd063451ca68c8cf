"""Batch detection: frames of several cameras in one detector call per frame size."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from facescreen.analyzer.analyzer import FaceAnalyzer, batches_by_shape
from facescreen.core.types import FloatArray, ImageBGR


class CountingBackend:
    """The real backend, counting the batches it is handed."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.detect_batches: list[int] = []

    def detect(self, batch: FloatArray) -> dict[str, FloatArray]:
        self.detect_batches.append(len(batch))
        return self.inner.detect(batch)  # type: ignore[attr-defined, no-any-return]

    def embed(self, batch: FloatArray) -> FloatArray:
        return self.inner.embed(batch)  # type: ignore[attr-defined, no-any-return]


def _boxes(found: list) -> np.ndarray:  # type: ignore[type-arg]
    return np.array([d.box for d in found], np.float64).reshape(-1, 4)


def test_same_size_frames_match_alone(analyzer: FaceAnalyzer, portraits: list[ImageBGR]) -> None:
    frames = [np.asarray(cv2.resize(p, (640, 480), interpolation=cv2.INTER_AREA), np.uint8)
              for p in portraits[:4]]
    together = analyzer.detect_many(frames)
    for frame, found in zip(frames, together, strict=True):
        alone = analyzer.detect(frame)
        assert len(found) == len(alone) >= 1
        assert np.allclose(_boxes(found), _boxes(alone), atol=1e-3)
        assert np.allclose([d.score for d in found], [d.score for d in alone], atol=1e-5)


def test_mixed_sizes_one_call_per_size_and_equal_alone(analyzer: FaceAnalyzer,
                                                        portraits: list[ImageBGR],
                                                        twelve_faces: Path) -> None:
    mosaic = np.asarray(cv2.imread(str(twelve_faces)), np.uint8)  # 960x720 -> 640x480
    small = np.ascontiguousarray(portraits[1][:300, :200])
    frames = [mosaic, small, np.zeros((40, 60, 3), np.uint8), mosaic.copy(), small.copy()]
    counting = CountingBackend(analyzer.backend)
    batched = FaceAnalyzer(counting, analyzer.config)
    together = batched.detect_many(frames)
    assert counting.detect_batches == [2, 2, 1]  # one call per letterboxed size
    assert len(together[0]) == 12 and together[2] == []
    for frame, found in zip(frames, together, strict=True):
        alone = analyzer.detect(frame)  # exactly as alone, whatever shared the batch
        assert len(found) == len(alone)
        assert np.array_equal(_boxes(found), _boxes(alone))


def test_analyze_makes_one_detector_call_per_batch(analyzer: FaceAnalyzer,
                                                   portraits: list[ImageBGR]) -> None:
    """Five cameras of one resolution: one detector call for the five frames."""
    frames = [np.asarray(cv2.resize(p, (640, 480), interpolation=cv2.INTER_AREA), np.uint8)
              for p in portraits[:5]]
    counting = CountingBackend(analyzer.backend)
    batched = FaceAnalyzer(counting, analyzer.config)
    faces = batched.analyze(frames)
    assert counting.detect_batches == [5]
    assert all(len(f) >= 1 for f in faces)
    assert all((x.embedding is not None) == x.quality.passed for f in faces for x in f)
    assert sum(x.embedding is not None for f in faces for x in f) >= 3
    assert batched.detect_many([]) == [] and batched.analyze([]) == []


def test_batches_by_shape_keeps_order() -> None:
    a, b = np.zeros((1, 3, 32, 64), np.float32), np.ones((1, 3, 64, 32), np.float32)
    groups = batches_by_shape([a, b, a + 2, b + 3])
    assert [idx for idx, _ in groups] == [[0, 2], [1, 3]]
    assert groups[0][1].shape == (2, 3, 32, 64) and float(groups[1][1][1].max()) == 4.0
    assert batches_by_shape([a])[0][1] is a

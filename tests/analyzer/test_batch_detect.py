"""Batch detection: frames of several cameras in one detector call at a common padded size."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from facescreen.analyzer.analyzer import FaceAnalyzer, common_batch
from facescreen.core.types import FloatArray, ImageBGR
from facescreen.evaluation.metrics import box_iou


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


def test_mixed_sizes_padded_to_one_batch(analyzer: FaceAnalyzer, portraits: list[ImageBGR],
                                         twelve_faces: Path) -> None:
    mosaic = np.asarray(cv2.imread(str(twelve_faces)), np.uint8)
    frames = [mosaic, portraits[0], portraits[1][:300, :200], np.zeros((40, 60, 3), np.uint8)]
    counting = CountingBackend(analyzer.backend)
    batched = FaceAnalyzer(counting, analyzer.config)
    together = batched.detect_many(frames)
    assert counting.detect_batches == [4]
    assert [len(f) for f in together[:2]] == [12, 1] and together[3] == []
    for frame, found in zip(frames[:2], together[:2], strict=True):
        alone = analyzer.detect(frame)
        iou = box_iou(_boxes(alone), _boxes(found))
        assert iou.max(axis=1).min() > 0.9  # padding further moves boxes only slightly


def test_analyze_makes_one_detector_call_per_batch(analyzer: FaceAnalyzer,
                                                   portraits: list[ImageBGR]) -> None:
    counting = CountingBackend(analyzer.backend)
    batched = FaceAnalyzer(counting, analyzer.config)
    faces = batched.analyze(portraits[:5])
    assert counting.detect_batches == [5]
    assert all(len(f) == 1 and f[0].embedding is not None for f in faces)
    assert batched.detect_many([]) == [] and batched.analyze([]) == []


def test_common_batch_pads_with_normalised_black() -> None:
    a = np.full((1, 3, 32, 64), 7.0, np.float32)
    b = np.full((1, 3, 64, 32), 9.0, np.float32)
    batch = common_batch([a, b], (127.5, 127.5, 127.5), (128.0, 128.0, 128.0))
    assert batch.shape == (2, 3, 64, 64)
    assert np.all(batch[0, :, :32, :] == 7.0) and np.all(batch[1, :, :, :32] == 9.0)
    assert np.allclose(batch[0, :, 32:, :], -127.5 / 128.0)
    assert np.allclose(batch[1, :, :, 32:], -127.5 / 128.0)
    assert common_batch([a], (0, 0, 0), (1, 1, 1)) is a

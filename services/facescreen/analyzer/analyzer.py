"""detect -> align -> quality -> embed, for whole frames, with per-stage timings.

Both model calls are batched across the frames handed in together (several cameras, or one
camera under backlog): the detector sees all frames of one letterboxed size in one call
(cameras of one resolution: one call), the embedder every passing face of all of them.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

import numpy as np

from facescreen.analyzer.backends import FrameDetector, InferenceBackend
from facescreen.core import detection as det
from facescreen.core.alignment import align_face, chips_to_batch, l2_normalise
from facescreen.core.quality import assess
from facescreen.core.specs import PipelineConfig, QualityPolicy
from facescreen.core.types import Detection, Face, FloatArray, ImageBGR

Batch = TypeVar("Batch", FloatArray, ImageBGR)


@dataclass
class StageClock:
    """Accumulated seconds and calls per stage, for the status line and the benchmark."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start
            self.calls[name] += 1

    def mean_ms(self) -> dict[str, float]:
        return {k: 1000.0 * v / max(1, self.calls[k]) for k, v in self.seconds.items()}


class FaceAnalyzer:
    """Turns frames into faces with quality verdicts and, for faces that pass, embeddings."""

    def __init__(self, backend: InferenceBackend, config: PipelineConfig) -> None:
        self.backend = backend
        self.config = config
        self.clock = StageClock()
        self._template = np.asarray(config.embedder.template, np.float32)

    def detect(self, image: ImageBGR) -> list[Detection]:
        return self.detect_many([image])[0]

    def detect_many(self, images: Sequence[ImageBGR]) -> list[list[Detection]]:
        """Detections of each image: one detector call per letterboxed input size.

        Why not pad every frame to the largest size and make a single call: a frame padded
        further than alone gives slightly different boxes (the network sees more border),
        so a face's detection would depend on which other cameras shared its batch. Grouped
        by size, each frame's result is exactly what it is alone.
        """
        if not images:
            return []
        spec = self.config.detector
        calls: list[tuple[list[int], Callable[[], dict[str, FloatArray]]]]
        with self.clock.stage("preprocess"):
            if isinstance(self.backend, FrameDetector):  # it converts inside the model
                boxed = [det.letterbox_frame(image, spec) for image in images]
                letterboxes = [lb for _, lb in boxed]
                calls = [(m, partial(self.backend.detect_frames, b))
                         for m, b in batches_by_shape([x[None] for x, _ in boxed])]
            else:
                prepared = [det.prepare_detector_input(image, spec) for image in images]
                letterboxes = [lb for _, lb in prepared]
                calls = [(m, partial(self.backend.detect, b))
                         for m, b in batches_by_shape([x for x, _ in prepared])]
        found: list[list[Detection]] = [[] for _ in images]
        for members, call in calls:
            with self.clock.stage("detect"):
                outputs = call()
            with self.clock.stage("decode"):
                for row, i in enumerate(members):
                    found[i] = det.detections_from_outputs(
                        {k: v[row:row + 1] for k, v in outputs.items()}, letterboxes[i],
                        images[i].shape[:2], spec)
        return found

    def align(self, image: ImageBGR, detection: Detection) -> ImageBGR:
        return align_face(image, detection.landmarks, self._template, self.config.embedder.size)

    def embed_chips(self, chips: Sequence[ImageBGR]) -> FloatArray:
        """L2-normalised embeddings of aligned chips (BGR uint8)."""
        e = self.config.embedder
        if not chips:
            return np.zeros((0, e.dim), np.float32)
        batch = chips_to_batch(list(chips), e.colour, e.mean, e.std)
        with self.clock.stage("embed"):
            return l2_normalise(self.backend.embed(batch))

    def analyze(self, images: Sequence[ImageBGR],
                policy: QualityPolicy | None = None) -> list[list[Face]]:
        """Faces of each image; embeddings are computed in one batch across all images."""
        policy = policy or self.config.screening
        per_image: list[list[Face]] = []
        chips: list[ImageBGR] = []
        owners: list[Face] = []
        for image, detections in zip(images, self.detect_many(images), strict=True):
            faces = []
            for detection in detections:
                with self.clock.stage("align+quality"):
                    chip = self.align(image, detection)
                    face = Face(detection=detection, quality=assess(detection, chip, policy))
                if face.quality.passed:
                    chips.append(chip)
                    owners.append(face)
                faces.append(face)
            per_image.append(faces)
        for face, vector in zip(owners, self.embed_chips(chips), strict=True):
            face.embedding = vector
        return per_image


def batches_by_shape(inputs: Sequence[Batch]) -> list[tuple[list[int], Batch]]:
    """Group detector inputs of one row each ((1, C, h, w) floats or (1, h, w, 3) frames) by
    shape: (indices, stacked batch) per shape, in order of first appearance."""
    members: dict[tuple[int, ...], list[int]] = {}
    for i, x in enumerate(inputs):
        members.setdefault(tuple(x.shape), []).append(i)
    return [(idx, inputs[idx[0]] if len(idx) == 1 else np.concatenate([inputs[i] for i in idx]))
            for idx in members.values()]

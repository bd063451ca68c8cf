"""detect -> align -> quality -> embed, for whole frames, with per-stage timings.

Both model calls are batched across the frames handed in together (several cameras, or one
camera under backlog): the detector sees them in one call at a common padded size, the
embedder sees every passing face of all of them in one call.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from facescreen.analyzer.backends import InferenceBackend
from facescreen.core import detection as det
from facescreen.core.alignment import align_face, chips_to_batch, l2_normalise
from facescreen.core.quality import assess
from facescreen.core.specs import PipelineConfig, QualityPolicy
from facescreen.core.types import Detection, Face, FloatArray, ImageBGR


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
        """Detections of each image, from one detector call on all of them.

        Each frame is letterboxed as on its own, then padded right/bottom to the largest
        padded size among them (with what a black pixel becomes after normalisation), so
        frames of one size come out exactly as alone; a frame padded further than alone may
        differ slightly near its bottom/right edge (the network sees more border).
        """
        if not images:
            return []
        spec = self.config.detector
        with self.clock.stage("preprocess"):
            prepared = [det.prepare_detector_input(image, spec) for image in images]
            batch = common_batch([x for x, _ in prepared], spec.mean, spec.std)
        with self.clock.stage("detect"):
            outputs = self.backend.detect(batch)
        with self.clock.stage("decode"):
            return [det.detections_from_outputs({k: v[i:i + 1] for k, v in outputs.items()},
                                                letterbox, image.shape[:2], spec)
                    for i, (image, (_, letterbox)) in enumerate(zip(images, prepared,
                                                                    strict=True))]

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


def common_batch(inputs: Sequence[FloatArray], mean: Sequence[float],
                 std: Sequence[float]) -> FloatArray:
    """Stack (1, C, h, w) detector inputs into (N, C, H, W) at the largest h and w, padding
    right/bottom with the normalised value of a black pixel (what letterboxing pads with)."""
    if len(inputs) == 1:
        return inputs[0]
    height = max(x.shape[2] for x in inputs)
    width = max(x.shape[3] for x in inputs)
    fill = (0.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    batch = np.empty((len(inputs), inputs[0].shape[1], height, width), np.float32)
    batch[:] = fill.reshape(1, -1, 1, 1)
    for i, x in enumerate(inputs):
        batch[i, :, :x.shape[2], :x.shape[3]] = x[0]
    return batch

"""detect -> align -> quality -> embed, for whole frames, with per-stage timings."""

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
        spec = self.config.detector
        with self.clock.stage("preprocess"):
            batch, letterbox = det.prepare_detector_input(image, spec)
        with self.clock.stage("detect"):
            outputs = self.backend.detect(batch)
        with self.clock.stage("decode"):
            return det.detections_from_outputs(outputs, letterbox, image.shape[:2], spec)

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
        for image in images:
            faces = []
            for detection in self.detect(image):
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

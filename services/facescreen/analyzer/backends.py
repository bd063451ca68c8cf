"""Inference adapters: the analyzer asks for raw model outputs through this narrow seam.

The embedded mode runs ONNX Runtime or OpenVINO in process (`analyzer.runtime` picks one);
the distributed mode puts a Triton client behind the same two methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import onnxruntime as ort

from facescreen.core.specs import DetectorSpec, EmbedderSpec
from facescreen.core.types import FloatArray, ImageBGR


class ModelMissingError(FileNotFoundError):
    """A model file is absent: the user has to build the models first."""


class InferenceBackend(Protocol):
    def detect(self, batch: FloatArray) -> dict[str, FloatArray]: ...

    def embed(self, batch: FloatArray) -> FloatArray: ...


@runtime_checkable
class FrameDetector(Protocol):
    """A backend that also takes the letterboxed frames themselves, (n, h, w, 3) BGR uint8,
    and converts them to the detector's input inside the model (the same values as
    `prepare_detector_input`, to float rounding). Why: done in numpy, that conversion (and
    stacking the float batch) took about 2 ms of CPU per 640x480 frame, some 10% of what a
    bf16 detector call takes on AMX; in the compiled graph it is fused into the first layer
    and reads a quarter of the bytes."""

    def detect_frames(self, frames: ImageBGR) -> dict[str, FloatArray]: ...


@dataclass(frozen=True)
class ModelPaths:
    """The two ONNX files a CPU backend loads (fp32, or the int8 configuration's)."""

    detector: Path
    embedder: Path

    @classmethod
    def fp32(cls, detector: DetectorSpec, embedder: EmbedderSpec, root: Path) -> ModelPaths:
        return cls(root / detector.model, root / embedder.model)

    @classmethod
    def int8(cls, detector: DetectorSpec, embedder: EmbedderSpec, root: Path) -> ModelPaths:
        """The embedder's `model.int8.onnx` (made by `facescreen models build`) and the fp32
        detector: int8 CenterFace lost 2.7 points of WIDER recall, outside the 1-point gate,
        while the int8 embedder kept LFW accuracy (docs/benchmarks.md)."""
        return cls(root / detector.model, int8_path(root / embedder.model))


def int8_path(fp32: Path) -> Path:
    return fp32.with_name(fp32.stem + ".int8.onnx")


def _session(path: Path, threads: int) -> ort.InferenceSession:
    if not path.exists():
        raise ModelMissingError(f"model file {path} is missing: run `facescreen models build`")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # the shipped detector graph triggers harmless warnings
    # Idle ORT threads spin by default, taking the cores that frame decoding needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxRuntimeBackend:
    """Both models in this process, on the CPU."""

    def __init__(self, detector: DetectorSpec, embedder: EmbedderSpec, root: Path,
                 threads: int = 2, *, paths: ModelPaths | None = None) -> None:
        paths = paths or ModelPaths.fp32(detector, embedder, root)
        self._det = _session(paths.detector, threads)
        self._emb = _session(paths.embedder, threads)
        self._det_input = detector.input_name
        self._det_outputs = [o.name for o in self._det.get_outputs()]
        self._emb_input = embedder.input_name
        self._emb_output = embedder.output_name

    def detect(self, batch: FloatArray) -> dict[str, FloatArray]:
        outputs = self._det.run(None, {self._det_input: batch})
        return {name: np.asarray(v, np.float32)
                for name, v in zip(self._det_outputs, outputs, strict=True)}

    def embed(self, batch: FloatArray) -> FloatArray:
        (out,) = self._emb.run([self._emb_output], {self._emb_input: batch})
        return np.asarray(out, np.float32)

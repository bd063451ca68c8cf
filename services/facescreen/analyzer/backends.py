"""Inference adapters: the analyzer asks for raw model outputs through this narrow seam.

The embedded mode runs ONNX Runtime in process; the distributed mode puts a Triton client
behind the same two methods.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort

from facescreen.core.specs import DetectorSpec, EmbedderSpec
from facescreen.core.types import FloatArray


class ModelMissingError(FileNotFoundError):
    """A model file is absent: the user has to build the models first."""


class InferenceBackend(Protocol):
    def detect(self, batch: FloatArray) -> dict[str, FloatArray]: ...

    def embed(self, batch: FloatArray) -> FloatArray: ...


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
                 threads: int = 2) -> None:
        self._det = _session(root / detector.model, threads)
        self._emb = _session(root / embedder.model, threads)
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

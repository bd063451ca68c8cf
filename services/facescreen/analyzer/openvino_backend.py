"""OpenVINO on the CPU behind the analyzer's `InferenceBackend` seam.

Why a second CPU runtime: on recent Xeons OpenVINO's kernels (oneDNN with AVX-512/VNNI,
and AMX where the CPU has it) run both models faster than ONNX Runtime, but only with
static input shapes: with dynamic shapes it was measured slower. So every model is reshaped
to the exact input shape it is called with, compiled once per shape and kept (a small LRU
cache). Batches whose size varies (faces per frame) are split into power-of-two chunks,
so a handful of compiled shapes serve every batch size without padding work away.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from facescreen.analyzer.backends import ModelMissingError, ModelPaths
from facescreen.core.specs import DetectorSpec, EmbedderSpec
from facescreen.core.types import FloatArray

OV_PRECISIONS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8: the graph carries it


def pow2_chunks(n: int, cap: int) -> Iterator[slice]:
    """Cover range(n) with slices of power-of-two sizes (at most `cap`), largest first:
    13 -> 8, 4, 1. Few distinct sizes, so few compiled shapes; no padded rows."""
    start = 0
    while start < n:
        size = min(cap, 1 << ((n - start).bit_length() - 1))
        yield slice(start, start + size)
        start += size


class _Compiled:
    """One model compiled for one input shape, with its own request (calls serialised)."""

    def __init__(self, compiled: Any) -> None:
        self.request = compiled.create_infer_request()
        self.names = [o.get_any_name() for o in compiled.outputs]
        self.lock = threading.Lock()

    def __call__(self, input_name: str, batch: FloatArray) -> dict[str, FloatArray]:
        with self.lock:
            # share: no copy of the (contiguous) input in, no extra copy of the outputs out;
            # the one copy below is needed since the request reuses its output buffers
            result = self.request.infer({input_name: batch}, share_inputs=True,
                                        share_outputs=True)
            return {n: np.array(result[i], np.float32) for i, n in enumerate(self.names)}


class _StaticShapeModel:
    """A model read once, compiled lazily per input shape (LRU-bounded)."""

    def __init__(self, core: ov.Core, path: Path, input_name: str, config: dict[str, Any],
                 max_shapes: int) -> None:
        if not path.exists():
            raise ModelMissingError(f"model file {path} is missing: run `facescreen models build`")
        self._core = core
        self._model = core.read_model(str(path))
        self._input = input_name
        self._config = config
        self._max = max_shapes
        self._cache: OrderedDict[tuple[int, ...], _Compiled] = OrderedDict()
        self._lock = threading.Lock()
        names = {n for i in self._model.inputs for n in i.get_names()}
        if input_name not in names:
            raise ValueError(f"{path}: no input named {input_name!r} (it has {sorted(names)})")

    def compiled(self, shape: tuple[int, ...]) -> _Compiled:
        with self._lock:
            hit = self._cache.get(shape)
            if hit is not None:
                self._cache.move_to_end(shape)
                return hit
            model = self._model.clone()
            model.reshape({self._input: ov.PartialShape(list(shape))})
            entry = _Compiled(self._core.compile_model(model, "CPU", self._config))
            self._cache[shape] = entry
            if len(self._cache) > self._max:
                self._cache.popitem(last=False)
            return entry

    def shapes(self) -> list[tuple[int, ...]]:
        with self._lock:
            return list(self._cache)

    def run(self, batch: FloatArray) -> dict[str, FloatArray]:
        array = np.ascontiguousarray(batch, np.float32)
        return self.compiled(tuple(array.shape))(self._input, array)


class OpenVinoBackend:
    """Both models in this process through OpenVINO's CPU plugin, at static shapes.

    `precision`: fp32, bf16 (INFERENCE_PRECISION_HINT; fast only where the CPU has AMX) or
    int8 (the quantised graphs in `paths`, run with fp32 for what is not quantised).
    One stream of `threads` threads (LATENCY): a batch is one call, its rows in one
    request; measured on a loaded 2-core AMX machine, two streams of one thread, or TBB's
    `AUTO` partitioner, gave no steady gain over it.
    """

    def __init__(self, detector: DetectorSpec, embedder: EmbedderSpec, root: Path,
                 threads: int = 2, precision: str = "fp32", *, paths: ModelPaths | None = None,
                 embed_chunk: int = 16, detect_chunk: int = 4, max_shapes: int = 24) -> None:
        if precision not in OV_PRECISIONS:
            raise ValueError(f"OpenVINO precision must be one of {sorted(OV_PRECISIONS)}")
        paths = paths or ModelPaths.fp32(detector, embedder, root)
        self.precision = precision
        config = {"INFERENCE_PRECISION_HINT": OV_PRECISIONS[precision],
                  "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
                  "PERFORMANCE_HINT": "LATENCY",
                  # other processes share the cores: do not pin threads to them
                  "ENABLE_CPU_PINNING": False}
        core = ov.Core()
        self._det = _StaticShapeModel(core, paths.detector, detector.input_name, config,
                                      max_shapes)
        self._emb = _StaticShapeModel(core, paths.embedder, embedder.input_name, config,
                                      max_shapes)
        self._emb_output = embedder.output_name
        self._dim = embedder.dim
        self._embed_chunk = embed_chunk
        self._detect_chunk = detect_chunk

    def detect(self, batch: FloatArray) -> dict[str, FloatArray]:
        parts = [self._det.run(batch[s]) for s in pow2_chunks(len(batch), self._detect_chunk)]
        if len(parts) == 1:
            return parts[0]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def embed(self, batch: FloatArray) -> FloatArray:
        if len(batch) == 0:
            return np.zeros((0, self._dim), np.float32)
        parts = [self._emb.run(batch[s])[self._emb_output]
                 for s in pow2_chunks(len(batch), self._embed_chunk)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def compiled_shapes(self) -> dict[str, list[tuple[int, ...]]]:
        """Input shapes compiled so far, per model (for tests and the status line)."""
        return {"detector": self._det.shapes(), "embedder": self._emb.shapes()}

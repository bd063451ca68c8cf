"""OpenVINO on the CPU behind the analyzer's `InferenceBackend` seam.

Why a second CPU runtime: on recent Xeons OpenVINO's kernels (oneDNN with AVX-512/VNNI,
and AMX where the CPU has it) run both models faster than ONNX Runtime, but only with
static input shapes: with dynamic shapes it was measured slower. So every model is reshaped
to the exact input shape it is called with, compiled once per shape and kept (a small LRU
cache). Batches whose size varies (faces per frame) are split into power-of-two chunks,
so a handful of compiled shapes serve every batch size without padding work away. The
detector also takes the letterboxed uint8 frames (`detect_frames`, the analyzer's choice):
their float conversion then runs inside the graph instead of in numpy.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
from openvino.preprocess import ColorFormat, PrePostProcessor

from facescreen.analyzer.backends import ModelMissingError, ModelPaths
from facescreen.core.specs import DetectorSpec, EmbedderSpec
from facescreen.core.types import FloatArray, ImageBGR

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

    def __call__(self, input_name: str, batch: FloatArray | ImageBGR) -> dict[str, FloatArray]:
        with self.lock:
            # share: no copy of the (contiguous) input in, no extra copy of the outputs out;
            # the one copy below is needed since the request reuses its output buffers
            result = self.request.infer({input_name: batch}, share_inputs=True,
                                        share_outputs=True)
            return {n: np.array(result[i], np.float32) for i, n in enumerate(self.names)}


def frames_to_input(model: ov.Model, input_name: str, spec: DetectorSpec) -> ov.Model:
    """`model` taking (n, h, w, 3) BGR uint8 frames: the float conversion, channel order,
    mean/std and NCHW layout of `prepare_detector_input` become the graph's first steps."""
    ppp = PrePostProcessor(model)
    step = ppp.input(input_name)
    step.tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")) \
        .set_color_format(ColorFormat.BGR)
    step.model().set_layout(ov.Layout("NCHW"))
    step.preprocess().convert_element_type(ov.Type.f32)
    if spec.colour == "RGB":
        step.preprocess().convert_color(ColorFormat.RGB)
    if spec.mean != (0.0, 0.0, 0.0):
        step.preprocess().mean(list(spec.mean))
    if spec.std != (1.0, 1.0, 1.0):
        step.preprocess().scale(list(spec.std))
    return ppp.build()


class _StaticShapeModel:
    """A model read once, compiled lazily per input shape (LRU-bounded).

    With `frames`, it takes the detector's letterboxed uint8 frames (n, h, w, 3) and
    converts them inside the compiled graph (`frames_to_input`)."""

    def __init__(self, core: ov.Core, path: Path, input_name: str, config: dict[str, Any],
                 max_shapes: int, frames: DetectorSpec | None = None) -> None:
        if not path.exists():
            raise ModelMissingError(f"model file {path} is missing: run `facescreen models build`")
        self._core = core
        self._model = core.read_model(str(path))
        self._input = input_name
        self._config = config
        self._max = max_shapes
        self._cache: OrderedDict[tuple[int, ...], _Compiled] = OrderedDict()
        self._lock = threading.Lock()
        self._frames = frames
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
            if self._frames is None:
                model.reshape({self._input: ov.PartialShape(list(shape))})
            else:
                n, h, w, c = shape
                model.reshape({self._input: ov.PartialShape([n, c, h, w])})
                model = frames_to_input(model, self._input, self._frames)
            entry = _Compiled(self._core.compile_model(model, "CPU", self._config))
            self._cache[shape] = entry
            if len(self._cache) > self._max:
                self._cache.popitem(last=False)
            return entry

    def shapes(self) -> list[tuple[int, ...]]:
        with self._lock:
            return list(self._cache)

    def run(self, batch: FloatArray | ImageBGR) -> dict[str, FloatArray]:
        array: FloatArray | ImageBGR = (np.ascontiguousarray(batch, np.float32)
                                        if self._frames is None
                                        else np.ascontiguousarray(batch, np.uint8))
        return self.compiled(tuple(array.shape))(self._input, array)


class OpenVinoBackend:
    """Both models in this process through OpenVINO's CPU plugin, at static shapes.

    `precision`: fp32, bf16 (INFERENCE_PRECISION_HINT; fast only where the CPU has AMX) or
    int8 (the quantised graphs in `paths`, run with fp32 for what is not quantised).
    One stream of `threads` threads (LATENCY); measured on a loaded 2-core AMX machine, two
    streams of one thread, or TBB's `AUTO` partitioner, gave no steady gain over it.
    Chunks: the detector runs frame by frame (`detect_chunk` 1: at 640x480 a batch of 4
    cost 15-20% more CPU per frame in bf16, 5-10% in fp32, its activations outgrowing the
    caches), the embedder in chunks of up to 16 chips (per chip, 16 cost half of 1).
    """

    def __init__(self, detector: DetectorSpec, embedder: EmbedderSpec, root: Path,
                 threads: int = 2, precision: str = "fp32", *, paths: ModelPaths | None = None,
                 embed_chunk: int = 16, detect_chunk: int = 1, max_shapes: int = 24) -> None:
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
        self._det_frames = _StaticShapeModel(core, paths.detector, detector.input_name, config,
                                             max_shapes, frames=detector)
        self._emb_output = embedder.output_name
        self._dim = embedder.dim
        self._embed_chunk = embed_chunk
        self._detect_chunk = detect_chunk

    def detect(self, batch: FloatArray) -> dict[str, FloatArray]:
        return self._detect(self._det, batch)

    def detect_frames(self, frames: ImageBGR) -> dict[str, FloatArray]:
        """`detect` on letterboxed BGR uint8 frames (n, h, w, 3), converted in the graph:
        the same outputs as `detect(prepare_detector_input(...))`, less numpy work."""
        return self._detect(self._det_frames, frames)

    def _detect(self, model: _StaticShapeModel,
                batch: FloatArray | ImageBGR) -> dict[str, FloatArray]:
        parts = [model.run(batch[s]) for s in pow2_chunks(len(batch), self._detect_chunk)]
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
        return {"detector": self._det.shapes(), "detector_frames": self._det_frames.shapes(),
                "embedder": self._emb.shapes()}

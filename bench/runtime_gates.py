"""Accuracy of each CPU runtime/precision against ONNX Runtime fp32 on ../shared/data.

The gates of issue 9 (the same as tests/analyzer/test_gates_shared.py, on the full sets):
LFW 10-fold verification accuracy within 0.2 points, WIDER recall within 1 point, and the
embedder's cosine to fp32 at least 0.99 on real chips (the first `--cosine-chips` LFW
images, the same chips for every configuration; tests/analyzer/test_parity.py checks the
same on other photos). Also measured, and reported as rejected: the int8 detector,
quantised here into a scratch file exactly as the build quantises the embedder, which is
why the int8 configuration keeps the detector in fp32.

    .venv/bin/python bench/runtime_gates.py [--lfw-limit N] [--wider-limit N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.analyzer.backends import InferenceBackend, ModelPaths, OnnxRuntimeBackend
from facescreen.analyzer.openvino_backend import OpenVinoBackend
from facescreen.core.specs import PipelineConfig
from facescreen.evaluation import datasets, runner
from facescreen.evaluation.photos import lfw_rewarp, read_image
from facescreen.models import quantize
from machine import machine_info

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
LFW_POINTS, WIDER_POINTS, MIN_COSINE = 0.2, 1.0, 0.99


def lfw_chips(config: PipelineConfig, count: int) -> list[Any]:
    """The first `count` LFW images (sorted paths) rewarped to the embedder's chip."""
    pairs = datasets.read_lfw_pairs(DATA / "lfw-aligned112")
    paths = sorted({path for p in pairs for path in (p.first, p.second)})[:count]
    spec = config.embedder
    template = np.asarray(spec.template, np.float32)
    chips = []
    for path in paths:
        image = read_image(path)
        if image is None:
            raise SystemExit(f"{path}: cannot decode the image")
        chips.append(lfw_rewarp(image, template, spec.size))
    return chips


def backend(name: str, config: PipelineConfig, int8_detector: Path | None) -> InferenceBackend:
    runtime, precision = name.split("-")[:2]
    paths = ModelPaths.fp32(config.detector, config.embedder, ROOT)
    if precision == "int8":
        paths = ModelPaths.int8(config.detector, config.embedder, ROOT)
    if name.endswith("int8-detector") and int8_detector is not None:
        paths = ModelPaths(int8_detector, paths.embedder)
    if runtime == "openvino":
        return OpenVinoBackend(config.detector, config.embedder, ROOT, 2, precision,
                               paths=paths)
    return OnnxRuntimeBackend(config.detector, config.embedder, ROOT, 2, paths=paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw-limit", type=int, help="pairs (default: all 6000)")
    parser.add_argument("--wider-limit", type=int, help="images (default: all)")
    parser.add_argument("--cosine-chips", type=int, default=1000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"evaluation data not found at {DATA}")
    before = machine_info()
    config = PipelineConfig()
    names = ["onnxruntime-fp32", "openvino-fp32", "openvino-bf16", "openvino-int8",
             "onnxruntime-int8", "openvino-int8-detector"]
    rows: dict[str, Any] = {}
    chips = lfw_chips(config, args.cosine_chips)
    reference: Any = None
    with tempfile.TemporaryDirectory() as tmp:
        det8 = Path(tmp) / "detector.int8.onnx"
        quantize.quantize_model(ROOT / config.detector.model, det8, config.detector.input_name,
                                quantize.detector_batches(quantize.calibration_images(),
                                                          config.detector))
        for name in names:
            analyzer = FaceAnalyzer(backend(name, config, det8), config)
            started = time.perf_counter()
            vectors = np.concatenate([analyzer.embed_chips(chips[i:i + 16])
                                      for i in range(0, len(chips), 16)])
            reference = vectors if reference is None else reference  # the first: ORT fp32
            cosine = np.sum(vectors * reference, axis=1)
            lfw = runner.run_verify(analyzer, DATA / "lfw-aligned112", limit=args.lfw_limit,
                                    progress=False)
            wider = runner.run_detect(analyzer, DATA / "widerface-val-dev",
                                      limit=args.wider_limit, progress=False)
            rows[name] = {"lfw_accuracy": lfw["accuracy"]["mean"],
                          "lfw_pairs": lfw["pairs"], "wider_recall": wider["overall"]["recall"],
                          "wider_images": wider["images"]["evaluated"],
                          "cosine_min": float(cosine.min()),
                          "cosine_p1": float(np.percentile(cosine, 1)),
                          "cosine_chips": len(chips),
                          "seconds": round(time.perf_counter() - started, 1)}
            print(name, rows[name], flush=True)
    base = rows["onnxruntime-fp32"]
    for row in rows.values():
        row["lfw_points_vs_fp32"] = 100 * (row["lfw_accuracy"] - base["lfw_accuracy"])
        row["wider_points_vs_fp32"] = 100 * (row["wider_recall"] - base["wider_recall"])
        row["passes"] = (row["lfw_points_vs_fp32"] >= -LFW_POINTS
                         and row["wider_points_vs_fp32"] >= -WIDER_POINTS
                         and row["cosine_min"] >= MIN_COSINE)
    result = {"command": "python bench/runtime_gates.py " + " ".join(sys.argv[1:]),
              "gates": {"lfw_points": LFW_POINTS, "wider_points": WIDER_POINTS,
                        "min_cosine": MIN_COSINE},
              "configs": rows, "machine": {"before": before, "after": machine_info()}}
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()

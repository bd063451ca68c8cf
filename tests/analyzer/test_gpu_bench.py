"""The GPU bench, tested on the CPU: its torch graphs and tensor pre/post-processing against
the analyzer, and a whole `--dry-run` (no GPU is lent to this project's machines).

Needs PyTorch (the CPU build is enough; the dev extra installs it): without it the module
skips on a user's machine and fails in CI (tests.infra).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.evaluation.metrics import box_iou

from tests.conftest import REPO
from tests.infra import missing

try:
    import torch
except ImportError:  # pragma: no cover - the dev extra installs torch
    missing("the GPU bench needs PyTorch (the CPU build is enough): pip install torch==2.13.0",
            module=True)
sys.path.insert(0, str(REPO / "bench" / "gpu"))
import gpu_bench
from gpu_ops import align, decode_centerface, decode_jpegs, letterbox
from onnx_torch import OnnxModule, export_bundle, read_bundle


@pytest.fixture(scope="module")
def modules() -> dict[str, OnnxModule]:
    return {r: OnnxModule.load(p).eval() for r, p in gpu_bench.MODELS.items()}


def test_torch_graphs_equal_onnxruntime_and_bundles(modules: dict[str, OnnxModule],
                                                   tmp_path: Path) -> None:
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    for role, shape in (("detector", (2, 3, 64, 96)), ("embedder", (3, 3, 150, 150))):
        x = rng.uniform(0, 255, shape).astype(np.float32)
        with torch.inference_mode():
            got = {k: v.numpy() for k, v in modules[role](torch.from_numpy(x)).items()}
        session = ort.InferenceSession(str(gpu_bench.MODELS[role]))
        want = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"image": x}),
                        strict=True))
        assert got.keys() == want.keys()
        for k in want:
            assert np.abs(got[k] - want[k]).max() < 1e-4 * max(1.0, float(np.abs(want[k]).max()))
        export_bundle(gpu_bench.MODELS[role], tmp_path / role)
        again = OnnxModule(*read_bundle(tmp_path / role)).eval()
        with torch.inference_mode():
            assert all(np.array_equal(v.numpy(), got[k])
                       for k, v in again(torch.from_numpy(x)).items())


def test_tensor_pipeline_matches_the_analyzer(modules: dict[str, OnnxModule],
                                              analyzer: FaceAnalyzer, twelve_faces: Path) -> None:
    jpeg = twelve_faces.read_bytes()
    frames, how = decode_jpegs([jpeg], torch.device("cpu"))
    assert how in {"opencv", "pillow"} and tuple(frames[0].shape) == (3, 720, 960)
    boxed = letterbox(frames, gpu_bench.MAX_SIDE, gpu_bench.MULTIPLE, torch.float32)
    with torch.inference_mode():
        faces = decode_centerface(modules["detector"](boxed.batch), boxed, gpu_bench.THRESHOLD,
                                  gpu_bench.NMS_IOU)
        chips = align(frames, faces, torch.tensor(gpu_bench.TEMPLATE), gpu_bench.CHIP,
                      torch.float32)
        vectors = torch.nn.functional.normalize(modules["embedder"](chips)["embedding"], dim=1)
    image = np.asarray(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), np.uint8)
    (want,) = analyzer.analyze([image], policy=None)
    assert len(faces.frame) == len(want) == 12
    iou = box_iou(np.array([f.detection.box for f in want]), faces.boxes.numpy())
    match = iou.argmax(axis=1)
    assert iou.max(axis=1).min() > 0.85  # antialiased bilinear vs area resize: close, not equal
    ref = analyzer.embed_chips([analyzer.align(image, f.detection) for f in want])
    cosine = np.sum(ref * vectors.numpy()[match], axis=1)
    assert cosine.min() > 0.95, np.round(cosine, 3)


def test_dry_run_writes_the_report(tmp_path: Path, twelve_faces: Path) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "crowd").mkdir(parents=True)
    for i in range(2):
        (bundle / "crowd" / f"{i:04d}.jpg").write_bytes(twelve_faces.read_bytes())
    out = tmp_path / "out"
    result = gpu_bench.main(["--dry-run", "--bundle", str(bundle), "--out-dir", str(out)])
    assert result["dry_run"] and result["device"].startswith("CPU")
    assert {p["model"] for p in result["models"]} == {"detector", "embedder"}
    assert [p["faces"] for p in result["pipeline"]] == [24, 24]  # 12 a frame, 2 frames
    assert result["parity"]["fp32_vs_onnxruntime"]["embedder_max_abs_diff"] < 1e-4
    saved = json.loads((out / "figures" / "gpu_bench.json").read_text())
    assert saved["pipeline"] == result["pipeline"]
    assert "| detector | fp32 | eager | 1 |" in (out / "benchmarks-gpu.md").read_text()

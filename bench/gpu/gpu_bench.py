"""GPU bench: detector and embedder at batch 1..256 in fp16/bf16 (eager and CUDA graphs), and
the full analyzer on 1080p crowd frames with JPEG decoding and alignment on the GPU.

For an NVIDIA machine with Python, PyTorch and CUDA but no package registry: it needs
torch and numpy only (torchvision for nvJPEG and NMS when present; OpenCV or Pillow else).
Models come from the repository's ONNX files (with `onnx` installed) or from a bundle made
here beforehand, which also carries the crowd frames as JPEGs:

    .venv/bin/python bench/gpu/gpu_bench.py --export-bundle .cache/gpu_bundle   # here
    python bench/gpu/gpu_bench.py --bundle .cache/gpu_bundle                    # on the GPU

It writes docs/benchmarks-gpu.md and docs/figures/gpu_bench.json, and stops adding points
when its time budget (default 420 s) runs out. `--dry-run` runs every stage on the CPU at
tiny sizes (fp32, batches 1-2, no CUDA graphs) into a scratch folder, and checks the torch
graphs against ONNX Runtime where that is installed: that is how it is tested without a GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gpu_ops import align, decode_centerface, decode_jpegs, letterbox
from onnx_torch import OnnxModule, export_bundle

ROOT = Path(__file__).resolve().parents[2]
MODELS = {"detector": ROOT / "triton_models/detector/1/model.onnx",
          "embedder": ROOT / "triton_models/embedder/1/model.onnx"}
CROWD = ROOT.parent / "shared" / "data" / "video" / "crowd_1080p.mp4"
# the analyzer's defaults (core/specs.py), repeated so the GPU machine needs no facescreen
MAX_SIDE, MULTIPLE, THRESHOLD, NMS_IOU, CHIP = 640, 32, 0.5, 0.3, 150
TEMPLATE = ((47.65, 45.53), (99.82, 44.29), (71.70, 79.14), (53.77, 104.80), (97.58, 103.41))
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def export(out: Path, frames: int) -> None:
    """Model bundles and the crowd clip's first frames as JPEGs, for a machine without onnx."""
    import cv2

    for role, path in MODELS.items():
        export_bundle(path, out / role)
    capture = cv2.VideoCapture(str(CROWD))
    (out / "crowd").mkdir(parents=True, exist_ok=True)
    for i in range(frames):
        ok, frame = capture.read()
        if not ok:
            break
        cv2.imwrite(str(out / "crowd" / f"{i:04d}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
    print(f"bundle written to {out}")


def crowd_jpegs(bundle: Path | None, limit: int) -> list[bytes]:
    if bundle is not None and (bundle / "crowd").is_dir():
        return [p.read_bytes() for p in sorted((bundle / "crowd").glob("*.jpg"))[:limit]]
    import cv2  # the repository's machine: straight from the clip

    capture, out = cv2.VideoCapture(str(CROWD)), list[bytes]()
    while len(out) < limit:
        ok, frame = capture.read()
        if not ok:
            break
        out.append(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    if not out:
        raise SystemExit(f"no crowd frames: pass --bundle, or put the clip at {CROWD}")
    return out


def timed(fn: Callable[[], Any], device: torch.device, min_s: float, max_iter: int) -> float:
    """Seconds per call: one warm-up, then calls until `min_s` or `max_iter`."""
    fn()
    sync(device)
    n, start = 0, time.perf_counter()
    while n < max_iter and (n == 0 or time.perf_counter() - start < min_s):
        fn()
        n += 1
    sync(device)
    return (time.perf_counter() - start) / n


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def graphed(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], Any]:
    """A CUDA graph of one forward pass on the static input `x` (replay = the same work)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            model(x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        model(x)
    replay: Callable[[], Any] = graph.replay
    return replay


def model_points(models: Mapping[str, torch.nn.Module], dtype_name: str, batches: list[int],
                 device: torch.device, graphs: bool, cfg: argparse.Namespace,
                 deadline: float) -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = []
    dtype = DTYPES[dtype_name]
    # the detector at 1080p letterboxed (a small frame in a dry run: only the code is tested)
    shapes = {"detector": (3, 384, 640) if graphs else (3, 96, 128), "embedder": (3, CHIP, CHIP)}
    for role, model in models.items():
        for batch in batches:
            for mode in ("eager", "cuda_graph") if graphs else ("eager",):
                if time.monotonic() > deadline:
                    return points
                x = torch.rand((batch, *shapes[role]), device=device).mul(255).to(dtype)
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                def eager(m: Any = model, t: Any = x) -> Any:
                    return m(t)

                with torch.inference_mode():
                    fn = graphed(model, x) if mode == "cuda_graph" else eager
                    seconds = timed(fn, device, cfg.min_s, cfg.max_iter)
                points.append({"model": role, "dtype": dtype_name, "mode": mode,
                               "batch": batch, "ms_per_batch": 1000 * seconds,
                               "items_per_s": batch / seconds, "peak_mib": peak_mib(device)})
                print(json.dumps(points[-1]), flush=True)
    return points


def analyze(jpegs: list[bytes], det: torch.nn.Module, emb: torch.nn.Module,
            dtype: torch.dtype, device: torch.device) -> tuple[int, str]:
    """JPEGs -> faces with embeddings, every stage on `device`; (faces, decoder used)."""
    frames, how = decode_jpegs(jpegs, device)
    boxed = letterbox(frames, MAX_SIDE, MULTIPLE, dtype)
    faces = decode_centerface(det(boxed.batch), boxed, THRESHOLD, NMS_IOU)
    template = torch.tensor(TEMPLATE, device=device)
    chips = align(frames, faces, template, CHIP, dtype)
    vectors = emb(chips)["embedding"] if len(chips) else chips.new_zeros((0, 128))
    torch.nn.functional.normalize(vectors.float(), dim=1)
    return len(chips), how


def pipeline_points(jpegs: list[bytes], det: torch.nn.Module, emb: torch.nn.Module,
                    dtype_name: str, batches: list[int], device: torch.device,
                    cfg: argparse.Namespace, deadline: float) -> list[dict[str, Any]]:
    points = []
    for batch in batches:
        if time.monotonic() > deadline or batch > len(jpegs):
            break
        groups = [jpegs[i:i + batch] for i in range(0, len(jpegs) - batch + 1, batch)]
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with torch.inference_mode():
            _, how = analyze(groups[0], det, emb, DTYPES[dtype_name], device)  # warm-up
            sync(device)
            start, total_faces = time.perf_counter(), 0
            for g in groups:
                total_faces += analyze(g, det, emb, DTYPES[dtype_name], device)[0]
            sync(device)
            seconds = time.perf_counter() - start
        frames = batch * len(groups)
        points.append({"dtype": dtype_name, "batch": batch, "frames": frames,
                       "faces": total_faces, "frames_per_s": frames / seconds,
                       "faces_per_s": total_faces / seconds, "jpeg_decoder": how,
                       "peak_mib": peak_mib(device)})
        print(json.dumps(points[-1]), flush=True)
    return points


def parity(models: dict[str, OnnxModule], device: torch.device,
           dtypes: list[str]) -> dict[str, Any]:
    """Each dtype against fp32 torch on the same inputs, and fp32 torch against ONNX Runtime
    where it is installed (proof that the graph interpreter computes the same function)."""
    rng = np.random.default_rng(0)
    chips = torch.from_numpy(rng.uniform(0, 255, (8, 3, CHIP, CHIP)).astype(np.float32))
    frame = torch.from_numpy(rng.uniform(0, 255, (1, 3, 96, 128)).astype(np.float32))
    out: dict[str, Any] = {}
    with torch.inference_mode():
        ref_e = models["embedder"].float()(chips.to(device))["embedding"].float()
        ref_h = models["detector"].float()(frame.to(device))["heatmap"].float()
        for name in dtypes:
            d = DTYPES[name]
            e = models["embedder"].to(d)(chips.to(device, d))["embedding"].float()
            h = models["detector"].to(d)(frame.to(device, d))["heatmap"].float()
            cos = torch.nn.functional.cosine_similarity(e, ref_e).min().item()
            out[name] = {"embedder_min_cosine_vs_fp32": cos,
                         "heatmap_max_abs_diff_vs_fp32": (h - ref_h).abs().max().item()}
    try:
        import onnxruntime as ort

        e_ort = ort.InferenceSession(str(MODELS["embedder"])).run(None, {"image": chips.numpy()})
        h_ort = ort.InferenceSession(str(MODELS["detector"])).run(None, {"image": frame.numpy()})
        out["fp32_vs_onnxruntime"] = {
            "embedder_max_abs_diff": float(np.abs(ref_e.cpu().numpy() - e_ort[0]).max()),
            "heatmap_max_abs_diff": float(np.abs(ref_h.cpu().numpy() - h_ort[0]).max())}
    except ImportError:
        out["fp32_vs_onnxruntime"] = None
    return out


def write_md(result: dict[str, Any], path: Path) -> None:
    lines = ["# GPU benchmarks", "", "Generated by `bench/gpu/gpu_bench.py`; do not edit by hand.",
             "", f"Command: `{result['command']}`", "",
             f"Device: {result['device']}; torch {result['torch']}; "
             f"{result['seconds']:.0f} s in all.", "", "## Models alone", "",
             "| model | dtype | mode | batch | ms / batch | items / s | peak MiB |",
             "|---|---|---|---:|---:|---:|---:|"]
    for p in result["models"]:
        lines.append(f"| {p['model']} | {p['dtype']} | {p['mode']} | {p['batch']} | "
                     f"{p['ms_per_batch']:.2f} | {p['items_per_s']:.0f} | "
                     f"{p['peak_mib'] if p['peak_mib'] is None else round(p['peak_mib'])} |")
    lines += ["", "## Full analyzer on 1080p crowd frames (JPEG in, embeddings out)", "",
              "| dtype | frames per call | frames / s | faces / s | JPEG decoder | peak MiB |",
              "|---|---:|---:|---:|---|---:|"]
    for p in result["pipeline"]:
        lines.append(f"| {p['dtype']} | {p['batch']} | {p['frames_per_s']:.1f} | "
                     f"{p['faces_per_s']:.1f} | {p['jpeg_decoder']} | "
                     f"{p['peak_mib'] if p['peak_mib'] is None else round(p['peak_mib'])} |")
    lines += ["", "## Parity", "", "```", json.dumps(result["parity"], indent=1), "```", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, scratch out")
    parser.add_argument("--bundle", type=Path, help="models + crowd JPEGs from --export-bundle")
    parser.add_argument("--export-bundle", type=Path, help="write a bundle here, then exit")
    parser.add_argument("--out-dir", type=Path, help="default: the repository's docs/")
    parser.add_argument("--budget-s", type=float, default=420.0)
    parser.add_argument("--frames", type=int, default=96, help="crowd frames to analyse")
    parser.add_argument("--min-s", type=float, default=0.3, help="time per measured point")
    parser.add_argument("--max-iter", type=int, default=200)
    cfg = parser.parse_args(argv)
    if cfg.export_bundle:
        export(cfg.export_bundle, cfg.frames)
        return {}
    started = time.monotonic()
    deadline = started + cfg.budget_s
    cuda = torch.cuda.is_available() and not cfg.dry_run
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda and not cfg.dry_run:
        raise SystemExit("no CUDA device: run with --dry-run to test on the CPU")
    dtypes = ["fp16", "bf16"] if cuda else ["fp32"]
    batches = [1, 2, 4, 8, 16, 32, 64, 128, 256] if cuda else [1, 2]
    if cfg.dry_run:
        cfg.frames, cfg.min_s, cfg.max_iter = 2, 0.0, 1
    models = {r: OnnxModule.load(p, cfg.bundle / r if cfg.bundle else None).to(device).eval()
              for r, p in MODELS.items()}
    result: dict[str, Any] = {
        "command": "python bench/gpu/gpu_bench.py " + " ".join(argv or sys.argv[1:]),
        "device": torch.cuda.get_device_name(device) if cuda else f"CPU ({platform.machine()})",
        "torch": torch.__version__, "dry_run": cfg.dry_run, "models": [], "pipeline": []}
    result["parity"] = parity(models, device, dtypes)
    jpegs = crowd_jpegs(cfg.bundle, cfg.frames)
    for name in dtypes:
        cast = {r: m.to(DTYPES[name]) for r, m in models.items()}
        result["models"] += model_points(cast, name, batches, device, cuda, cfg, deadline)
        result["pipeline"] += pipeline_points(jpegs, cast["detector"], cast["embedder"], name,
                                              [1, 8, 32] if cuda else [1, 2], device, cfg,
                                              deadline)
    result["seconds"] = time.monotonic() - started
    result["budget_exhausted"] = time.monotonic() > deadline
    out = cfg.out_dir or (Path(tempfile.mkdtemp(prefix="gpu-bench-")) if cfg.dry_run
                          else ROOT / "docs")
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "figures" / "gpu_bench.json").write_text(json.dumps(result, indent=1) + "\n")
    write_md(result, out / "benchmarks-gpu.md")
    print(f"wrote {out / 'benchmarks-gpu.md'}")
    return result


if __name__ == "__main__":
    main()

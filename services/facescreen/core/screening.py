"""The screening decision for one source: track, vote, search, decide, keep alerts up to date.

Pure: the watchlist search is passed in, so the embedded exact index and a Redis vector
index make the same decisions through the same code, and the whole state round-trips
through JSON (`to_state`), so a distributed matcher can hand a camera to another worker.

A track decides only when its evidence suffices: `min_faces` faces that passed quality,
or a voted score `early_margin` above the list's threshold. One alert per (track,
subject, watchlist), opened once, updated under the same id as better evidence arrives,
closed when the track ends; then a cooldown per (source, subject, watchlist).

>>> import numpy as np
>>> from facescreen.core.matching import GalleryIndex
>>> index = GalleryIndex(("alice",), ("vip",), np.eye(1, 4, dtype=np.float32))
>>> screener = SourceScreener("door", index.search, {"vip": 0.9})
>>> screener.policy.min_faces
3
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from facescreen.core.alerting import Alert, OpenAlert, alert_id_for
from facescreen.core.feedback import Feedback, Suppression
from facescreen.core.matching import Candidate, decide
from facescreen.core.tracking import FaceTracker, Track, TrackerPolicy
from facescreen.core.types import Face, FloatArray

SearchFn = Callable[[FloatArray, int], list[list[Candidate]]]
AlertKey = tuple[int, str, str]  # track id, subject id, watchlist
RECENT_ALERTS = 256  # closed alerts remembered for late feedback


@dataclass(frozen=True)
class ScreeningPolicy:
    """How a source's tracks turn into alerts. Defaults suit 1..25 analysed frames/s."""

    cooldown_s: float = 30.0
    top_k: int = 5
    min_faces: int = 3
    early_margin: float = 0.03
    update_score_gain: float = 0.01
    update_quality_gain: float = 0.05
    update_min_interval_s: float = 1.0
    feedback_suppress_s: float = 600.0
    feedback_similarity: float = 0.93  # same-person frames of dlib are ~0.95; other faces that
    # match the same subject well can still be ~0.87 to each other, and must not be muted
    tracker: TrackerPolicy = field(default_factory=TrackerPolicy)

    def __post_init__(self) -> None:
        for name in ("cooldown_s", "early_margin", "update_score_gain", "update_quality_gain",
                     "update_min_interval_s", "feedback_suppress_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                    0 <= value < float("inf")):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        for name in ("top_k", "min_faces"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not -1 <= self.feedback_similarity <= 1:
            raise ValueError(f"feedback_similarity must be a cosine in [-1, 1], got "
                             f"{self.feedback_similarity!r}")


@dataclass(frozen=True)
class FaceDecision:
    """What screening concluded for one face of a frame."""

    face: Face
    matches: tuple[Candidate, ...]  # per watchlist, those at or above threshold (voted)


def _margin(cand: Candidate, candidates: Sequence[Candidate]) -> float | None:
    others = [c.score for c in candidates if c.subject_id != cand.subject_id]
    return None if not others else cand.score - max(others)


class SourceScreener:
    """Screening state of one source: its tracker, open alerts, cooldowns and feedback."""

    def __init__(self, source: str, search: SearchFn, thresholds: Mapping[str, float],
                 policy: ScreeningPolicy | None = None) -> None:
        self.source = source
        self.search = search
        self.thresholds = thresholds
        self.policy = policy or ScreeningPolicy()
        self.tracker = FaceTracker(self.policy.tracker)
        self.clock: float | None = None  # timestamp of the last frame screened
        self._open: dict[AlertKey, OpenAlert] = {}
        self._identities: dict[str, tuple[float, ...]] = {}  # alert id -> track identity
        self._settled: set[AlertKey] = set()  # will not alert again: done, cooled or rejected
        self._last_alert: dict[tuple[str, str], float] = {}
        self._suppressions: list[Suppression] = []
        self._recent: dict[str, tuple[str, str, tuple[float, ...]]] = {}

    # -- the decision, frame by frame -------------------------------------------------------
    def screen(self, faces: Sequence[Face], frame_index: int,
               timestamp: float) -> tuple[list[FaceDecision], list[Alert]]:
        self.clock = timestamp
        tracks = self.tracker.update(list(faces), timestamp, frame_index)
        alerts: list[Alert] = []
        voted = [(face, track) for face, track in zip(faces, tracks, strict=True)
                 if track.identity is not None]
        decisions: dict[int, tuple[Candidate, ...]] = {}
        if voted:
            probes = np.stack([t.identity for _, t in voted if t.identity is not None])
            results = self.search(probes, self.policy.top_k)
            for (face, track), candidates in zip(voted, results, strict=True):
                decisions[id(face)] = self._decide(face, track, candidates, frame_index,
                                                   timestamp, alerts)
        for track in self.tracker.pop_ended():
            alerts += self._close(track, timestamp)
        return [FaceDecision(f, decisions.get(id(f), ())) for f in faces], alerts

    def _decide(self, face: Face, track: Track, candidates: list[Candidate], frame_index: int,
                timestamp: float, alerts: list[Alert]) -> tuple[Candidate, ...]:
        identity = tuple(float(v) for v in track.identity) if track.identity is not None else ()
        voted_now = face.embedding is not None
        for cand in candidates:
            opened = self._open.get((track.track_id, cand.subject_id, cand.watchlist))
            if opened is None or not voted_now:
                continue
            opened.observe(face, frame_index, cand.score, _margin(cand, candidates))
            self._identities[opened.alert_id] = identity
            p = self.policy
            if opened.worth_update(timestamp, p.update_score_gain, p.update_quality_gain,
                                   p.update_min_interval_s):
                alerts.append(opened.revise("update", self.source, track, timestamp))
        matched = tuple(decide(candidates, self.thresholds))
        for cand in matched:
            key = (track.track_id, cand.subject_id, cand.watchlist)
            if key in self._open or key in self._settled or not self._enough(track, cand):
                continue
            self._settled.add(key)
            if self._suppressed(cand, identity) or self._cooling(cand, timestamp):
                continue
            self._last_alert[(cand.subject_id, cand.watchlist)] = timestamp
            opened = OpenAlert(
                alert_id=alert_id_for(self.source, track, cand.subject_id, cand.watchlist),
                track_id=track.track_id, subject_id=cand.subject_id, watchlist=cand.watchlist,
                threshold=float(self.thresholds[cand.watchlist]), opened_at=timestamp,
                decided_frame=frame_index, time_to_decision_s=timestamp - track.first_seen)
            opened.observe(face, frame_index, cand.score, _margin(cand, candidates))
            self._open[key] = opened
            self._identities[opened.alert_id] = identity
            alerts.append(opened.revise("open", self.source, track, timestamp))
        return matched

    def _enough(self, track: Track, cand: Candidate) -> bool:
        """Evidence suffices: enough quality faces, or a score far above the threshold."""
        limit = float(self.thresholds[cand.watchlist]) + self.policy.early_margin
        return track.quality_hits >= self.policy.min_faces or cand.score >= limit

    def _cooling(self, cand: Candidate, timestamp: float) -> bool:
        last = self._last_alert.get((cand.subject_id, cand.watchlist))
        return last is not None and timestamp - last < self.policy.cooldown_s

    def _suppressed(self, cand: Candidate, identity: tuple[float, ...]) -> bool:
        now = self.clock if self.clock is not None else 0.0
        self._suppressions = [s for s in self._suppressions if now < s.until]
        probe = np.asarray(identity, np.float32)
        return any(s.subject_id == cand.subject_id and s.watchlist == cand.watchlist
                   and float(probe @ np.asarray(s.identity, np.float32))
                   >= self.policy.feedback_similarity for s in self._suppressions)

    def _close(self, track: Track, timestamp: float) -> list[Alert]:
        closed = []
        for key in [k for k in self._open if k[0] == track.track_id]:
            opened = self._open.pop(key)
            closed.append(opened.revise("closed", self.source, track, timestamp))
            self._remember(opened.alert_id, key)
        self._settled = {k for k in self._settled if k[0] != track.track_id}
        return closed

    def _remember(self, alert_id: str, key: AlertKey) -> None:
        self._recent[alert_id] = (key[1], key[2], self._identities.pop(alert_id, ()))
        while len(self._recent) > RECENT_ALERTS:
            self._recent.pop(next(iter(self._recent)))

    def finish(self, timestamp: float | None = None) -> list[Alert]:
        """End of stream: every track ends and every open alert closes."""
        when = timestamp if timestamp is not None else (self.clock or 0.0)
        return [a for track in self.tracker.finish() for a in self._close(track, when)]

    # -- a reviewer's verdict ---------------------------------------------------------------
    def apply_feedback(self, feedback: Feedback) -> bool:
        """'Not this person': the alert's track stops alerting for that subject, and faces
        like it on this source are not alerted for that subject for `feedback_suppress_s`
        of this source's clock. False when this screener never raised that alert."""
        found = next(((k, a) for k, a in self._open.items()
                      if a.alert_id == feedback.alert_id), None)
        if found is not None:
            key, opened = found
            del self._open[key]
            self._settled.add(key)
            self._remember(opened.alert_id, key)
        recent = self._recent.get(feedback.alert_id)
        if recent is None:
            return False
        subject, watchlist, identity = recent
        if identity:
            until = (self.clock or 0.0) + self.policy.feedback_suppress_s
            # A repeated verdict (redelivered, resubmitted) renews its suppression: copies
            # would grow the state, and its export with every message, without bound.
            self._suppressions = [s for s in self._suppressions if (
                s.subject_id, s.watchlist, s.identity) != (subject, watchlist, identity)]
            self._suppressions.append(Suppression(subject, watchlist, identity, until))
        return True

    # -- state that survives a restart -------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """Everything this screener knows, as JSON-able data (holds track identities:
        biometric, so it belongs in process memory or a changelog topic with short
        retention, never in logs)."""
        return {
            "version": 1, "source": self.source, "clock": self.clock,
            "tracker": self.tracker.to_state(),
            "open": [[list(k), a.to_state()] for k, a in self._open.items()],
            "identities": {k: list(v) for k, v in self._identities.items()},
            "settled": [list(k) for k in sorted(self._settled)],
            "last_alert": [[s, w, t] for (s, w), t in self._last_alert.items()],
            "suppressions": [asdict(s) for s in self._suppressions],
            "recent": [[a, s, w, list(i)] for a, (s, w, i) in self._recent.items()],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], search: SearchFn,
                   thresholds: Mapping[str, float],
                   policy: ScreeningPolicy | None = None) -> SourceScreener:
        if state.get("version") != 1:
            raise ValueError(f"screener state version {state.get('version')!r} is not 1")
        screener = cls(state["source"], search, thresholds, policy)
        screener.clock = state["clock"]
        screener.tracker = FaceTracker.from_state(state["tracker"], screener.policy.tracker)
        screener._open = {(int(k[0]), k[1], k[2]): OpenAlert.from_state(a)
                          for k, a in state["open"]}
        screener._identities = {k: tuple(v) for k, v in state["identities"].items()}
        screener._settled = {(int(k[0]), k[1], k[2]) for k in state["settled"]}
        screener._last_alert = {(s, w): float(t) for s, w, t in state["last_alert"]}
        screener._suppressions = [Suppression(**{**s, "identity": tuple(s["identity"])})
                                  for s in state["suppressions"]]
        screener._recent = {a: (s, w, tuple(i)) for a, s, w, i in state["recent"]}
        return screener

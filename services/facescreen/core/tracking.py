"""Per-source face tracking by box overlap and appearance (one Hungarian assignment a frame).

A track keeps a quality-weighted sum of its faces' embeddings: its identity is voted over
the whole track, which is steadier than any single frame. An appearance gate stops a track
jumping to another person at a shot cut even when the boxes overlap.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from facescreen.core.alignment import l2_normalise
from facescreen.core.types import Face, FloatArray


@dataclass
class Track:
    """A face followed through consecutive frames of one source."""

    track_id: int
    box: tuple[float, float, float, float]
    first_seen: float
    last_seen: float
    hits: int = 1
    weighted_sum: FloatArray | None = None
    weight: float = 0.0
    last_embedding: FloatArray | None = None
    alerted: set[str] = field(default_factory=set)  # subject ids already alerted on

    def add(self, face: Face, timestamp: float) -> None:
        self.box = face.detection.box
        self.last_seen = timestamp
        self.hits += 1
        self._vote(face)

    def _vote(self, face: Face) -> None:
        if face.embedding is None:
            return
        w = max(face.quality.score, 1e-3)
        contribution = face.embedding * w
        self.weighted_sum = contribution if self.weighted_sum is None else self.weighted_sum + contribution
        self.weight += w
        self.last_embedding = face.embedding

    @property
    def identity(self) -> FloatArray | None:
        """The track's voted embedding (normalised), or None while no face passed quality."""
        return None if self.weighted_sum is None else l2_normalise(self.weighted_sum)


def iou_matrix(a: list[tuple[float, float, float, float]],
               b: list[tuple[float, float, float, float]]) -> FloatArray:
    """Pairwise intersection-over-union of two box lists (x1, y1, x2, y2)."""
    if not a or not b:
        return np.zeros((len(a), len(b)), np.float32)
    A, B = np.asarray(a, np.float32)[:, None], np.asarray(b, np.float32)[None]
    iw = np.clip(np.minimum(A[..., 2], B[..., 2]) - np.maximum(A[..., 0], B[..., 0]), 0, None)
    ih = np.clip(np.minimum(A[..., 3], B[..., 3]) - np.maximum(A[..., 1], B[..., 1]), 0, None)
    inter = iw * ih
    area_a = (A[..., 2] - A[..., 0]) * (A[..., 3] - A[..., 1])
    area_b = (B[..., 2] - B[..., 0]) * (B[..., 3] - B[..., 1])
    out: FloatArray = (inter / np.maximum(area_a + area_b - inter, 1e-6)).astype(np.float32)
    return out


@dataclass
class FaceTracker:
    """Tracks of one source. `update` assigns `track_id` to each face and returns their tracks."""

    min_iou: float = 0.2
    appearance_gate: float = 0.75  # cosine below which two faces are never the same track
    max_age_s: float = 1.0
    tracks: list[Track] = field(default_factory=list)
    _next_id: int = 1

    def update(self, faces: list[Face], timestamp: float) -> list[Track]:
        self.tracks = [t for t in self.tracks if timestamp - t.last_seen <= self.max_age_s]
        cost = self._cost(faces)
        rows, cols = linear_sum_assignment(cost) if cost.size else ([], [])
        assigned: dict[int, Track] = {}
        for r, c in zip(rows, cols, strict=True):
            if cost[r, c] < 1.0:
                assigned[int(c)] = self.tracks[int(r)]
        result = []
        for i, face in enumerate(faces):
            track = assigned.get(i)
            if track is None:
                track = Track(self._next_id, face.detection.box, timestamp, timestamp)
                track._vote(face)
                self._next_id += 1
                self.tracks.append(track)
            else:
                track.add(face, timestamp)
            face.track_id = track.track_id
            result.append(track)
        return result

    def _cost(self, faces: list[Face]) -> FloatArray:
        """1 - overlap, blended with appearance; 1.0 or more means 'may not match'."""
        iou = iou_matrix([t.box for t in self.tracks], [f.detection.box for f in faces])
        cost = 1.0 - iou
        cost[iou < self.min_iou] = 1.0
        for r, track in enumerate(self.tracks):
            if track.last_embedding is None:
                continue
            for c, face in enumerate(faces):
                if face.embedding is None:
                    continue
                similarity = float(track.last_embedding @ face.embedding)
                if similarity < self.appearance_gate:
                    cost[r, c] = 1.0
                elif cost[r, c] < 1.0:
                    cost[r, c] = 0.5 * cost[r, c] + 0.5 * (1.0 - similarity)
        return cost

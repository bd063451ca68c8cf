"""Per-source face tracks and their life cycle: tentative, confirmed, lost, ended.

One passage of a person should be one track, hence one alert. Each analysed frame joins its
faces to tracks in three stages, each one Hungarian assignment on a vectorised cost matrix:

1. faces that passed quality (they carry an embedding) to live tracks, by box overlap blended
   with appearance. The appearance gate keeps a track from jumping to another person at a
   shot cut even when the boxes overlap, and keeps crossing people apart;
2. faces that failed quality to the live tracks left, by overlap alone (ByteTrack's second
   stage for low-score boxes): an occluded or blurred face keeps its track alive and moves
   its box, but never votes, as nothing vouches for who it is;
3. quality faces still unclaimed to any track seen within `relink_s`, by appearance alone
   against the track's voted identity: a person who was hidden or left the view briefly, or
   moved far between two frames at a low analysis rate, keeps their track.

Expiry counts analysed frames (calls of `update`) and seconds, and either bound suffices, so
one policy holds from 1 to 25 fps (at 25 fps two seconds are fifty frames, at 1 fps ten frames
are ten seconds); `relink_s` caps both, as no track is joined later than that after its last
sighting (exact rule: `FaceTracker`). A track's identity is the quality-weighted vote of
`matching.vote_template` over its quality faces, kept as a running sum: nothing to redo a frame.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

from facescreen.core.alignment import l2_normalise
from facescreen.core.types import Face, FloatArray

Box = tuple[float, float, float, float]
BoolArray = npt.NDArray[np.bool_]
STATE_VERSION = 1
_INVALID = 1e6  # cost of a pair that may not match: above any valid cost (all are <= 2)


class TrackState(enum.StrEnum):
    TENTATIVE = "tentative"  # fewer than min_hits quality faces so far
    CONFIRMED = "confirmed"
    LOST = "lost"  # past both expiry bounds: only appearance (stage 3) may bring it back
    ENDED = "ended"  # past relink_s too (or no identity to relink on): reported once, then gone


@dataclass(frozen=True)
class TrackerPolicy:
    """How faces join tracks and how long an unseen track lives. Defaults suit 1..25 fps."""

    min_iou: float = 0.2  # overlap a quality face needs to join a live track
    appearance_gate: float = 0.75  # cosine to the track's last face below which it never joins
    min_hits: int = 3  # quality faces before CONFIRMED
    max_lost_frames: int = 10  # a live track survives up to this many analysed frames unseen ...
    max_lost_s: float = 2.0  # ... or up to this many seconds between sightings; then LOST
    relink_s: float = 6.0  # horizon: appearance alone re-links within it; past it a track ENDS
    relink_similarity: float = 0.82  # cosine to the track's identity needed to re-link
    low_min_iou: float = 0.4  # overlap a face without embedding needs (nothing else vouches)
    appearance_weight: float = 0.5  # share of appearance, against overlap, in the stage-1 cost

    def __post_init__(self) -> None:
        if self.min_hits < 1:
            raise ValueError(f"min_hits must be >= 1, got {self.min_hits}")
        if self.max_lost_frames < 0 or not 0 <= self.max_lost_s <= self.relink_s:
            raise ValueError("need max_lost_frames >= 0 and 0 <= max_lost_s <= relink_s")
        if not 0.0 <= self.appearance_weight <= 1.0:
            raise ValueError(f"appearance_weight must be in [0, 1], got {self.appearance_weight}")
        if not (0.0 < self.min_iou <= 1.0 and 0.0 < self.low_min_iou <= 1.0):
            raise ValueError("min_iou and low_min_iou must be in (0, 1]")


@dataclass
class Track:
    """A person followed through the frames of one source, with the vote on who they are."""

    track_id: int
    box: Box
    first_seen: float
    last_seen: float
    first_frame: int
    last_frame: int
    hits: int = 0  # faces linked, any quality
    quality_hits: int = 0  # faces linked that had an embedding
    best_quality: float = 0.0
    state: TrackState = TrackState.TENTATIVE
    weighted_sum: FloatArray | None = None  # sum of embedding * max(quality, 1e-3)
    weight: float = 0.0  # sum of those weights
    last_embedding: FloatArray | None = None
    confirmed_frame: int | None = None  # frame_index at which it became CONFIRMED
    last_update: int = 0  # the tracker's analysed-frame count when a face last joined

    @property
    def identity(self) -> FloatArray | None:
        """`vote_template` over the track's quality faces; None while none passed quality."""
        return None if self.weighted_sum is None else l2_normalise(self.weighted_sum)

    @property
    def confirmed(self) -> bool:
        """True once confirmed, also while LOST and after it ENDED."""
        return self.confirmed_frame is not None

    def join(self, face: Face, timestamp: float, frame_index: int, update: int,
             min_hits: int) -> None:
        self.box = _box(face)
        self.last_seen, self.last_frame, self.last_update = float(timestamp), int(frame_index), update
        self.hits += 1
        if face.embedding is not None:
            # float32 throughout, as vote_template computes it, so the two agree.
            w = np.maximum(np.float32(face.quality.score), np.float32(1e-3))
            contribution = np.asarray(face.embedding, np.float32) * w
            total = self.weighted_sum
            self.weighted_sum = contribution if total is None else total + contribution
            self.weight += float(w)
            self.last_embedding = np.asarray(face.embedding, np.float32)
            self.quality_hits += 1
            self.best_quality = max(self.best_quality, float(face.quality.score))
        if self.confirmed_frame is None and self.quality_hits >= min_hits:
            self.confirmed_frame = int(frame_index)
        self.state = TrackState.CONFIRMED if self.confirmed else TrackState.TENTATIVE

    def to_doc(self) -> dict[str, Any]:
        doc = {f.name: getattr(self, f.name) for f in fields(self)}
        doc["box"], doc["state"] = list(self.box), self.state.value
        for name in ("weighted_sum", "last_embedding"):
            doc[name] = None if doc[name] is None else doc[name].tolist()
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Track:
        d = dict(doc)
        d["box"], d["state"] = tuple(float(v) for v in d["box"]), TrackState(d["state"])
        for name in ("weighted_sum", "last_embedding"):
            d[name] = None if d[name] is None else np.asarray(d[name], np.float32)
        return cls(**d)


def _box(face: Face) -> Box:
    x1, y1, x2, y2 = (float(v) for v in face.detection.box)
    return x1, y1, x2, y2


def iou_matrix(a: npt.ArrayLike, b: npt.ArrayLike) -> FloatArray:
    """Pairwise intersection-over-union of two box lists (x1, y1, x2, y2)."""
    A = np.asarray(a, np.float32).reshape(-1, 4)[:, None]
    B = np.asarray(b, np.float32).reshape(-1, 4)[None]
    iw = np.clip(np.minimum(A[..., 2], B[..., 2]) - np.maximum(A[..., 0], B[..., 0]), 0, None)
    ih = np.clip(np.minimum(A[..., 3], B[..., 3]) - np.maximum(A[..., 1], B[..., 1]), 0, None)
    inter = iw * ih
    area_a = (A[..., 2] - A[..., 0]) * (A[..., 3] - A[..., 1])
    area_b = (B[..., 2] - B[..., 0]) * (B[..., 3] - B[..., 1])
    out: FloatArray = (inter / np.maximum(area_a + area_b - inter, 1e-6)).astype(np.float32)
    return out


def _assign(cost: FloatArray, valid: BoolArray) -> list[tuple[int, int]]:
    """Most valid pairs, then least cost: invalid pairs cost more than all valid ones together."""
    if not valid.any():
        return []
    rows, cols = linear_sum_assignment(np.where(valid, cost, _INVALID))
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if valid[r, c]]


def _rows(vectors: list[FloatArray | None], dim: int) -> tuple[FloatArray, BoolArray]:
    """Stack optional vectors into a matrix (zeros where missing) and a has-vector mask."""
    out = np.zeros((len(vectors), dim), np.float32)
    has = np.array([v is not None for v in vectors], bool)
    for i, v in enumerate(vectors):
        if v is not None:
            out[i] = v
    return out, has


class FaceTracker:
    """The tracks of one source. `update` sets each face's `track_id` and returns its track.

    Expiry, exactly: at an update with timestamp `t`, take a track last joined at `last_seen`
    with `missed` analysed frames (updates) between that sighting and this one, and
    `gap = t - last_seen`. It is live, i.e. may be joined by overlap (stages 1 and 2), while
    `(missed <= max_lost_frames or gap <= max_lost_s) and gap <= relink_s`; it may be
    re-linked by appearance alone (stage 3) while `gap <= relink_s` and it has an identity.
    So `relink_s` is the horizon of every track, whatever the frame rate. After an update in
    which it is not joined, a track that cannot be live at the next update is LOST, and one
    that cannot be joined at all (gap past relink_s, or no identity and not live) ENDS.
    Frames are counted as updates, so the caller calls `update` for every analysed frame,
    also one without faces; jumps in `frame_index` (dropped or skipped frames) do not count.
    """

    def __init__(self, policy: TrackerPolicy | None = None) -> None:
        self.policy = policy or TrackerPolicy()
        self.tracks: list[Track] = []  # live and lost, in id order
        self._ended: list[Track] = []  # ended, not yet popped
        self._next_id = 1
        self._updates = 0

    def reset(self) -> None:
        """Forget everything, as a new tracker (ids start again at 1)."""
        self.tracks, self._ended, self._next_id, self._updates = [], [], 1, 0

    def update(self, faces: list[Face], timestamp: float, frame_index: int) -> list[Track]:
        p, tracks = self.policy, self.tracks
        self._updates += 1
        k = self._updates
        missed = np.array([k - t.last_update - 1 for t in tracks], np.int64)
        gap = float(timestamp) - np.array([t.last_seen for t in tracks], np.float64)
        lost = np.array([t.state is TrackState.LOST for t in tracks], bool)
        live = ~lost & ((missed <= p.max_lost_frames) | (gap <= p.max_lost_s)) & (gap <= p.relink_s)
        free = np.ones(len(tracks), bool)
        owner: dict[int, Track] = {}

        def claim(pairs: list[tuple[int, int]], track_rows: npt.NDArray[np.intp],
                  face_cols: list[int]) -> None:
            for r, c in pairs:
                t, f = int(track_rows[r]), face_cols[c]
                free[t] = False
                owner[f] = tracks[t]
                tracks[t].join(faces[f], timestamp, frame_index, k, p.min_hits)

        high = [i for i, f in enumerate(faces) if f.embedding is not None]
        low = [i for i, f in enumerate(faces) if f.embedding is None]
        boxes = np.array([t.box for t in tracks], np.float32).reshape(-1, 4)
        face_boxes = np.array([_box(f) for f in faces], np.float32).reshape(-1, 4)
        if high and tracks:
            emb = np.stack([np.asarray(faces[i].embedding, np.float32) for i in high])
            last, has_last = _rows([t.last_embedding for t in tracks], emb.shape[1])
            # Stage 1: quality faces to live tracks, overlap blended with appearance, gated.
            rows = np.flatnonzero(live)
            iou = iou_matrix(boxes[rows], face_boxes[high])
            sim = last[rows] @ emb.T
            has = has_last[rows][:, None]
            w = p.appearance_weight
            cost = np.where(has, (1 - w) * (1 - iou) + w * (1 - sim), 1 - iou)
            valid = (iou >= p.min_iou) & (~has | (sim >= p.appearance_gate))
            claim(_assign(cost, valid), rows, high)
        if low and tracks:
            # Stage 2: faces without embedding to the live tracks left, by overlap only.
            rows = np.flatnonzero(live & free)
            iou = iou_matrix(boxes[rows], face_boxes[low])
            claim(_assign(1 - iou, iou >= p.low_min_iou), rows, low)
        rest = [i for i in high if i not in owner]
        if rest and tracks:
            # Stage 3: re-link by appearance alone to any unjoined track seen within relink_s.
            emb = np.stack([np.asarray(faces[i].embedding, np.float32) for i in rest])
            ident, has_ident = _rows([t.identity for t in tracks], emb.shape[1])
            rows = np.flatnonzero(free & has_ident & (gap <= p.relink_s))
            sim = ident[rows] @ emb.T
            claim(_assign(1 - sim, sim >= p.relink_similarity), rows, rest)

        for t in np.flatnonzero(free):
            self._age(tracks[int(t)], k, float(gap[t]))
        self.tracks = [t for t in tracks if t.state is not TrackState.ENDED]
        for i, face in enumerate(faces):
            if i not in owner:
                track = Track(self._next_id, _box(face), float(timestamp), float(timestamp),
                              int(frame_index), int(frame_index))
                track.join(face, timestamp, frame_index, k, p.min_hits)
                self._next_id += 1
                self.tracks.append(track)
                owner[i] = track
            face.track_id = owner[i].track_id
        return [owner[i] for i in range(len(faces))]

    def _age(self, track: Track, k: int, gap: float) -> None:
        """An unjoined track: LOST once it cannot be live at the next update, ENDED once it
        cannot be joined at all (missed frames and the gap only grow from here)."""
        p = self.policy
        may_live = k - track.last_update <= p.max_lost_frames or gap <= p.max_lost_s
        if gap > p.relink_s or (not may_live and track.identity is None):
            track.state = TrackState.ENDED
            self._ended.append(track)
        elif not may_live:
            track.state = TrackState.LOST

    def pop_ended(self) -> list[Track]:
        """Tracks that ended since the last call, each reported once, in the order they ended."""
        out, self._ended = self._ended, []
        return out

    def finish(self) -> list[Track]:
        """End of stream: the ended tracks not yet popped, then every live or lost track."""
        out = self._ended + self.tracks
        for track in self.tracks:
            track.state = TrackState.ENDED
        self._ended, self.tracks = [], []
        return out

    def to_state(self) -> dict[str, Any]:
        """Everything needed to continue exactly, as plain JSON types."""
        return {"version": STATE_VERSION, "next_id": self._next_id, "updates": self._updates,
                "tracks": [t.to_doc() for t in self.tracks],
                "ended": [t.to_doc() for t in self._ended]}

    @classmethod
    def from_state(cls, state: dict[str, Any], policy: TrackerPolicy | None = None) -> FaceTracker:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unknown tracker state version {state.get('version')!r}")
        tracker = cls(policy)
        tracker._next_id, tracker._updates = int(state["next_id"]), int(state["updates"])
        tracker.tracks = [Track.from_doc(d) for d in state["tracks"]]
        tracker._ended = [Track.from_doc(d) for d in state["ended"]]
        return tracker

"""Watchlist search and the match decision, on L2-normalised vectors (cosine similarity)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import numpy as np
import numpy.typing as npt

from facescreen.core.alignment import l2_normalise
from facescreen.core.types import FloatArray


@dataclass(frozen=True)
class Candidate:
    """One watchlist entry and how similar a probe is to it."""

    subject_id: str
    watchlist: str
    score: float


def subject_template(embeddings: FloatArray) -> FloatArray:
    """One template per subject: the renormalised mean of its normalised embeddings.

    Measured here on celeba-dev, this beats keeping each image and taking the maximum.
    """
    return l2_normalise(l2_normalise(embeddings).mean(axis=0))


def vote_template(embeddings: FloatArray, weights: FloatArray) -> FloatArray:
    """A track's identity: the weight-averaged (quality-weighted) embedding, renormalised.

    The matcher decides a track on this vector; `facescreen eval identify --track K` and
    `watchlist calibrate` decide pseudo-tracks of K photos on it too, so the calibrated
    rate is the rate of what alerts.

    >>> import numpy as np
    >>> e = np.eye(2, dtype=np.float32)
    >>> vote_template(e, np.array([3.0, 1.0], np.float32)).round(3).tolist()
    [0.949, 0.316]
    """
    w = np.maximum(np.asarray(weights, np.float32), 1e-3)
    return l2_normalise((np.asarray(embeddings, np.float32) * w[:, None]).sum(axis=0))


class TemplateIndex(Protocol):
    """What screening needs of a watchlist index: its size and a top-k search.

    `GalleryIndex` (exact) and the watchlist package's IVF index both fit it."""

    def __len__(self) -> int: ...

    def search(self, probes: FloatArray, k: int = 5,
               watchlists: Sequence[str] | None = None) -> list[list[Candidate]]: ...


@dataclass(frozen=True)
class GalleryIndex:
    """An exact in-memory index: one row per (subject, watchlist) template."""

    subject_ids: tuple[str, ...]
    watchlists: tuple[str, ...]
    templates: FloatArray  # (m, d), normalised

    @classmethod
    def empty(cls, dim: int) -> GalleryIndex:
        return cls((), (), np.zeros((0, dim), np.float32))

    def __len__(self) -> int:
        return len(self.subject_ids)

    def search(self, probes: FloatArray, k: int = 5,
               watchlists: Sequence[str] | None = None) -> list[list[Candidate]]:
        """Top-k candidates per probe row, best first, optionally only from some watchlists."""
        m = len(self)
        if m == 0:
            return [[] for _ in range(len(probes))]
        scores = np.asarray(probes, np.float32) @ self.templates.T
        k = min(k, m)
        if watchlists is not None:
            names, codes = self._list_codes
            chosen = set(watchlists)
            wanted = [i for i, name in enumerate(names) if name in chosen]
            mask = np.isin(codes, wanted)
            scores[:, ~mask] = -np.inf
            k = min(k, int(mask.sum()))
        if k <= 0:
            return [[] for _ in range(len(probes))]
        # The k best in linear time, then only those k sorted: a full argsort was half the
        # time of a search at 100k templates and more (bench/gallery_scale.py).
        best = np.argpartition(scores, m - k, axis=1)[:, m - k:]
        order = np.take_along_axis(best, np.argsort(-np.take_along_axis(scores, best, 1), 1), 1)
        return [[Candidate(self.subject_ids[j], self.watchlists[j], float(scores[i, j]))
                 for j in row] for i, row in enumerate(order)]

    @cached_property
    def _list_codes(self) -> tuple[list[str], npt.NDArray[np.intp]]:
        """The distinct list names and each row's position among them, built once: np.isin
        on the names themselves cost more than the whole search at 100k templates."""
        names, codes = np.unique(np.asarray(self.watchlists, dtype=np.str_), return_inverse=True)
        return [str(name) for name in names], codes.astype(np.intp)


def decide(candidates: Sequence[Candidate], thresholds: Mapping[str, float]) -> list[Candidate]:
    """The best candidate of each watchlist whose score reaches that watchlist's threshold."""
    best: dict[str, Candidate] = {}
    for c in candidates:
        limit = thresholds.get(c.watchlist)
        if limit is None or c.score < limit:
            continue
        if c.watchlist not in best or c.score > best[c.watchlist].score:
            best[c.watchlist] = c
    return sorted(best.values(), key=lambda c: -c.score)


def threshold_for_fpir(impostor_top_scores: FloatArray, target_fpir: float) -> float:
    """The lowest threshold at which at most `target_fpir` of non-enrolled probes would alert.

    `impostor_top_scores` holds, for each probe of a person not on the list, the best score
    against the whole list: a probe alerts when that score reaches the threshold.
    """
    scores = np.sort(np.asarray(impostor_top_scores, np.float32))
    if scores.size == 0:
        raise ValueError("no impostor scores to calibrate on")
    if not 0.0 < target_fpir < 1.0:
        raise ValueError(f"target FPIR must be in (0, 1), got {target_fpir}")
    allowed = int(np.floor(target_fpir * scores.size + 1e-9))  # probes that may alert
    # Scores are float32: step to the next float32 above the last probe that must not alert.
    limit = scores[-1] if allowed == 0 else scores[-allowed - 1]
    return float(np.nextafter(limit, np.float32(np.inf)))

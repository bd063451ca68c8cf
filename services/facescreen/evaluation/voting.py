"""Two ways to decide who a track is, measured on the same tracks.

- template voting (what the screener does today): search the quality-weighted mean
  embedding of the track's faces (`matching.vote_template`) against the templates;
- score voting: search every face, and take per subject the quality-weighted mean, or the
  median, of the per-face scores.

Cosine of a mean vector is at least the weighted mean of the cosines (the mean vector is
shorter than one before it is renormalised), so template voting scores every track higher,
mated or not: only a comparison at the same false-track rate says which separates better.

A live track is searched after every quality face and alerts as soon as a running vote
reaches the threshold with at least `min_faces` faces, so a track's decision score here is
the maximum of the running vote over its prefixes of at least `min_faces` faces (the whole
track when it has fewer); the vote over all its faces is reported as well ("final").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from facescreen.core.alignment import l2_normalise
from facescreen.core.types import FloatArray

F64 = npt.NDArray[np.float64]
METHODS = ("template", "score_mean", "score_median")
WEIGHT_FLOOR = 1e-3  # vote_template's floor on a face's weight


def running_votes(embeddings: FloatArray, qualities: Sequence[float],
                  templates: FloatArray) -> dict[str, F64]:
    """Per method, the (faces, subjects) scores of the vote over the first 1..n faces."""
    e = np.asarray(embeddings, np.float32)
    w = np.maximum(np.asarray(qualities, np.float32), np.float32(WEIGHT_FLOOR))
    t = np.asarray(templates, np.float32)
    sums = np.cumsum(e * w[:, None], axis=0, dtype=np.float32)
    template = (l2_normalise(sums) @ t.T).astype(np.float64)
    per_face = (e @ t.T).astype(np.float64)
    cum_w = np.cumsum(w.astype(np.float64))
    mean = np.cumsum(per_face * w[:, None].astype(np.float64), axis=0) / cum_w[:, None]
    median = np.stack([np.median(per_face[:n + 1], axis=0) for n in range(len(e))])
    return {"template": template, "score_mean": mean, "score_median": median}


def track_scores(embeddings: FloatArray, qualities: Sequence[float], templates: FloatArray,
                 min_faces: int) -> dict[str, dict[str, F64]]:
    """Per method, per subject: the decision score (max over running votes of at least
    `min_faces` faces, or the full vote of a shorter track) and the final vote."""
    runs = running_votes(embeddings, qualities, templates)
    first = min(min_faces, len(qualities)) - 1
    return {m: {"decision": r[first:].max(axis=0), "final": r[-1]} for m, r in runs.items()}


@dataclass(frozen=True)
class Unit:
    """One decision to score: a track (or a window of one, or a pseudo-track of photos)."""

    group: str  # where it comes from (clip or person), for counting
    mated: str | None  # the enrolled subject it shows, None for a stranger
    absent: tuple[int, ...]  # template rows of subjects known not to be in it
    embeddings: FloatArray
    qualities: tuple[float, ...]


def _hits_and_impostors(units: Sequence[Unit], subject_ids: Sequence[str],
                        templates: FloatArray, min_faces: int, method: str,
                        kind: str) -> tuple[F64, F64]:
    """Mated hit scores (top-1 must be the true subject, else -inf) and non-mated maxima."""
    hits: list[float] = []
    impostors: list[float] = []
    for unit in units:
        if not unit.qualities:  # no usable face: a mated miss; a stranger cannot alert
            if unit.mated is not None:
                hits.append(-np.inf)
            continue
        s = track_scores(unit.embeddings, unit.qualities, templates, min_faces)[method][kind]
        if unit.mated is not None:
            j = subject_ids.index(unit.mated)
            hits.append(float(s[j]) if int(np.argmax(s)) == j else -np.inf)
        if unit.absent:
            impostors.append(float(s[list(unit.absent)].max()))
    return np.asarray(hits, np.float64), np.asarray(impostors, np.float64)


def _fnir_at(hits: F64, impostors: F64, allowed: int) -> dict[str, Any]:
    """FNIR at the lowest threshold with at most `allowed` non-mated units at or above it."""
    ordered = np.sort(impostors)
    limit = ordered[-1] if allowed == 0 else ordered[-allowed - 1]
    threshold = float(np.nextafter(limit, np.inf))
    return {"threshold": round(threshold, 6), "false_units": int((impostors >= threshold).sum()),
            "fnir": round(float(np.mean(hits < threshold)), 4)}


def separation(hits: F64, impostors: F64, threshold: float | None = None) -> dict[str, Any]:
    """Mated distribution, the worst stranger, FNIR at 0 and at 1% false units, and d'
    (the methods' scores are on different scales, so compare d' and FNIRs, not scores);
    with `threshold`, the rates at that fixed threshold too."""
    finite = hits[np.isfinite(hits)]
    out: dict[str, Any] = {
        "mated": int(hits.size), "nonmated": int(impostors.size),
        "mated_wrong_top1": int(hits.size - finite.size),
        "mated_min": round(float(finite.min()), 6) if finite.size else None,
        "mated_median": round(float(np.median(finite)), 6) if finite.size else None,
        "nonmated_max": round(float(impostors.max()), 6) if impostors.size else None,
        "nonmated_median": round(float(np.median(impostors)), 6) if impostors.size else None,
    }
    if hits.size and impostors.size:
        out["gap_mated_min_minus_nonmated_max"] = (
            round(float(finite.min() - impostors.max()), 6) if finite.size else None)
        out["at_zero_false"] = _fnir_at(hits, impostors, 0)
        out["at_1pct_false"] = _fnir_at(hits, impostors, int(np.floor(0.01 * impostors.size)))
        if finite.size > 1 and impostors.size > 1:
            spread = np.sqrt((finite.var(ddof=1) + impostors.var(ddof=1)) / 2.0)
            out["d_prime"] = round(float((finite.mean() - impostors.mean()) / spread), 3)
    if threshold is not None and hits.size and impostors.size:
        out["at_threshold"] = {"threshold": threshold,
                               "false_units": int((impostors >= threshold).sum()),
                               "fnir": round(float(np.mean(hits < threshold)), 4)}
    return out


def compare(units: Sequence[Unit], subject_ids: Sequence[str], templates: FloatArray,
            min_faces: int, threshold: float | None = None,
            kinds: Sequence[str] = ("decision", "final")) -> dict[str, Any]:
    """Every method's separation on the same units, on decision and/or final scores."""
    return {kind: {m: separation(*_hits_and_impostors(units, subject_ids, templates, min_faces,
                                                      m, kind), threshold) for m in METHODS}
            for kind in kinds}


def windows(unit: Unit, size: int) -> list[Unit]:
    """Consecutive, non-overlapping windows of `size` faces of a track (the rest dropped):
    more, shorter decisions from the long tracks of a video."""
    n = len(unit.qualities) // size
    return [Unit(unit.group, unit.mated, unit.absent,
                 unit.embeddings[i * size:(i + 1) * size],
                 unit.qualities[i * size:(i + 1) * size]) for i in range(n)]

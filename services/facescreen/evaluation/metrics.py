"""Biometric and detection error rates from scores and boxes: pure numpy, no I/O.

Conventions shared by every function here: a higher score means "more alike", and a
comparison is accepted (or a search alerts) when its score is *at or above* the threshold.
Thresholds for a target false-accept rate come from the impostor scores alone, through the
same rule the watchlist uses (`threshold_for_fpir`), so an evaluated operating point is one
an operator could actually set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from facescreen.core.matching import threshold_for_fpir as _threshold_for_fpir
from facescreen.core.types import FloatArray

Scores = npt.ArrayLike
F64 = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]


def threshold_for_fpir(scores: F64, target: float) -> float:
    """The watchlist's calibration rule, fed float64 (it computes in float64; its annotation
    says float32, and rounding scores to float32 first could move them across the threshold)."""
    return _threshold_for_fpir(cast(FloatArray, scores), target)


def _scores(values: Scores, what: str) -> F64:
    array = np.asarray(values, np.float64).reshape(-1)
    if array.size == 0:
        raise ValueError(f"no {what} scores")
    return array


def _count_at_or_above(sorted_scores: F64, thresholds: F64) -> npt.NDArray[np.int64]:
    """How many of `sorted_scores` (ascending) are >= each threshold."""
    return sorted_scores.size - np.searchsorted(sorted_scores, thresholds, side="left")


# --------------------------------------------------------------------------- verification


@dataclass(frozen=True)
class Roc:
    """The full ROC: one point per distinct score, thresholds descending from +inf."""

    thresholds: F64
    far: F64
    tar: F64


def roc_curve(genuine: Scores, impostor: Scores) -> Roc:
    """Exact ROC of a 1:1 comparator, a point at each distinct score (no interpolation)."""
    gen = np.sort(_scores(genuine, "genuine"))
    imp = np.sort(_scores(impostor, "impostor"))
    thresholds = np.concatenate([[np.inf], np.unique(np.concatenate([gen, imp]))[::-1]])
    far = _count_at_or_above(imp, thresholds) / imp.size
    tar = _count_at_or_above(gen, thresholds) / gen.size
    return Roc(thresholds=thresholds, far=far.astype(np.float64), tar=tar.astype(np.float64))


def threshold_at_far(impostor: Scores, far: float) -> float:
    """The lowest threshold that at most `far` of the impostor scores reach.

    With n impostors the achievable FARs are multiples of 1/n; asking for less than 1/n gives
    a threshold just above the highest impostor (FAR 0), never an extrapolation.
    """
    return threshold_for_fpir(_scores(impostor, "impostor"), far)


@dataclass(frozen=True)
class OperatingPoint:
    """A 1:1 threshold with the rates it gives on the data it was measured on."""

    threshold: float
    far: float
    tar: float


def tar_at_far(genuine: Scores, impostor: Scores, far: float) -> OperatingPoint:
    """TAR at the threshold `threshold_at_far` picks for the requested FAR."""
    gen = _scores(genuine, "genuine")
    imp = _scores(impostor, "impostor")
    t = threshold_at_far(imp, far)
    return OperatingPoint(threshold=t, far=float(np.mean(imp >= t)), tar=float(np.mean(gen >= t)))


def equal_error_rate(genuine: Scores, impostor: Scores) -> tuple[float, float]:
    """(EER, threshold): where FAR meets FRR, linearly interpolated between ROC points.

    The threshold returned is the ROC point at or just past the crossing (FAR >= FRR).
    """
    roc = roc_curve(genuine, impostor)
    frr = 1.0 - roc.tar
    diff = roc.far - frr  # rises from -1 (t=+inf) to +1 as the threshold falls
    i = int(np.argmax(diff >= 0.0))
    if i == 0:  # cannot happen with FRR(+inf) = 1, kept for safety
        return float(roc.far[0]), float(roc.thresholds[0])
    d0, d1 = diff[i - 1], diff[i]
    w = d0 / (d0 - d1) if d1 != d0 else 0.0
    eer = roc.far[i - 1] + w * (roc.far[i] - roc.far[i - 1])
    return float(eer), float(roc.thresholds[i])


def best_accuracy_threshold(scores: Scores, same: npt.ArrayLike) -> tuple[float, float]:
    """(threshold, accuracy) maximising pair accuracy; candidate thresholds are midpoints.

    Midpoints between consecutive distinct scores (plus one below and one above all) make
    the chosen threshold independent of which side of a gap a held-out score falls.
    Ties go to the lowest such threshold.
    """
    s = _scores(scores, "pair")
    y = np.asarray(same, bool).reshape(-1)
    if y.shape != s.shape:
        raise ValueError("scores and labels differ in length")
    u = np.unique(s)
    candidates = np.concatenate([[u[0] - 1.0], (u[:-1] + u[1:]) / 2.0, [u[-1] + 1.0]])
    gen, imp = np.sort(s[y]), np.sort(s[~y])
    accepted_gen = _count_at_or_above(gen, candidates)
    rejected_imp = imp.size - _count_at_or_above(imp, candidates)
    accuracy = (accepted_gen + rejected_imp) / s.size
    k = int(np.argmax(accuracy))
    return float(candidates[k]), float(accuracy[k])


@dataclass(frozen=True)
class KFoldAccuracy:
    """LFW-protocol accuracy: threshold fitted on the other folds, measured on each fold."""

    mean: float
    std: float  # population std over folds, as the LFW result tables report it
    per_fold: tuple[float, ...]
    thresholds: tuple[float, ...]


def kfold_accuracy(scores: Scores, same: npt.ArrayLike, folds: npt.ArrayLike) -> KFoldAccuracy:
    """Mean +- std accuracy over folds; each fold's threshold comes from the remaining folds."""
    s = _scores(scores, "pair")
    y = np.asarray(same, bool).reshape(-1)
    f = np.asarray(folds).reshape(-1)
    if not (s.shape == y.shape == f.shape):
        raise ValueError("scores, labels and folds differ in length")
    fold_ids = np.unique(f)
    if fold_ids.size < 2:
        raise ValueError("k-fold accuracy needs at least two folds")
    accs: list[float] = []
    ths: list[float] = []
    for fold in fold_ids:
        test = f == fold
        t, _ = best_accuracy_threshold(s[~test], y[~test])
        accs.append(float(np.mean((s[test] >= t) == y[test])))
        ths.append(t)
    return KFoldAccuracy(mean=float(np.mean(accs)), std=float(np.std(accs)),
                         per_fold=tuple(accs), thresholds=tuple(ths))


# ------------------------------------------------------------------ open-set identification


def mated_hit_scores(mated_top_scores: Scores, mated_top_correct: npt.ArrayLike) -> F64:
    """Per mated search, the score at which it would be a hit: its top score when the top
    candidate is the true subject, else -inf (a miss at every threshold).

    A failure to acquire (no usable face) is given as a NaN score and is a miss as well.
    """
    s = np.asarray(mated_top_scores, np.float64).reshape(-1)
    ok = np.asarray(mated_top_correct, bool).reshape(-1)
    if s.shape != ok.shape:
        raise ValueError("mated scores and correctness flags differ in length")
    return np.where(ok & ~np.isnan(s), s, -np.inf)


@dataclass(frozen=True)
class OpenSetPoint:
    """FNIR at the threshold that gives (at most) the target FPIR on the non-mated searches."""

    target_fpir: float
    threshold: float
    fpir: float
    fnir: float


def fnir_at_fpir(mated_top_scores: Scores, mated_top_correct: npt.ArrayLike,
                 nonmated_top_scores: Scores, target_fpir: float) -> OpenSetPoint:
    """Open-set identification error at one FPIR (rank-1 decision, one threshold).

    A mated search misses when its top candidate is not the true subject or scores below
    the threshold; a non-mated search is a false positive when its top score reaches it.
    """
    hits = mated_hit_scores(mated_top_scores, mated_top_correct)
    if hits.size == 0:
        raise ValueError("no mated searches")
    nonmated = _scores(nonmated_top_scores, "non-mated")
    t = threshold_for_fpir(nonmated, target_fpir)
    return OpenSetPoint(target_fpir=target_fpir, threshold=t,
                        fpir=float(np.mean(nonmated >= t)), fnir=float(np.mean(hits < t)))


@dataclass(frozen=True)
class DetCurve:
    """Open-set trade-off: a point at each distinct score, thresholds descending from +inf."""

    thresholds: F64
    fpir: F64
    fnir: F64


def det_curve(mated_top_scores: Scores, mated_top_correct: npt.ArrayLike,
              nonmated_top_scores: Scores) -> DetCurve:
    """FNIR against FPIR at every distinct mated-hit and non-mated score (plus +inf).

    Mated scores are included so that, for each FPIR, the lowest threshold giving it (the
    one with the least FNIR, as `fnir_at_fpir` picks) is on the curve.
    """
    hits = np.sort(mated_hit_scores(mated_top_scores, mated_top_correct))
    nonmated = np.sort(_scores(nonmated_top_scores, "non-mated"))
    finite_hits = hits[np.isfinite(hits)]
    thresholds = np.concatenate([[np.inf], np.unique(np.r_[nonmated, finite_hits])[::-1]])
    fpir = _count_at_or_above(nonmated, thresholds) / nonmated.size
    fnir = 1.0 - _count_at_or_above(hits, thresholds) / max(1, hits.size)
    return DetCurve(thresholds=thresholds, fpir=fpir.astype(np.float64),
                    fnir=fnir.astype(np.float64))


def rank_one_rate(mated_top_correct: npt.ArrayLike) -> float:
    """Closed-set rank-1 identification rate over mated searches (no threshold)."""
    ok = np.asarray(mated_top_correct, bool).reshape(-1)
    if ok.size == 0:
        raise ValueError("no mated searches")
    return float(np.mean(ok))


# --------------------------------------------------------------------------------- detection

# Face-size buckets on max(width, height) in pixels: (name, lower inclusive, upper exclusive).
SIZE_BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("<16", 0.0, 16.0), ("16-32", 16.0, 32.0), ("32-64", 32.0, 64.0),
    ("64-128", 64.0, 128.0), (">=128", 128.0, math.inf),
)

# Status of a detection after matching.
TRUE_POSITIVE, FALSE_POSITIVE, IGNORED = 1, 0, -1


def size_bucket(size: float) -> str:
    """The SIZE_BUCKETS name for a face whose larger side is `size` pixels."""
    for name, low, high in SIZE_BUCKETS:
        if low <= size < high:
            return name
    raise ValueError(f"face size {size} outside every bucket")


def box_iou(a: npt.ArrayLike, b: npt.ArrayLike) -> F64:
    """Pairwise IoU of (n,4) and (m,4) x1,y1,x2,y2 boxes (continuous coordinates)."""
    p = np.asarray(a, np.float64).reshape(-1, 4)
    q = np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(p[:, None, 0], q[None, :, 0])
    y1 = np.maximum(p[:, None, 1], q[None, :, 1])
    x2 = np.minimum(p[:, None, 2], q[None, :, 2])
    y2 = np.minimum(p[:, None, 3], q[None, :, 3])
    iw = np.clip(x2 - x1, 0.0, None)
    ih = np.clip(y2 - y1, 0.0, None)
    inter = iw * ih
    area_p = np.clip(p[:, 2] - p[:, 0], 0, None) * np.clip(p[:, 3] - p[:, 1], 0, None)
    area_q = np.clip(q[:, 2] - q[:, 0], 0, None) * np.clip(q[:, 3] - q[:, 1], 0, None)
    union = area_p[:, None] + area_q[None, :] - inter
    out: F64 = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return out


def _max_side(boxes: F64) -> F64:
    return np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])


@dataclass(frozen=True)
class ImageMatch:
    """The outcome of matching one image's detections to its ground truth."""

    gt_valid: Bools  # (g,) ground truth that counts (not marked invalid)
    gt_matched: Bools  # (g,) matched by a detection; always False for invalid ground truth
    gt_size: F64  # (g,) max(w, h) in pixels
    det_status: npt.NDArray[np.int8]  # (d,) TRUE_POSITIVE, FALSE_POSITIVE or IGNORED
    det_size: F64  # (d,)


def match_detections(gt_boxes: npt.ArrayLike, gt_invalid: npt.ArrayLike,
                     det_boxes: npt.ArrayLike, det_scores: npt.ArrayLike,
                     iou_threshold: float = 0.5) -> ImageMatch:
    """Greedy matching, best-scoring detection first, at IoU >= `iou_threshold`.

    Each detection takes the unmatched valid ground-truth box it overlaps most; failing
    that, a detection on a box marked invalid is ignored (neither true nor false positive,
    as in COCO's crowd handling); otherwise it is a false positive, duplicates included.
    """
    gt = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    invalid = np.asarray(gt_invalid, bool).reshape(-1)
    dets = np.asarray(det_boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(det_scores, np.float64).reshape(-1)
    if invalid.shape[0] != gt.shape[0] or scores.shape[0] != dets.shape[0]:
        raise ValueError("box and flag/score counts differ")
    valid = ~invalid
    matched = np.zeros(len(gt), bool)
    status = np.full(len(dets), FALSE_POSITIVE, np.int8)
    iou = box_iou(dets, gt)
    for d in np.argsort(-scores, kind="stable"):
        free = np.where(valid & ~matched & (iou[d] >= iou_threshold), iou[d], -1.0)
        g = int(np.argmax(free)) if free.size else -1
        if g >= 0 and free[g] >= 0.0:
            matched[g] = True
            status[d] = TRUE_POSITIVE
        elif np.any(invalid & (iou[d] >= iou_threshold)):
            status[d] = IGNORED
    return ImageMatch(gt_valid=valid, gt_matched=matched, gt_size=_max_side(gt),
                      det_status=status, det_size=_max_side(dets))


def _rate(num: int, den: int) -> float | None:
    return num / den if den else None


def summarise_detections(matches: Sequence[ImageMatch]) -> dict[str, Any]:
    """Recall and precision overall and per size bucket.

    Recall per bucket uses the ground-truth box's size, precision per bucket the detection's
    own size (a false positive has no ground truth to size it by). Rates with an empty
    denominator are None.
    """

    def block(gt_valid: int, gt_hit: int, tp: int, fp: int) -> dict[str, Any]:
        return {"gt": gt_valid, "matched": gt_hit, "recall": _rate(gt_hit, gt_valid),
                "detections": tp + fp, "true_positives": tp, "false_positives": fp,
                "precision": _rate(tp, tp + fp)}

    if matches:
        gt_valid = np.concatenate([m.gt_valid for m in matches])
        gt_hit = np.concatenate([m.gt_matched for m in matches])
        gt_size = np.concatenate([m.gt_size for m in matches])
        status = np.concatenate([m.det_status for m in matches])
        det_size = np.concatenate([m.det_size for m in matches])
    else:
        gt_valid = gt_hit = np.zeros(0, bool)
        gt_size = det_size = np.zeros(0)
        status = np.zeros(0, np.int8)
    out: dict[str, Any] = {
        "overall": block(int(gt_valid.sum()), int(gt_hit.sum()),
                         int((status == TRUE_POSITIVE).sum()),
                         int((status == FALSE_POSITIVE).sum())),
        "ignored_detections": int((status == IGNORED).sum()),
        "by_size": {},
    }
    for name, low, high in SIZE_BUCKETS:
        g = (gt_size >= low) & (gt_size < high)
        d = (det_size >= low) & (det_size < high)
        out["by_size"][name] = block(int((gt_valid & g).sum()), int((gt_hit & g).sum()),
                                     int((d & (status == TRUE_POSITIVE)).sum()),
                                     int((d & (status == FALSE_POSITIVE)).sum()))
    return out

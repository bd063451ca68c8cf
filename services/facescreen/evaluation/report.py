"""Shaping results for JSON: thinned curves, rates by group, summaries over seeds.

Everything returned is JSON-serialisable with no NaN or infinity (an undefined rate is None).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from facescreen.core.calibration import clopper_pearson
from facescreen.core.types import FloatArray

CURVE_POINTS = 300  # at most this many points of a ROC/DET curve are kept in the result


def thin_curve(x: FloatArray | np.ndarray, y: FloatArray | np.ndarray,
               thresholds: np.ndarray, keep_x: Sequence[float] = ()) -> dict[str, list[float]]:
    """About CURVE_POINTS points with x > 0 and finite thresholds, spread evenly on log x,
    plus the corners at the reported operating points' x (`keep_x`).

    For each retained x the best (last, i.e. lowest-threshold) point with that x is kept, so
    a plotted staircase stays exact at its corners.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    keep = (x > 0) & np.isfinite(thresholds)
    last_of_x = np.r_[x[1:] != x[:-1], True]  # x is non-decreasing along the curve
    idx = np.nonzero(keep & last_of_x)[0]
    if idx.size > CURVE_POINTS:
        grid = np.geomspace(x[idx[0]], x[idx[-1]], CURVE_POINTS)
        pos = np.clip(np.searchsorted(x[idx], grid, side="right") - 1, 0, idx.size - 1)
        forced = [int(np.argmin(np.abs(x[idx] - k))) for k in keep_x]
        idx = idx[np.unique(np.r_[pos, forced].astype(np.int64))]
    return {"x": x[idx].tolist(), "y": y[idx].tolist(), "threshold": thresholds[idx].tolist()}


def by_gender(genders: dict[str, str], mated_owner: Sequence[str], mated_hits: np.ndarray,
              nonmated_owner: Sequence[str], nonmated_scores: np.ndarray,
              threshold: float) -> dict[str, Any]:
    """FNIR of enrolled people's decisions and FPIR of strangers' decisions per listed gender,
    at the one threshold the whole population gets (as a deployment runs); FPIR with its
    Clopper-Pearson 95% interval. `mated_hits` is -inf for a miss at every threshold."""
    mated: dict[str, list[bool]] = defaultdict(list)
    for sid, hit in zip(mated_owner, mated_hits, strict=True):
        mated[genders.get(sid, "unknown")].append(bool(hit < threshold))
    alerts: dict[str, list[bool]] = defaultdict(list)
    for sid, score in zip(nonmated_owner, nonmated_scores, strict=True):
        alerts[genders.get(sid, "unknown")].append(bool(score >= threshold))
    out: dict[str, Any] = {"threshold": threshold}
    for group in ("female", "male", "unknown"):
        m, a = mated.get(group, []), alerts.get(group, [])
        out[group] = {
            "mated_decisions": len(m), "fnir": float(np.mean(m)) if m else None,
            "nonmated_decisions": len(a), "false_alerts": int(sum(a)),
            "fpir": float(np.mean(a)) if a else None,
            "fpir_ci": list(clopper_pearson(int(sum(a)), len(a))) if a else None}
    return out


def _stat(values: Sequence[float | None]) -> dict[str, Any]:
    v = [x for x in values if x is not None]
    if not v:
        return {"mean": None, "std": None, "per_seed": list(values)}
    return {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
            "per_seed": list(values)}


def summarise_seeds(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation over seeds of the figures a table reports."""
    out: dict[str, Any] = {"seeds": [r["seed"] for r in runs]}
    for i, point in enumerate(runs[0]["fnir_at_fpir"]):
        key = f"fpir_{point['fpir_target']:g}"
        out[key] = {m: _stat([r["fnir_at_fpir"][i][m] for r in runs])
                    for m in ("fnir", "threshold", "fpir")}
    out["rank1"] = _stat([r["rank1"]["all_mated"] for r in runs])
    if "calibration" in runs[0]:
        target = runs[0]["calibration"]["fpir_target"]
        measured = [r["calibration"]["fpir_measured"] for r in runs]
        out["calibration"] = {
            "fpir_target": target, "rule": runs[0]["calibration"].get("rule", "point"),
            **{m: _stat([r["calibration"][m] for r in runs])
               for m in ("fnir", "threshold", "fpir_measured", "calibration_decisions",
                         "measured_decisions")},
            "within_x1_5": sum(target / 1.5 <= f <= target * 1.5 for f in measured),
            "at_most_x1_5": sum(f <= target * 1.5 for f in measured),  # overshoots are the harm
            "sufficient": all(r["calibration"]["sufficient"] for r in runs)}
    genders = [r["by_gender"] for r in runs if r.get("by_gender")]
    if genders:
        out["by_gender_pooled"] = {}
        for group in ("female", "male"):
            rows = [g[group] for g in genders]
            n_m = sum(r["mated_decisions"] for r in rows)
            misses = sum(round((r["fnir"] or 0.0) * r["mated_decisions"]) for r in rows)
            n_a = sum(r["nonmated_decisions"] for r in rows)
            alerts = sum(r["false_alerts"] for r in rows)
            out["by_gender_pooled"][group] = {
                "mated_decisions": n_m, "fnir": misses / n_m if n_m else None,
                "nonmated_decisions": n_a, "false_alerts": alerts,
                "fpir": alerts / n_a if n_a else None}
    return out

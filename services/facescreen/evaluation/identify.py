"""Open-set identification with the track decision rule, calibration and normalisation.

A decision is made as the matcher makes it: a probe's identity is `vote_template` of the
embeddings of K photos of one person (a pseudo-track; K=1 is a single photo), searched
against the subject templates; it alerts when its best score reaches the threshold.
`--calibrate-half` then does what an operator does: sets the threshold from strangers'
decisions (one half of the strangers, split by person) at the target FPIR, and the FPIR
is measured on the other half, which the threshold never saw.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.core import calibration as cal
from facescreen.core.matching import subject_template
from facescreen.core.normalisation import center, cohort_mean, cohort_stats, znorm
from facescreen.core.types import FloatArray
from facescreen.evaluation import datasets as ds
from facescreen.evaluation import metrics as mt
from facescreen.evaluation.photos import ImageFaces, PhotoCache, analyse_aligned, analyse_photos
from facescreen.evaluation.report import by_gender, thin_curve

NORMS = ("none", "znorm", "mean", "center")
Decision = tuple[str, FloatArray | None]  # (person, track identity or None: no usable face)


def _tracks(sid: str, photos: Sequence[Path], cache: dict[str, ImageFaces], k: int,
            limit: int, seed: int) -> list[Decision]:
    """Pseudo-tracks of k of one person's photos: seeded per (seed, k, person), bounded."""
    rng = np.random.default_rng([seed, k, zlib.crc32(sid.encode())])
    faces = [cache[str(p)] for p in photos]
    return [(sid, cal.pseudo_track([faces[i].probe for i in combo],
                                   [faces[i].probe_quality for i in combo]))
            for combo in cal.draw_combinations(len(photos), k, limit, rng)]


Scorer = Callable[[FloatArray], np.ndarray]  # (probes, d) -> (probes, templates) scores


def _scorer(gallery: FloatArray, norm: str, cohort: FloatArray | None) -> Scorer:
    """Exact scores of probes against every template, normalised as `norm` says."""
    if norm == "none" or cohort is None:
        return lambda probes: (probes @ gallery.T).astype(np.float64)
    if norm == "center":
        mean = cohort_mean(cohort)
        centred = center(gallery, mean)
        return lambda probes: (center(probes, mean) @ centred.T).astype(np.float64)
    stats = cohort_stats(gallery, cohort)
    if norm == "mean":
        return lambda probes: (probes @ gallery.T) - stats.mean
    return lambda probes: znorm(probes @ gallery.T, stats)


def _top1(decisions: Sequence[Decision], ids: Sequence[str],
          score: Scorer) -> tuple[list[str | None], np.ndarray]:
    """Best subject and score per decision (exact search); None and NaN without a face."""
    top: list[str | None] = [None] * len(decisions)
    scores = np.full(len(decisions), np.nan)
    got = [(i, v) for i, (_, v) in enumerate(decisions) if v is not None]
    if got:
        s = score(np.stack([v for _, v in got]))
        best = np.argmax(s, axis=1)
        for (i, _), j, row in zip(got, best, s, strict=True):
            top[i], scores[i] = ids[int(j)], float(row[j])
    return top, scores


def run_identify(analyzer: FaceAnalyzer, root: Path, *, enrol_n: int = 1, seed: int = 0,
                 limit: int | None = None, fpir_targets: Sequence[float] = (0.01, 0.05),
                 track_k: int = 1, max_tracks: int = 100, calibrate_half: bool = False,
                 target_fpir: float = 0.01, norm: str = "none", aligned: bool | None = None,
                 min_photos: int = 1, rule: str = cal.DEFAULT_RULE,
                 cache: dict[str, ImageFaces] | None = None,
                 photo_cache: PhotoCache | None = None, progress: bool = True) -> dict[str, Any]:
    """Open-set watchlist search over `ROOT/<subject>/<image>` photos.

    Protocol (the same gallery for every enrol_n, K and norm at one seed, so runs compare):
    - subjects sorted by id, shuffled with `seed`; the first half (rounded down) is enrolled,
      the rest are strangers. Subjects with fewer than `min_photos` photos are left out
      first; `limit` then keeps only the first `limit` subjects by id.
    - each photo is represented by its largest face that passes quality (screening policy
      for probes, enrolment policy for enrolment); a photo with none has no usable face.
      Aligned crops (LFW) are embedded directly, every one usable, all of weight 1.
    - an enrolled subject uses, in file-name order, the first `enrol_n` of its photos that
      have an enrolable face, choosing only among all but its last photo; one with none is
      a failure to enrol and is left out entirely. Template: `subject_template`.
    - decisions: pseudo-tracks of `track_k` photos of one person (all combinations, or
      `max_tracks` of them drawn with a per-person seed), identity = `vote_template` of the
      photos that have a usable face, quality-weighted. Mated: an enrolled subject's other
      photos (a track with no usable face is a miss); non-mated: a stranger's photos (a track
      with no usable face cannot alert and is left out of the FPIR denominator). A person
      with fewer than `track_k` such photos gives no decision (counted). K=1 is the single
      photo protocol.
    - `calibrate_half`: strangers shuffled by person with `seed` and split in two; the
      threshold for `target_fpir` is set on the first half's decisions and the FPIR measured
      on the second's (Clopper-Pearson 95% interval); FNIR over all mated decisions there.
      `rule` (`core.calibration.RULES`): "point" sets it where the calibration half's FPIR
      is at most the target, "upper" where its one-sided 95% bound from a bootstrap over
      that half's persons is.
    - `norm` other than "none" (needs `calibrate_half`): scores normalised against the
      calibration half's single photos as cohort (`core.normalisation`: znorm, mean, center);
      the held-apart half is then the only non-mated set measured, also for `fnir_at_fpir`.
    `cache` (path -> ImageFaces) lets several runs in one process analyse each photo once;
    `photo_cache` keeps it on disk between processes.
    """
    started = time.perf_counter()
    if enrol_n < 1 or track_k < 1 or max_tracks < 1:
        raise ValueError("enrol_n, track_k and max_tracks must be at least 1")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if rule not in cal.RULES:
        raise ValueError(f"rule must be one of {cal.RULES}, got {rule!r}")
    if norm != "none" and not calibrate_half:
        raise ValueError("score normalisation needs --calibrate-half (its cohort is the "
                         "calibration half of the strangers)")
    subjects = ds.read_subject_folders(root)
    ids = sorted(sid for sid in subjects if len(subjects[sid]) >= min_photos)
    ids = ids[:limit] if limit is not None else ids
    if len(ids) < 2:
        raise ds.DatasetError(f"{root}: need at least two subjects, have {len(ids)}")
    order = np.random.default_rng(seed).permutation(len(ids))
    half = len(ids) // 2
    enrolled_ids = sorted(ids[i] for i in order[:half])
    stranger_ids = sorted(ids[i] for i in order[half:])
    all_paths = [p for sid in ids for p in subjects[sid]]
    aligned = ds.is_aligned_crops(root) if aligned is None else aligned
    cache = {} if cache is None else cache
    if photo_cache is not None:
        photo_cache.fill(all_paths, cache)
    analyse = analyse_aligned if aligned else analyse_photos
    analyse(analyzer, all_paths, cache, progress=progress)
    if photo_cache is not None:
        photo_cache.save(cache)

    gallery_ids: list[str] = []
    templates: list[FloatArray] = []
    mated: list[Decision] = []
    fewer: list[str] = []
    failed_to_enrol: list[str] = []
    mated_short = 0
    for sid in enrolled_ids:
        photos = subjects[sid]
        chosen = [p for p in photos[:-1] if cache[str(p)].enrol is not None][:enrol_n]
        if not chosen:
            failed_to_enrol.append(sid)
            continue
        if len(chosen) < enrol_n:
            fewer.append(sid)
        gallery_ids.append(sid)
        templates.append(subject_template(np.stack(
            [v for p in chosen if (v := cache[str(p)].enrol) is not None])))
        rest = [p for p in photos if p not in chosen]
        tracks = _tracks(sid, rest, cache, track_k, max_tracks, seed)
        mated_short += not tracks
        mated.extend(tracks)
    if not gallery_ids:
        raise ds.DatasetError(f"{root}: no enrolled subject has an enrolable photo")
    gallery = np.stack(templates)

    if calibrate_half:
        shuffled = [stranger_ids[i] for i in
                    np.random.default_rng([seed, 2]).permutation(len(stranger_ids))]
        calib_ids = sorted(shuffled[:len(shuffled) // 2])
        measured_ids = sorted(shuffled[len(shuffled) // 2:])
    else:
        calib_ids, measured_ids = [], stranger_ids
    cohort = None
    if norm != "none":
        faces = [v for sid in calib_ids for p in subjects[sid]
                 if (v := cache[str(p)].probe) is not None]
        if len(faces) < 2:
            raise ds.DatasetError(f"{root}: too few cohort faces for score normalisation")
        cohort = np.stack(faces)
    score = _scorer(gallery, norm, cohort)

    nonmated: dict[str, list[Decision]] = {
        sid: _tracks(sid, subjects[sid], cache, track_k, max_tracks, seed)
        for sid in stranger_ids}
    mated_top, mated_scores = _top1(mated, gallery_ids, score)
    mated_correct = np.array([t == sid for t, (sid, _) in zip(mated_top, mated, strict=True)])

    def scores_of(people: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        decisions = [d for sid in people for d in nonmated[sid]]
        _, s = _top1(decisions, gallery_ids, score)
        keep = ~np.isnan(s)
        return s[keep], [sid for (sid, _), k in zip(decisions, keep, strict=True) if k]

    measured, measured_owner = scores_of(measured_ids if norm != "none" else stranger_ids)
    all_nonmated = sum(len(nonmated[sid]) for sid in stranger_ids)
    if mated_scores.size == 0 or measured.size == 0:
        raise ds.DatasetError(f"{root}: no mated or no usable non-mated decisions")
    acquired = ~np.isnan(mated_scores)
    hits = mt.mated_hit_scores(mated_scores, mated_correct)
    points = [mt.fnir_at_fpir(mated_scores, mated_correct, measured, f) for f in fpir_targets]
    det = mt.det_curve(mated_scores, mated_correct, measured)
    curve = thin_curve(det.fpir, det.fnir, det.thresholds, [p.fpir for p in points])
    result: dict[str, Any] = {
        "task": "identify",
        "dataset": str(root),
        "embedder": analyzer.config.embedder.name,
        "enrol_n": enrol_n,
        "seed": seed,
        "track": {"k": track_k, "max_per_person": max_tracks,
                  "identity": "vote_template of the K photos' embeddings, quality-weighted",
                  "enrolled_without_mated_track": mated_short,
                  "strangers_without_track": sum(not nonmated[sid] for sid in stranger_ids)},
        "norm": norm,
        "score_units": "cosine" if norm == "none" else "z (cohort-normalised)",
        "subjects": {"total": len(ids), "min_photos": min_photos, "enrolled": len(gallery_ids),
                     "strangers": len(stranger_ids), "enrolled_with_fewer": len(fewer),
                     "failed_to_enrol": failed_to_enrol},
        "photos": {"total": len(all_paths),
                   "mode": "aligned crops (no detection, no quality gate)" if aligned
                   else "full pipeline",
                   "unreadable": sum(not cache[str(p)].readable for p in all_paths),
                   "several_faces": sum(cache[str(p)].detected > 1 for p in all_paths),
                   "probe_face_not_largest": sum(cache[str(p)].probe_not_largest
                                                 for p in all_paths)},
        "searches": {"mated": len(mated), "mated_failed_to_acquire": int((~acquired).sum()),
                     "nonmated": all_nonmated,
                     "nonmated_failed_to_acquire": sum(v is None for sid in stranger_ids
                                                       for _, v in nonmated[sid]),
                     "nonmated_measured": int(measured.size),
                     "nonmated_measured_on": "held-apart half of the strangers"
                     if norm != "none" else "all strangers"},
        "fnir_at_fpir": [{"fpir_target": p.target_fpir, "threshold": p.threshold,
                          "fpir": p.fpir, "fnir": p.fnir} for p in points],
        "rank1": {"all_mated": mt.rank_one_rate(mated_correct),
                  "acquired": (float(mated_correct[acquired].mean())
                               if acquired.any() else None)},
        "nonmated_top_score": {"median": float(np.median(measured)),
                               "max": float(measured.max())},
    }
    threshold = points[0].threshold if points else None
    if calibrate_half:
        calib, calib_owner = scores_of(calib_ids)
        held, held_owner = scores_of(measured_ids)
        if calib.size == 0 or held.size == 0:
            raise ds.DatasetError(f"{root}: a half of the strangers has no usable decision")
        c = cal.calibrate(calib, target_fpir, require_enough=False, rule=rule,
                          persons=calib_owner)
        alerts = int((held >= c.threshold).sum())
        threshold = c.threshold
        per_person = {sid: [0, 0] for sid in measured_ids}
        for sid, score in zip(held_owner, held, strict=True):
            per_person[sid][0] += int(score >= c.threshold)
            per_person[sid][1] += 1
        counted = [v for v in per_person.values() if v[1]]
        result["calibration"] = {
            "fpir_target": target_fpir, "rule": c.rule, "threshold": c.threshold,
            "fpir_measured": alerts / held.size,
            "fpir_ci": list(cal.clopper_pearson(alerts, int(held.size))),
            "fpir_ci_persons": list(cal.person_interval(
                [a for a, _ in counted], [n for _, n in counted],
                np.random.default_rng([seed, 3]))),
            "false_alerts_by_person": sorted((a for a, _ in counted), reverse=True)[:5],
            "fnir": float(np.mean(hits < c.threshold)),
            "calibration_decisions": c.decisions, "calibration_persons": len(calib_ids),
            "min_decisions": cal.min_decisions(target_fpir), "sufficient": c.sufficient,
            "fpir_on_calibration_half": c.fpir,
            "fpir_upper_on_calibration_half": c.fpir_upper,
            "upper_bootstrap": {"resampled": "impostor persons", "reps": cal.UPPER_REPS,
                                "confidence": cal.UPPER_CONFIDENCE, "seed": cal.UPPER_SEED},
            "measured_decisions": int(held.size), "measured_persons": len(measured_ids),
            "measured_alerts": alerts}
        measured, measured_owner = held, held_owner
    genders = ds.read_subject_genders(root, {sid: subjects[sid] for sid in ids})
    result["by_gender"] = None if not genders or threshold is None else by_gender(
        genders, [sid for sid, _ in mated], hits, measured_owner, measured, threshold)
    if not genders:
        result["gender_labels"] = "none found in ROOT/labels (no FNIR/FPIR by gender)"
    result["curve"] = {"fpir": curve["x"], "fnir": curve["y"], "threshold": curve["threshold"]}
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result

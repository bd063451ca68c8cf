"""Run the analyzer over an evaluation set and report error rates as a plain dict.

Each `run_*` returns JSON-serialisable data (no NaN or infinity: an undefined rate is None),
so the CLI can print it and a benchmark job can archive it unchanged. The figures describe
the pipeline exactly as configured (detector input size, thresholds, quality policies):
nothing here is tuned to the data it measures.
"""

from __future__ import annotations

import functools
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np
from tqdm import tqdm

from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.core.alignment import align_face
from facescreen.core.matching import GalleryIndex, subject_template
from facescreen.core.quality import assess
from facescreen.core.specs import ARCFACE_112_TEMPLATE
from facescreen.core.types import FloatArray, ImageBGR
from facescreen.evaluation import datasets as ds
from facescreen.evaluation import metrics as mt

T = TypeVar("T")
ARCFACE_CROP_SIDE = 112  # the side ARCFACE_112_TEMPLATE is expressed for
CURVE_POINTS = 300  # at most this many points of a ROC/DET curve are kept in the result


def _progress(items: Iterable[T], total: int, desc: str, enabled: bool,
              unit: str = "img") -> Iterable[T]:
    """A tqdm bar on stderr (tqdm's default stream), or the bare iterable."""
    bar: Iterable[T] = tqdm(items, total=total, desc=desc, unit=unit, disable=not enabled,
                            leave=False)
    return bar


@functools.cache
def _project_loader() -> tuple[Callable[[Path], ImageBGR], type[Exception]] | None:
    """The project's image loader when `facescreen.ingest.images` exists, else None."""
    try:
        from facescreen.ingest.images import ImageError, load_image
    except ImportError:
        return None
    return load_image, ImageError


def read_image(path: Path) -> ImageBGR | None:
    """BGR pixels of an image file, or None when it cannot be decoded."""
    loader = _project_loader()
    if loader is not None:
        load, error = loader
        try:
            return load(path)
        except error:
            return None
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if image is None else np.asarray(image, np.uint8)


def _thin_curve(x: FloatArray | np.ndarray, y: FloatArray | np.ndarray,
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


# ---------------------------------------------------------------------------- verification


def lfw_rewarp(image: ImageBGR, template: FloatArray, size: int) -> ImageBGR:
    """Move an ArcFace-aligned crop onto the embedder's template without detecting again.

    The crop's eyes, nose and mouth sit on ARCFACE_112_TEMPLATE (scaled if the crop is not
    112 px), so those five points act as the landmarks of the embedder's own alignment.
    """
    points = np.asarray(ARCFACE_112_TEMPLATE, np.float32) * (image.shape[1] / ARCFACE_CROP_SIDE)
    return align_face(image, points, template, size)


def run_verify(analyzer: FaceAnalyzer, root: Path, *, limit: int | None = None,
               far_targets: Sequence[float] = (1e-3, 1e-2), batch_size: int = 64,
               progress: bool = True) -> dict[str, Any]:
    """1:1 verification on LFW-style aligned crops: 10-fold accuracy, TAR@FAR, EER, by gender.

    `limit` caps the number of pairs, taken evenly from every fold and class (at least one
    of each), so a subset still follows the fold protocol.
    """
    started = time.perf_counter()
    pairs = ds.read_lfw_pairs(root)
    if limit is not None:
        folds = max(p.fold for p in pairs) + 1
        per_block = max(1, limit // (2 * folds))
        taken: dict[tuple[int, bool], int] = defaultdict(int)
        subset = []
        for p in pairs:
            if taken[p.fold, p.same] < per_block:
                taken[p.fold, p.same] += 1
                subset.append(p)
        pairs = subset
    paths = sorted({path for p in pairs for path in (p.first, p.second)})
    spec = analyzer.config.embedder
    template = np.asarray(spec.template, np.float32)
    vectors: dict[Path, FloatArray] = {}
    for start in _progress(range(0, len(paths), batch_size), -(-len(paths) // batch_size),
                           "verify: embed", progress, unit="batch"):
        chunk = paths[start:start + batch_size]
        chips = []
        for path in chunk:
            image = read_image(path)
            if image is None:
                raise ds.DatasetError(f"{path}: cannot decode the image")
            chips.append(lfw_rewarp(image, template, spec.size))
        for path, vector in zip(chunk, analyzer.embed_chips(chips), strict=True):
            vectors[path] = vector
    scores = np.array([float(vectors[p.first] @ vectors[p.second]) for p in pairs])
    same = np.array([p.same for p in pairs])
    fold = np.array([p.fold for p in pairs])
    genuine, impostor = scores[same], scores[~same]

    kfold = mt.kfold_accuracy(scores, same, fold)
    points = [mt.tar_at_far(genuine, impostor, far) for far in far_targets]
    eer, eer_threshold = mt.equal_error_rate(genuine, impostor)
    roc = mt.roc_curve(genuine, impostor)
    result: dict[str, Any] = {
        "task": "verify",
        "dataset": str(root),
        "embedder": spec.name,
        "metric": "cosine",
        "images": len(paths),
        "pairs": {"genuine": int(same.sum()), "impostor": int((~same).sum()),
                  "folds": int(np.unique(fold).size)},
        "accuracy": {"mean": kfold.mean, "std": kfold.std, "per_fold": list(kfold.per_fold),
                     "mean_threshold": float(np.mean(kfold.thresholds))},
        "tar_at_far": [{"far_target": far, "threshold": op.threshold, "tar": op.tar,
                        "far": op.far} for far, op in zip(far_targets, points, strict=True)],
        "eer": {"rate": eer, "threshold": eer_threshold},
        "genuine_score": {"mean": float(genuine.mean()), "min": float(genuine.min())},
        "impostor_score": {"mean": float(impostor.mean()), "max": float(impostor.max())},
    }
    genders = ds.read_lfw_genders(root)
    if genders and points:
        result["by_gender"] = _false_matches_by_gender(
            [p for p in pairs if not p.same], impostor, genders, points[0].threshold,
            far_targets[0])
    curve = _thin_curve(roc.far, roc.tar, roc.thresholds, [op.far for op in points])
    result["curve"] = {"far": curve["x"], "tar": curve["y"], "threshold": curve["threshold"]}
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def _false_matches_by_gender(impostor_pairs: Sequence[ds.VerificationPair],
                             scores: np.ndarray, genders: dict[str, str], threshold: float,
                             far_target: float) -> dict[str, Any]:
    """False-match rate of impostor pairs grouped by the two people's listed genders, at the
    one threshold set for the whole population (which is how a deployment runs)."""
    groups: dict[str, list[float]] = defaultdict(list)
    for pair, score in zip(impostor_pairs, scores, strict=True):
        g = {genders.get(pair.first.name), genders.get(pair.second.name)}
        key = ("unknown" if None in g else "mixed" if len(g) == 2
               else f"{next(iter(g))}_{next(iter(g))}")
        groups[key].append(float(score))
    out: dict[str, Any] = {"threshold": threshold, "far_target": far_target}
    for key in ("female_female", "male_male", "mixed", "unknown"):
        s = np.asarray(groups.get(key, []))
        fm = int((s >= threshold).sum())
        out[key] = {"impostor_pairs": int(s.size), "false_matches": fm,
                    "fmr": fm / s.size if s.size else None}
    return out


# ------------------------------------------------------------------------- identification


@dataclass(frozen=True)
class ImageFaces:
    """What one photo yields for identification, computed once per image and cached.

    `probe` is the embedding of the largest face passing the screening policy and `enrol`
    that of the largest face passing the (stricter) enrolment policy; None when no face
    passes. `readable` is False for an undecodable file.
    """

    readable: bool
    detected: int
    probe: FloatArray | None
    enrol: FloatArray | None
    probe_not_largest: bool  # a smaller face was used because the largest failed quality


def analyse_photos(analyzer: FaceAnalyzer, paths: Sequence[Path],
                   cache: dict[str, ImageFaces] | None = None, *, batch_size: int = 64,
                   progress: bool = True) -> dict[str, ImageFaces]:
    """detect -> align -> quality -> embed for each photo not yet in `cache` (keyed by path).

    Uses the analyzer's own stages, with both quality policies assessed on the same chip, so
    one pass serves enrolment and probing. Chips are embedded in batches across photos. A
    cache belongs to one analyzer configuration.
    """
    cache = {} if cache is None else cache
    todo = [p for p in dict.fromkeys(paths) if str(p) not in cache]
    cfg = analyzer.config
    pending: list[tuple[str, int, bool, ImageBGR | None, ImageBGR | None]] = []

    def distinct(pc: ImageBGR | None, ec: ImageBGR | None) -> list[ImageBGR]:
        return [c for c in (pc, ec if ec is not pc else None) if c is not None]

    def flush() -> None:
        if not pending:
            return
        chips = [c for *_, pc, ec in pending for c in distinct(pc, ec)]
        vectors = iter(analyzer.embed_chips(chips))
        for key, n, not_largest, pc, ec in pending:
            pv = next(vectors) if pc is not None else None
            ev = (pv if ec is pc else next(vectors)) if ec is not None else None
            cache[key] = ImageFaces(True, n, pv, ev, not_largest)
        pending.clear()

    for path in _progress(todo, len(todo), "identify: analyse photos", progress):
        image = read_image(path)
        if image is None:
            cache[str(path)] = ImageFaces(False, 0, None, None, False)
            continue
        detections = sorted(analyzer.detect(image), key=lambda d: -(d.width * d.height))
        probe_chip: ImageBGR | None = None
        enrol_chip: ImageBGR | None = None
        not_largest = False
        for rank, detection in enumerate(detections):
            with analyzer.clock.stage("align+quality"):
                chip = analyzer.align(image, detection)
                if probe_chip is None and assess(detection, chip, cfg.screening).passed:
                    probe_chip, not_largest = chip, rank > 0
                if enrol_chip is None and assess(detection, chip, cfg.enrolment).passed:
                    enrol_chip = chip
            if probe_chip is not None and enrol_chip is not None:
                break
        pending.append((str(path), len(detections), not_largest, probe_chip, enrol_chip))
        if sum(len(distinct(pc, ec)) for *_, pc, ec in pending) >= batch_size:
            flush()
    flush()
    return cache


def run_identify(analyzer: FaceAnalyzer, root: Path, *, enrol_n: int = 1, seed: int = 0,
                 limit: int | None = None, fpir_targets: Sequence[float] = (0.01, 0.05),
                 cache: dict[str, ImageFaces] | None = None,
                 progress: bool = True) -> dict[str, Any]:
    """Open-set watchlist search over `ROOT/<subject>/<image>` photos, full pipeline.

    Protocol (the same gallery for every enrol_n at one seed, so runs compare):
    - subjects sorted by id, shuffled with `seed`; the first half (rounded down) is enrolled,
      the rest are strangers. `limit` keeps only the first `limit` subjects by id.
    - each photo is represented by its largest face that passes quality (screening policy
      for probes, enrolment policy for enrolment); a photo with none is a failure to acquire.
    - an enrolled subject uses, in file-name order, the first `enrol_n` of its photos that
      have an enrolable face, choosing only among all but its last photo so that at least
      one mated probe remains; a subject with fewer usable photos enrols with those (counted
      in `enrolled_with_fewer`); one with none is a failure to enrol and is left out
      entirely (listed). Template: `subject_template` of its embeddings.
    - mated searches: every other photo of an enrolled subject (failures to acquire count
      as misses); non-mated searches: every photo of every stranger. Non-mated failures to
      acquire cannot alert and are left out of the FPIR denominator (the conservative
      choice: counting them would lower the measured FPIR).
    `cache` (path -> ImageFaces) lets several runs in one process analyse each photo once.
    """
    started = time.perf_counter()
    if enrol_n < 1:
        raise ValueError("enrol_n must be at least 1")
    subjects = ds.read_subject_folders(root)
    ids = sorted(subjects)[:limit] if limit is not None else sorted(subjects)
    if len(ids) < 2:
        raise ds.DatasetError(f"{root}: need at least two subjects, have {len(ids)}")
    order = np.random.default_rng(seed).permutation(len(ids))
    half = len(ids) // 2
    enrolled_ids = sorted(ids[i] for i in order[:half])
    stranger_ids = sorted(ids[i] for i in order[half:])
    all_paths = [p for sid in ids for p in subjects[sid]]
    cache = analyse_photos(analyzer, all_paths, cache, progress=progress)

    gallery_ids: list[str] = []
    templates: list[FloatArray] = []
    mated: list[tuple[str, Path]] = []
    fewer: list[str] = []
    failed_to_enrol: list[str] = []
    for sid in enrolled_ids:
        photos = subjects[sid]
        chosen = [p for p in photos[:-1] if cache[str(p)].enrol is not None][:enrol_n]
        if not chosen:
            failed_to_enrol.append(sid)
            continue
        if len(chosen) < enrol_n:
            fewer.append(sid)
        vectors = np.stack([v for p in chosen if (v := cache[str(p)].enrol) is not None])
        gallery_ids.append(sid)
        templates.append(subject_template(vectors))
        mated.extend((sid, p) for p in photos if p not in chosen)
    if not gallery_ids:
        raise ds.DatasetError(f"{root}: no enrolled subject has an enrolable photo")
    index = GalleryIndex(tuple(gallery_ids), ("eval",) * len(gallery_ids), np.stack(templates))

    def top1(paths: Sequence[Path]) -> tuple[list[str | None], np.ndarray]:
        """Top candidate and score per photo; None and NaN for a failure to acquire."""
        ids_out: list[str | None] = [None] * len(paths)
        scores = np.full(len(paths), np.nan)
        got = [(i, v) for i, p in enumerate(paths) if (v := cache[str(p)].probe) is not None]
        if got:
            results = index.search(np.stack([v for _, v in got]), k=1)
            for (i, _), cands in zip(got, results, strict=True):
                ids_out[i], scores[i] = cands[0].subject_id, cands[0].score
        return ids_out, scores

    mated_top, mated_scores = top1([p for _, p in mated])
    mated_correct = np.array([t == sid for t, (sid, _) in zip(mated_top, mated, strict=True)])
    nonmated_paths = [p for sid in stranger_ids for p in subjects[sid]]
    _, nonmated_all = top1(nonmated_paths)
    nonmated = nonmated_all[~np.isnan(nonmated_all)]
    if mated_scores.size == 0 or nonmated.size == 0:
        raise ds.DatasetError(f"{root}: no mated or no usable non-mated searches")
    acquired = ~np.isnan(mated_scores)
    points = [mt.fnir_at_fpir(mated_scores, mated_correct, nonmated, f) for f in fpir_targets]
    det = mt.det_curve(mated_scores, mated_correct, nonmated)
    curve = _thin_curve(det.fpir, det.fnir, det.thresholds, [p.fpir for p in points])
    several = sum(cache[str(p)].detected > 1 for p in all_paths)
    result: dict[str, Any] = {
        "task": "identify",
        "dataset": str(root),
        "embedder": analyzer.config.embedder.name,
        "enrol_n": enrol_n,
        "seed": seed,
        "subjects": {"total": len(ids), "enrolled": len(gallery_ids),
                     "strangers": len(stranger_ids), "enrolled_with_fewer": len(fewer),
                     "failed_to_enrol": failed_to_enrol},
        "photos": {"total": len(all_paths),
                   "unreadable": sum(not cache[str(p)].readable for p in all_paths),
                   "several_faces": several,
                   "probe_face_not_largest": sum(cache[str(p)].probe_not_largest
                                                 for p in all_paths)},
        "searches": {"mated": len(mated), "mated_failed_to_acquire": int((~acquired).sum()),
                     "nonmated": len(nonmated_paths),
                     "nonmated_failed_to_acquire": int(len(nonmated_paths) - nonmated.size)},
        "fnir_at_fpir": [{"fpir_target": p.target_fpir, "threshold": p.threshold,
                          "fpir": p.fpir, "fnir": p.fnir} for p in points],
        "rank1": {"all_mated": mt.rank_one_rate(mated_correct),
                  "acquired": (float(mated_correct[acquired].mean())
                               if acquired.any() else None)},
        "nonmated_top_score": {"median": float(np.median(nonmated)),
                               "max": float(nonmated.max())},
        "curve": {"fpir": curve["x"], "fnir": curve["y"], "threshold": curve["threshold"]},
        "seconds": round(time.perf_counter() - started, 2),
    }
    return result


# ------------------------------------------------------------------------------- detection


def run_detect(analyzer: FaceAnalyzer, root: Path, *, gt_file: Path | None = None,
               limit: int | None = None, iou_threshold: float = 0.5,
               progress: bool = True) -> dict[str, Any]:
    """Detector recall/precision on WIDER-format ground truth: overall, by face size, by event
    class and, where `demographics/` labels faces, recall by perceived gender, age and skin.

    Detections are the analyzer's own (its input size and score threshold, reported in the
    result), before any quality filter. GT marked invalid is ignored, as are detections on it.
    `limit` takes that many images evenly spaced through the ground-truth list.
    """
    started = time.perf_counter()
    gt_path = gt_file or ds.find_wider_gt(root)
    entries = ds.read_wider_gt(gt_path)
    images_dir = root / "images"
    if not images_dir.is_dir():
        raise ds.DatasetError(f"{root}: no images/ folder beside the ground truth")
    present = [e for e in entries if (images_dir / e.file).is_file()]
    missing = len(entries) - len(present)
    if not present:
        raise ds.DatasetError(f"{images_dir}: none of the {len(entries)} images in "
                              f"{gt_path.name} is present")
    if limit is not None and limit < len(present):
        step = len(present) / limit  # evenly spaced, so a subset still spans every event
        present = [present[int(i * step)] for i in range(limit)]
    demographics = ds.read_wider_demographics(root)

    matches: list[mt.ImageMatch] = []
    by_event: dict[str, list[mt.ImageMatch]] = defaultdict(list)
    attr_hits: dict[str, dict[str, list[tuple[bool, float]]]] = defaultdict(
        lambda: defaultdict(list))
    demo_faces = demo_box_mismatch = unreadable = 0
    detect_seconds = 0.0
    for entry in _progress(present, len(present), "detect: images", progress):
        image = read_image(images_dir / entry.file)
        if image is None:
            unreadable += 1
            continue
        t0 = time.perf_counter()
        detections = analyzer.detect(image)
        detect_seconds += time.perf_counter() - t0
        boxes = np.array([d.box for d in detections], np.float64).reshape(-1, 4)
        scores = np.array([d.score for d in detections], np.float64)
        m = mt.match_detections(entry.boxes, entry.invalid, boxes, scores, iou_threshold)
        matches.append(m)
        by_event[entry.event].append(m)
        for k in range(len(entry.boxes)):
            labels = demographics.get((entry.file, k))
            if labels is None or not m.gt_valid[k]:
                continue
            demo_faces += 1
            if labels.box is not None and not np.allclose(labels.box, entry.boxes[k]):
                demo_box_mismatch += 1
            for attribute, value in labels.attributes.items():
                attr_hits[attribute][value].append((bool(m.gt_matched[k]), float(m.gt_size[k])))

    spec = analyzer.config.detector
    result: dict[str, Any] = {
        "task": "detect",
        "dataset": str(root),
        "ground_truth": str(gt_path),
        "detector": {"model": spec.model, "max_side": spec.max_side,
                     "score_threshold": spec.score_threshold, "nms_iou": spec.nms_iou},
        "iou_threshold": iou_threshold,
        "images": {"evaluated": len(matches), "missing": missing, "unreadable": unreadable},
        "ignored_gt": int(sum(int((~m.gt_valid).sum()) for m in matches)),
        **mt.summarise_detections(matches),
        "by_event": {ev: {"images": len(ms), **mt.summarise_detections(ms)["overall"]}
                     for ev, ms in sorted(by_event.items())},
    }
    if demographics:
        result["by_attribute"] = {
            attribute: {value: {"faces": len(v), "recall": float(np.mean([h for h, _ in v])),
                                "median_size_px": float(np.median([s for _, s in v]))}
                        for value, v in sorted(values.items())}
            for attribute, values in sorted(attr_hits.items())}
        result["demographics"] = {"labelled_valid_faces": demo_faces,
                                  "box_mismatches": demo_box_mismatch}
    result["mean_detect_ms"] = 1000.0 * detect_seconds / max(1, len(matches))
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result

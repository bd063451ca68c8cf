"""Run the analyzer over an evaluation set and report error rates as a plain dict.

Each `run_*` returns JSON-serialisable data (no NaN or infinity: an undefined rate is None),
so the CLI can print it and a benchmark job can archive it unchanged. The figures describe
the pipeline exactly as configured (detector input size, thresholds, quality policies):
nothing here is tuned to the data it measures.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.core.types import FloatArray
from facescreen.evaluation import datasets as ds
from facescreen.evaluation import metrics as mt
from facescreen.evaluation.identify import NORMS, run_identify
from facescreen.evaluation.photos import (
    ImageFaces,
    analyse_photos,
    lfw_rewarp,
    progress_bar,
    read_image,
)
from facescreen.evaluation.report import thin_curve

__all__ = ["NORMS", "ImageFaces", "analyse_photos", "lfw_rewarp", "read_image", "run_detect",
           "run_identify", "run_verify"]


# ---------------------------------------------------------------------------- verification


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
    for start in progress_bar(range(0, len(paths), batch_size), -(-len(paths) // batch_size),
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
    curve = thin_curve(roc.far, roc.tar, roc.thresholds, [op.far for op in points])
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
    for entry in progress_bar(present, len(present), "detect: images", progress):
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

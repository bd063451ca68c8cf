"""`watchlist calibrate`: a list's threshold from impostor decisions of the kind that alerts.

The impostor folder holds people who are not on the list:
- `DIR/<person>/<image>`: each person folder gives pseudo-tracks of K of its photos (each
  photo represented by its largest face passing the screening quality bar), identity =
  `vote_template` of those faces, quality-weighted, as the matcher decides a live track;
  at most `max_tracks` combinations per person, drawn with a fixed seed per person, so a
  calibration is repeatable;
- images directly in `DIR` (the original flat layout) give one single-face decision per
  face passing quality, whatever K.
Every decision is searched against the real list (the store's own search, so the gallery
size and the templates are those the matcher uses), and the threshold is set for the
target FPIR on those best scores, refused with fewer than 10/FPIR decisions, by one of
`core.calibration.RULES`: "point" (the impostors' observed FPIR at most the target) or
"upper" (its one-sided 95% bound, resampling impostor persons, at most the target: the
threshold then allows for which people happened to be in the impostor folder).
"""

from __future__ import annotations

import time
import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.core import calibration as cal
from facescreen.core.screening import SearchFn
from facescreen.core.types import FloatArray
from facescreen.ingest.images import ImageError, load_image

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
LOOSE = ""  # the "person" of images directly in the impostor folder


@dataclass(frozen=True)
class ImpostorSet:
    """Impostor decisions: track identities and the person (folder) each came from."""

    vectors: list[FloatArray]
    owners: list[str]  # person folder, or the image path for a loose image's faces
    images: int  # images read
    faces: int  # faces that passed quality (one per image in person folders)
    persons: int  # person folders that gave at least one decision
    short_persons: int  # person folders with fewer than K photos: no decision
    loose_faces: int  # single-face decisions from images directly in the folder


def impostor_images(folder: Path) -> dict[str, list[Path]]:
    """Images by person: the first folder level under `folder`; LOOSE for images in it."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(p for p in folder.rglob("*")
                       if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
        rel = path.relative_to(folder)
        groups[rel.parts[0] if len(rel.parts) > 1 else LOOSE].append(path)
    return dict(groups)


def collect_impostors(analyzer: FaceAnalyzer, folder: Path, track_k: int,
                      max_tracks: int = 100) -> ImpostorSet:
    """Analyse the impostor folder and build its decisions (see the module docstring)."""
    vectors: list[FloatArray] = []
    owners: list[str] = []
    images = faces_used = persons = short = loose = 0
    for person, paths in impostor_images(folder).items():
        photos: list[tuple[FloatArray | None, float]] = []
        for path in paths:
            try:
                (faces,) = analyzer.analyze([load_image(path)])
            except ImageError:
                continue
            images += 1
            usable = [f for f in faces if f.embedding is not None]
            if person == LOOSE:
                vectors.extend(f.embedding for f in usable if f.embedding is not None)
                owners.extend(str(path) for _ in usable)
                faces_used += len(usable)
                loose += len(usable)
                continue
            best = max(usable, key=lambda f: f.detection.width * f.detection.height,
                       default=None)
            photos.append((None, 0.0) if best is None else (best.embedding, best.quality.score))
            faces_used += best is not None
        if person == LOOSE:
            continue
        rng = np.random.default_rng([track_k, zlib.crc32(person.encode())])
        combos = cal.draw_combinations(len(photos), track_k, max_tracks, rng)
        tracks = [cal.pseudo_track([photos[i][0] for i in c], [photos[i][1] for i in c])
                  for c in combos]
        kept = [t for t in tracks if t is not None]  # no usable face: cannot alert
        short += not combos
        persons += bool(kept)
        vectors.extend(kept)
        owners.extend(person for _ in kept)
    return ImpostorSet(vectors, owners, images, faces_used, persons, short, loose)


def calibrate_list(search: SearchFn, impostors: ImpostorSet, target_fpir: float, *,
                   track_k: int, gallery_size: int, max_growth: float,
                   embedder: str, rule: str = cal.DEFAULT_RULE) -> dict[str, Any]:
    """The calibration record: threshold, what it promises, and the gallery it holds for.

    Raises `InsufficientImpostorsError` below 10/FPIR decisions.
    """
    needed = cal.min_decisions(target_fpir)
    if len(impostors.vectors) < needed:  # refuse before searching
        n, loose = len(impostors.vectors), impostors.loose_faces
        raise cal.InsufficientImpostorsError(
            f"{n} impostor decisions ({n - loose} tracks of {track_k} from "
            f"{impostors.persons} person folders, {loose} single faces of loose images) "
            f"cannot support FPIR {target_fpir:g}: need at least {needed} (10/FPIR)")
    top = [r[0].score if r else -1.0 for r in search(np.stack(impostors.vectors), 1)]
    c = cal.calibrate(top, target_fpir, rule=rule, persons=impostors.owners)
    scores = np.asarray(top)
    by_person: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for owner, score in zip(impostors.owners, scores, strict=True):
        by_person[owner][0] += int(score >= c.threshold)
        by_person[owner][1] += 1
    counts: Sequence[list[int]] = list(by_person.values())
    return {
        "target_fpir": target_fpir, "rule": c.rule, "threshold": c.threshold,
        "track_k": track_k, "fpir_upper": c.fpir_upper,
        "upper_confidence": cal.UPPER_CONFIDENCE, "upper_reps": cal.UPPER_REPS,
        "impostor_decisions": c.decisions, "impostor_alerts": c.alerts,
        "fpir_ci": list(c.fpir_ci),
        "fpir_ci_persons": list(cal.person_interval([a for a, _ in counts],
                                                    [n for _, n in counts],
                                                    np.random.default_rng(0))),
        "impostor_persons": impostors.persons, "impostor_images": impostors.images,
        "impostor_faces": impostors.faces, "loose_faces": impostors.loose_faces,
        "persons_with_too_few_photos": impostors.short_persons, "gallery_size": gallery_size,
        "subjects": gallery_size, "max_growth": max_growth, "norm": "none",
        "embedder": embedder, "calibrated_at": time.time(),
    }

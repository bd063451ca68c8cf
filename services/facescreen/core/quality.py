"""Face-image quality from the detector's output and the aligned chip.

No registry package ships a learned face-quality model, so quality is a set of named,
explainable components; every rejection carries the reasons, so an operator can see why
a face was not matched or not enrolled.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from facescreen.core.specs import QualityPolicy
from facescreen.core.types import Detection, FloatArray, ImageBGR, Quality

# Nose height between the eye line and the mouth line on a frontal face (the dlib template).
_FRONTAL_NOSE_RATIO = 0.578
# Degrees of pitch per unit change of that ratio: a coarse linear model, good to ~10 degrees.
_PITCH_DEG_PER_RATIO = 120.0
# Nose-tip depth in front of the eyes over half the inter-ocular distance. With eyes at
# (+-e, 0) and the nose tip at depth d, a yaw t moves the nose by d*sin(t) while the eyes
# shrink to e*cos(t), so the landmark asymmetry is (d/e)*tan(t).
_NOSE_DEPTH_RATIO = 1.2
# Laplacian variance at which sharpness reaches 0.5 on a 150-px chip.
_SHARPNESS_HALF = 60.0


def pose_from_landmarks(landmarks: FloatArray) -> tuple[float, float, float]:
    """Estimate (yaw, pitch, roll) in degrees from the five points.

    Roll is the eye line's angle. In the roll-corrected frame, yaw comes from how far the
    nose sits off the midline of the eyes and mouth corners (a tangent law, see
    _NOSE_DEPTH_RATIO), and pitch from where it sits between the eye line and the mouth
    line. Coarse, but monotonic and cheap.
    """
    le, re, nose, lm, rm = (landmarks[i].astype(np.float64) for i in range(5))
    roll = math.degrees(math.atan2(re[1] - le[1], re[0] - le[0]))
    c, s = math.cos(math.radians(-roll)), math.sin(math.radians(-roll))
    rot = np.array([[c, -s], [s, c]])
    le, re, nose, lm, rm = (rot @ p for p in (le, re, nose, lm, rm))
    left = (nose[0] - le[0] + nose[0] - lm[0]) / 2.0
    right = (re[0] - nose[0] + rm[0] - nose[0]) / 2.0
    span = left + right
    asym = (left - right) / span if abs(span) > 1e-6 else 0.0
    yaw = math.degrees(math.atan(asym / _NOSE_DEPTH_RATIO))
    eye_y = (le[1] + re[1]) / 2.0
    mouth_y = (lm[1] + rm[1]) / 2.0
    height = mouth_y - eye_y
    ratio = (nose[1] - eye_y) / height if abs(height) > 1e-6 else _FRONTAL_NOSE_RATIO
    pitch = (ratio - _FRONTAL_NOSE_RATIO) * _PITCH_DEG_PER_RATIO
    return yaw, pitch, roll


def image_measures(chip: ImageBGR) -> tuple[float, float]:
    """Sharpness (0..1, from the Laplacian's variance) and brightness (0..1) of the chip's core."""
    gray = cv2.cvtColor(chip, cv2.COLOR_BGR2GRAY)
    h, w = gray.shape
    core = gray[h // 6 : h - h // 6, w // 6 : w - w // 6]
    variance = float(cv2.Laplacian(core, cv2.CV_64F).var())
    sharpness = variance / (variance + _SHARPNESS_HALF)
    brightness = float(core.mean()) / 255.0
    return sharpness, brightness


def assess(detection: Detection, chip: ImageBGR, policy: QualityPolicy) -> Quality:
    """Score a face and list every policy bound it breaks."""
    lm = detection.landmarks
    iod = float(np.linalg.norm(lm[1] - lm[0]))
    yaw, pitch, roll = pose_from_landmarks(lm)
    sharpness, brightness = image_measures(chip)
    components = {
        "detector_score": detection.score, "inter_ocular_px": iod, "yaw_deg": yaw,
        "pitch_deg": pitch, "roll_deg": roll, "sharpness": sharpness, "brightness": brightness,
    }
    checks = [
        (detection.score >= policy.min_detector_score,
         f"detector score {detection.score:.2f} < {policy.min_detector_score:.2f}"),
        (iod >= policy.min_inter_ocular_px,
         f"inter-ocular distance {iod:.0f}px < {policy.min_inter_ocular_px:.0f}px"),
        (abs(yaw) <= policy.max_abs_yaw_deg, f"yaw {yaw:+.0f} deg beyond ±{policy.max_abs_yaw_deg:.0f}"),
        (abs(pitch) <= policy.max_abs_pitch_deg,
         f"pitch {pitch:+.0f} deg beyond ±{policy.max_abs_pitch_deg:.0f}"),
        (abs(roll) <= policy.max_abs_roll_deg,
         f"roll {roll:+.0f} deg beyond ±{policy.max_abs_roll_deg:.0f}"),
        (sharpness >= policy.min_sharpness, f"sharpness {sharpness:.2f} < {policy.min_sharpness:.2f}"),
        (brightness >= policy.min_brightness, f"too dark ({brightness:.2f} < {policy.min_brightness:.2f})"),
        (brightness <= policy.max_brightness,
         f"overexposed ({brightness:.2f} > {policy.max_brightness:.2f})"),
    ]
    reasons = tuple(msg for ok, msg in checks if not ok)
    score = _combined_score(detection.score, iod, yaw, pitch, sharpness, brightness)
    return Quality(score=score, components=components, reasons=reasons)


def _combined_score(det: float, iod: float, yaw: float, pitch: float, sharp: float,
                    bright: float) -> float:
    """One 0..1 number for weighting votes: a product of soft factors, each 1 when ideal."""
    size = min(1.0, iod / 60.0)
    pose = math.cos(math.radians(min(abs(yaw), 89.0))) * math.cos(math.radians(min(abs(pitch), 89.0)))
    exposure = 1.0 - min(1.0, abs(bright - 0.5) / 0.5) ** 2
    return float(det * size * pose * (0.5 + 0.5 * sharp) * exposure)

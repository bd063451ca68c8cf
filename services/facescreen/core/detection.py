"""Detector pre- and post-processing: letterboxing, output decoding and NMS.

Pure array code; the inference itself happens in an adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from facescreen.core.specs import DetectorSpec
from facescreen.core.types import Detection, FloatArray, ImageBGR


@dataclass(frozen=True)
class Letterbox:
    """How a frame was scaled and padded into the detector's input."""

    scale: float  # input pixels per frame pixel
    input_hw: tuple[int, int]


def letterbox_frame(image: ImageBGR, spec: DetectorSpec) -> tuple[ImageBGR, Letterbox]:
    """Scale the frame so its longer side fits `max_side`, pad right/bottom to the multiple.

    Returns the padded BGR uint8 frame and the letterbox to undo it: the detector's input
    before its float conversion (a backend that converts inside the model takes this).
    """
    h, w = image.shape[:2]
    scale = min(1.0, spec.max_side / max(h, w))
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA) if scale < 1 else image
    m = spec.size_multiple
    ph, pw = -(-nh // m) * m, -(-nw // m) * m
    padded = cv2.copyMakeBorder(resized, 0, ph - nh, 0, pw - nw, cv2.BORDER_CONSTANT, value=0)
    return np.asarray(padded, np.uint8), Letterbox(scale=scale, input_hw=(ph, pw))


def prepare_detector_input(image: ImageBGR, spec: DetectorSpec) -> tuple[FloatArray, Letterbox]:
    """The letterboxed frame (`letterbox_frame`) as a float32 NCHW batch of one, in the
    detector's colour order and scale, and the letterbox to undo it."""
    padded, letterbox = letterbox_frame(image, spec)
    # One OpenCV call does the channel swap, float conversion and NCHW layout.
    batch: FloatArray = np.asarray(cv2.dnn.blobFromImage(padded, swapRB=spec.colour == "RGB"),
                                   dtype=np.float32)
    if spec.mean != (0.0, 0.0, 0.0) or spec.std != (1.0, 1.0, 1.0):
        batch -= np.asarray(spec.mean, np.float32).reshape(1, 3, 1, 1)
        batch /= np.asarray(spec.std, np.float32).reshape(1, 3, 1, 1)
    return batch, letterbox


def decode_centerface(
    outputs: Mapping[str, FloatArray], threshold: float
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Read CenterFace's stride-4 heads into boxes (n,4), scores (n,) and landmarks (n,5,2).

    The heatmap is already a sigmoid; scale is log size, offset is the sub-cell centre shift,
    and landmarks are relative to the box's top-left corner in units of its size.
    """
    heat, scale, offset, lms = (outputs[k][0] for k in ("heatmap", "scale", "offset", "landmarks"))
    ys, xs = np.nonzero(heat[0] > threshold)
    scores = heat[0, ys, xs].astype(np.float32)
    s_h = np.exp(scale[0, ys, xs]) * 4.0
    s_w = np.exp(scale[1, ys, xs]) * 4.0
    x1 = (xs + offset[1, ys, xs] + 0.5) * 4.0 - s_w / 2.0
    y1 = (ys + offset[0, ys, xs] + 0.5) * 4.0 - s_h / 2.0
    boxes = np.stack([x1, y1, x1 + s_w, y1 + s_h], axis=1).astype(np.float32)
    points = lms[:, ys, xs].T.reshape(-1, 5, 2)  # (n, 5, [dy, dx])
    land = np.empty_like(points, dtype=np.float32)
    land[..., 0] = points[..., 1] * s_w[:, None] + x1[:, None]
    land[..., 1] = points[..., 0] * s_h[:, None] + y1[:, None]
    return boxes, scores, land


DECODERS: dict[str, Callable[[Mapping[str, FloatArray], float],
                             tuple[FloatArray, FloatArray, FloatArray]]] = {
    "centerface": decode_centerface,
}


def non_max_suppression(boxes: FloatArray, scores: FloatArray, iou: float) -> list[int]:
    """Indices of the boxes kept, best first (OpenCV's NMS on x, y, w, h boxes)."""
    if len(boxes) == 0:
        return []
    xywh = [(float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])) for b in boxes]
    kept = cv2.dnn.NMSBoxes(xywh, scores.tolist(), 0.0, iou)
    return [int(i) for i in np.asarray(kept).reshape(-1)]


def detections_from_outputs(
    outputs: Mapping[str, FloatArray], letterbox: Letterbox, frame_hw: tuple[int, int],
    spec: DetectorSpec,
) -> list[Detection]:
    """Decode, suppress duplicates, and map back to frame coordinates (clipped to the frame)."""
    decode = DECODERS.get(spec.decoder)
    if decode is None:
        raise ValueError(f"unknown detector decoder {spec.decoder!r}; known: {sorted(DECODERS)}")
    boxes, scores, land = decode(outputs, spec.score_threshold)
    keep = non_max_suppression(boxes, scores, spec.nms_iou)
    h, w = frame_hw
    found = []
    for i in keep:
        b = boxes[i] / letterbox.scale
        box = (max(0.0, float(b[0])), max(0.0, float(b[1])),
               min(float(w), float(b[2])), min(float(h), float(b[3])))
        if box[2] - box[0] < 1 or box[3] - box[1] < 1:
            continue
        found.append(Detection(box=box, landmarks=(land[i] / letterbox.scale).astype(np.float32),
                               score=float(scores[i])))
    return found

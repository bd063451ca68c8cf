"""Five-point similarity alignment onto the embedder's template (OpenCV geometry)."""

from __future__ import annotations

import cv2
import numpy as np

from facescreen.core.types import FloatArray, ImageBGR


def similarity_transform(src: FloatArray, dst: FloatArray) -> FloatArray:
    """Least-squares rotation + uniform scale + translation taking `src` points onto `dst`.

    RANSAC with a huge threshold keeps every point an inlier, so OpenCV's final refinement
    is a plain least-squares fit over all five points.
    """
    matrix, _ = cv2.estimateAffinePartial2D(
        src.astype(np.float32), dst.astype(np.float32), method=cv2.RANSAC,
        ransacReprojThreshold=1e6, maxIters=1, refineIters=50,
    )
    if matrix is None:
        raise ValueError("degenerate landmarks: no similarity transform")
    return matrix.astype(np.float32)


def align_face(image: ImageBGR, landmarks: FloatArray, template: FloatArray, size: int) -> ImageBGR:
    """Warp the face so its landmarks sit on the template, as a `size`x`size` chip."""
    matrix = similarity_transform(landmarks, template)
    chip = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    return np.asarray(chip, dtype=np.uint8)


def chips_to_batch(chips: list[ImageBGR], colour: str, mean: tuple[float, float, float],
                   std: tuple[float, float, float]) -> FloatArray:
    """Stack BGR chips into a float32 NCHW batch in the embedder's colour order and scale.

    The uint8 chips are read through a transposed (and, for RGB, channel-reversed) view
    and written once into the contiguous float output, then divided in place: two passes
    instead of the five that converting, flipping, subtracting, dividing and copying to
    NCHW one after another took (the same float32 operations, so the same values).
    """
    chw = np.stack(chips).transpose(0, 3, 1, 2)
    if colour == "RGB":
        chw = chw[:, ::-1]
    batch: FloatArray = np.empty(chw.shape, np.float32)
    np.subtract(chw, np.asarray(mean, np.float32).reshape(1, 3, 1, 1), out=batch)
    np.divide(batch, np.asarray(std, np.float32).reshape(1, 3, 1, 1), out=batch)
    return batch


def l2_normalise(vectors: FloatArray) -> FloatArray:
    """Unit-length rows; a zero row stays zero rather than becoming NaN."""
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=-1, keepdims=True)
    out: FloatArray = (v / np.maximum(norms, 1e-12)).astype(np.float32)
    return out

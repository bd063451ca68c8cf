"""Plain data passed between the stages. No I/O, no model code."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
ImageBGR = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class Frame:
    """One decoded picture from a named source."""

    source: str
    index: int
    timestamp: float  # seconds since the epoch when captured (or video time for files)
    image: ImageBGR


@dataclass(frozen=True)
class Detection:
    """A face found by the detector, in the coordinates of the original frame."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    landmarks: FloatArray  # (5, 2): left eye, right eye, nose, left mouth, right mouth (image sides)
    score: float

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


@dataclass(frozen=True)
class Quality:
    """A face-image quality verdict with its named components and the reasons for a rejection."""

    score: float  # 0..1, higher is better
    components: dict[str, float]
    reasons: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.reasons


@dataclass
class Face:
    """A detection with its quality and, when it passed the quality bar, its embedding."""

    detection: Detection
    quality: Quality
    embedding: FloatArray | None = None  # L2-normalised
    track_id: int | None = None
    extras: dict[str, float] = field(default_factory=dict)

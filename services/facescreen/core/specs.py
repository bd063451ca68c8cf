"""Model-specific configuration: everything that differs between detector/embedder pairs.

An operator swaps in another ONNX pair (for example SCRFD with ArcFace) by writing these
fields in a TOML file; the code reads nothing model-specific from anywhere else.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from facescreen.core.screening import ScreeningPolicy
from facescreen.core.tracking import TrackerPolicy

# dlib's chip layout (get_face_chip, size 150, padding 0.25) expressed as the five points
# CenterFace gives: image-left eye, image-right eye, nose tip, mouth corners.
DLIB_150_TEMPLATE: tuple[tuple[float, float], ...] = (
    (47.65, 45.53), (99.82, 44.29), (71.70, 79.14), (53.77, 104.80), (97.58, 103.41),
)
# The common ArcFace 112x112 alignment target (insightface's published five points).
ARCFACE_112_TEMPLATE: tuple[tuple[float, float], ...] = (
    (38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366), (41.5493, 92.3655),
    (70.7299, 92.2041),
)


@dataclass(frozen=True)
class DetectorSpec:
    """How to feed the detector and how to read its outputs."""

    decoder: str = "centerface"
    model: str = "triton_models/detector/1/model.onnx"
    input_name: str = "image"
    colour: str = "RGB"  # channel order the model expects
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    size_multiple: int = 32  # padded input sides must be multiples of this
    max_side: int = 640  # frames are downscaled so their longer side is at most this
    score_threshold: float = 0.5
    nms_iou: float = 0.3


@dataclass(frozen=True)
class EmbedderSpec:
    """How to crop, colour and normalise a face for the embedder."""

    model: str = "triton_models/embedder/1/model.onnx"
    input_name: str = "image"
    output_name: str = "embedding"
    size: int = 150  # square crop side in pixels
    colour: str = "RGB"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)  # dlib's graph normalises inside
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    template: tuple[tuple[float, float], ...] = DLIB_150_TEMPLATE
    dim: int = 128
    name: str = "dlib-resnet29-128"


@dataclass(frozen=True)
class QualityPolicy:
    """Minimum quality a face needs to be matched (screening) or enrolled (stricter)."""

    min_detector_score: float = 0.6
    min_inter_ocular_px: float = 20.0
    max_abs_yaw_deg: float = 40.0
    max_abs_pitch_deg: float = 30.0
    max_abs_roll_deg: float = 35.0
    min_sharpness: float = 0.10
    min_brightness: float = 0.15
    max_brightness: float = 0.90


RUNTIMES = ("auto", "onnxruntime", "openvino")
PRECISIONS = ("auto", "fp32", "bf16", "int8")


@dataclass(frozen=True)
class InferenceSpec:
    """Which CPU runtime runs the two models, and at what precision (`[inference]`).

    `auto` lets the analyzer pick by the CPU's capabilities (see `analyzer.runtime`): the
    fastest choice that passes the parity gates on that kind of CPU. `int8` needs the
    quantised models that `facescreen models build` makes beside the fp32 ones.
    """

    runtime: str = "auto"
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise ValueError(f"inference.runtime must be one of {RUNTIMES}, got {self.runtime!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"inference.precision must be one of {PRECISIONS}, "
                             f"got {self.precision!r}")
        if self.runtime == "onnxruntime" and self.precision == "bf16":
            raise ValueError("inference.precision bf16 needs runtime openvino (or auto)")


ENROLMENT_POLICY = QualityPolicy(
    min_detector_score=0.8, min_inter_ocular_px=32.0, max_abs_yaw_deg=25.0,
    max_abs_pitch_deg=25.0, max_abs_roll_deg=25.0, min_sharpness=0.15,
)


@dataclass(frozen=True)
class PipelineConfig:
    """The whole configuration of one pipeline: models, quality bars, decisions, tracking.

    `decision` holds the scalar fields of `ScreeningPolicy` (evidence, cooldown, updates,
    feedback) and `tracking` those of `TrackerPolicy`; `screening_policy()` joins them.
    """

    detector: DetectorSpec = field(default_factory=DetectorSpec)
    embedder: EmbedderSpec = field(default_factory=EmbedderSpec)
    screening: QualityPolicy = field(default_factory=QualityPolicy)
    enrolment: QualityPolicy = ENROLMENT_POLICY
    decision: ScreeningPolicy = field(default_factory=ScreeningPolicy)
    tracking: TrackerPolicy = field(default_factory=TrackerPolicy)
    cameras: Mapping[str, ScreeningPolicy] = field(default_factory=dict)  # per-camera policy
    inference: InferenceSpec = field(default_factory=InferenceSpec)  # CPU runtime, precision

    def screening_policy(self, camera: str | None = None) -> ScreeningPolicy:
        """The camera's own `[cameras.NAME.decision]`/`[cameras.NAME.tracking]` over the
        pipeline's `[decision]`/`[tracking]`; without a camera table, the pipeline's."""
        if camera is not None and camera in self.cameras:
            return self.cameras[camera]
        return replace(self.decision, tracker=self.tracking)

    @classmethod
    def from_toml(cls, path: Path) -> PipelineConfig:
        """Read `[detector]`, `[embedder]`, `[screening]`, `[enrolment]`, `[decision]`,
        `[tracking]` and per-camera `[cameras.NAME.decision|tracking]` over the defaults."""
        with path.open("rb") as fh:
            data = tomllib.load(fh)
        base = cls()
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"{path}: unknown section(s) {sorted(unknown)}")
        parts: dict[str, Any] = {}
        for section in ("detector", "embedder", "screening", "enrolment", "decision", "tracking",
                        "inference"):
            current = getattr(base, section)
            values = data.get(section, {})
            if section == "decision" and "tracker" in values:
                raise ValueError(f"{path}[decision]: tracking settings go in [tracking]")
            parts[section] = _override(current, values, f"{path}[{section}]")
        parts["cameras"] = {}
        for camera, tables in data.get("cameras", {}).items():
            where = f"{path}[cameras.{camera}]"
            if not isinstance(tables, dict) or set(tables) - {"decision", "tracking"}:
                raise ValueError(f"{where}: only [decision] and [tracking] tables go here")
            decision = _override(parts["decision"], tables.get("decision", {}), where)
            tracking = _override(parts["tracking"], tables.get("tracking", {}), where)
            parts["cameras"][camera] = replace(decision, tracker=tracking)
        return cls(**parts)


def _override(obj: Any, values: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(obj)}
    bad = set(values) - set(known)
    if bad:
        raise ValueError(f"{where}: unknown key(s) {sorted(bad)}")
    fixed = {k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list)
             else v for k, v in values.items()}
    return replace(obj, **fixed)

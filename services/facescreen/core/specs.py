"""Model-specific configuration: everything that differs between detector/embedder pairs.

An operator swaps in another ONNX pair (for example SCRFD with ArcFace) by writing these
fields in a TOML file; the code reads nothing model-specific from anywhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

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


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _check_colour(colour: str, where: str) -> None:
    _check(colour in ("RGB", "BGR"), f"{where}.colour must be RGB or BGR, got {colour!r}")


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

    def __post_init__(self) -> None:
        _check_colour(self.colour, "detector")
        _check(self.size_multiple >= 1, f"detector.size_multiple must be >= 1, got "
               f"{self.size_multiple}")
        _check(self.max_side >= self.size_multiple, f"detector.max_side must be >= "
               f"size_multiple ({self.size_multiple}), got {self.max_side}")
        _check(0 < self.score_threshold < 1, f"detector.score_threshold must be in (0, 1), "
               f"got {self.score_threshold}")
        _check(0 < self.nms_iou <= 1, f"detector.nms_iou must be in (0, 1], got {self.nms_iou}")
        _check(all(v > 0 for v in self.std), f"detector.std must be > 0, got {self.std}")


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

    def __post_init__(self) -> None:
        _check_colour(self.colour, "embedder")
        _check(16 <= self.size <= 1024, f"embedder.size must be in 16..1024, got {self.size}")
        _check(1 <= self.dim <= 4096, f"embedder.dim must be in 1..4096, got {self.dim}")
        _check(len(self.template) == 5 and all(len(p) == 2 for p in self.template),
               "embedder.template must be five [x, y] points")
        _check(all(v > 0 for v in self.std), f"embedder.std must be > 0, got {self.std}")
        _check(bool(self.name.strip()), "embedder.name must not be empty")


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

    def __post_init__(self) -> None:
        for name in ("min_detector_score", "min_sharpness", "min_brightness", "max_brightness"):
            value = getattr(self, name)
            _check(0 <= value <= 1, f"quality {name} must be in [0, 1], got {value}")
        for name in ("max_abs_yaw_deg", "max_abs_pitch_deg", "max_abs_roll_deg"):
            value = getattr(self, name)
            _check(0 < value <= 90, f"quality {name} must be in (0, 90], got {value}")
        _check(self.min_inter_ocular_px >= 0, "quality min_inter_ocular_px must be >= 0")
        _check(self.min_brightness < self.max_brightness,
               "quality min_brightness must be below max_brightness")


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


GALLERY_INDEXES = ("exact", "ivf")


@dataclass(frozen=True)
class GallerySpec:
    """How the in-process watchlist (`--data-dir`) is searched (`[gallery]`).

    `exact` scores every template: the true top-k, at a cost that grows with the list
    (~70 ms a probe at a million templates here, memory-bound). `ivf` gives each watchlist
    of at least `ivf_min_rows` templates an inverted-file index (faiss IVF-Flat): its
    templates are clustered into `ivf_lists` cells (0: the square root of the list's size)
    and a probe is scored against the templates of its `ivf_probe` nearest cells only. The
    scores returned are exact cosines; which templates are looked at is the approximation
    (bench/gallery_scale.py measures recall@1 against exact, and latency, per size).
    Smaller lists stay exact either way.
    """

    index: str = "exact"
    ivf_min_rows: int = 50_000
    ivf_lists: int = 0
    ivf_probe: int = 32

    def __post_init__(self) -> None:
        _check(self.index in GALLERY_INDEXES,
               f"gallery.index must be one of {GALLERY_INDEXES}, got {self.index!r}")
        _check(self.ivf_min_rows >= 1000, f"gallery.ivf_min_rows must be >= 1000 (an IVF "
               f"index needs ~40 templates a cell to train), got {self.ivf_min_rows}")
        _check(self.ivf_lists >= 0, f"gallery.ivf_lists must be >= 0, got {self.ivf_lists}")
        _check(self.ivf_probe >= 1, f"gallery.ivf_probe must be >= 1, got {self.ivf_probe}")


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
    gallery: GallerySpec = field(default_factory=GallerySpec)  # exact or IVF search

    def screening_policy(self, camera: str | None = None) -> ScreeningPolicy:
        """The camera's own `[cameras.NAME.decision]`/`[cameras.NAME.tracking]` over the
        pipeline's `[decision]`/`[tracking]`; without a camera table, the pipeline's."""
        if camera is not None and camera in self.cameras:
            return self.cameras[camera]
        return replace(self.decision, tracker=self.tracking)

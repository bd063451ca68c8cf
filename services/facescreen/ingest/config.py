"""The ingest configuration file: many cameras, each with its fps cap and JPEG quality.

    max_frame_bytes = 900000   # optional, 1024..16 MiB; larger encoded frames are rejected
    jpeg_quality = 90          # optional default for every camera, 1..100

    [[cameras]]
    name = "gate-1"            # 1-128 of letters, digits, '_.-' (as in frame.schema.json)
    uri_env = "GATE1_URI"      # or `uri = "rtsp://..."`; a URI with credentials belongs
    fps = 5                    # in the environment (a Kubernetes Secret), not the file
    jpeg_quality = 85          # fps: optional cap, > 0 and <= 120

`uri` may be a file path, `file://`, `rtsp://`, `http(s)://` or a device index. The file is
parsed by pydantic models (`CamerasFile`): types are strict (`fps = "5"` is an error),
unknown keys are refused, and every error is one line naming the file and the field. The
URI is a secret: no repr, log line or error shows more than its masked form (`display_uri`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)

from facescreen.bus.entry import DEFAULT_MAX_FRAME_BYTES
from facescreen.config.toml import read_toml
from facescreen.config.validation import one_line
from facescreen.ingest.sources import SourceSpec

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")  # as in frame.schema.json
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DEFAULT_JPEG_QUALITY = 90
MAX_FPS = 120.0
MAX_FRAME_BYTES = 16 * 1024 * 1024


class ConfigError(ValueError):
    """The ingest configuration cannot be used; the message names the file and the field."""


def _camera_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError("a camera name must be 1-128 of letters, digits, '_.-', "
                         "not starting with '.' or '-'")
    return name


def _env_name(name: str) -> str:
    if not _ENV_NAME.match(name):
        raise ValueError("must name an environment variable (letters, digits, '_')")
    return name


def _some_uri(uri: SecretStr) -> SecretStr:
    if not uri.get_secret_value().strip():
        raise ValueError("must not be empty")
    return uri


Quality = Annotated[int, Field(ge=1, le=100)]
Fps = Annotated[float, Field(gt=0, le=MAX_FPS)]
CameraName = Annotated[str, AfterValidator(_camera_name)]
_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True, hide_input_in_errors=True)


class CameraEntry(BaseModel):
    """One `[[cameras]]` table as written (the URI not yet looked up)."""

    model_config = _STRICT

    name: CameraName
    uri: Annotated[SecretStr, AfterValidator(_some_uri)] | None = None
    uri_env: Annotated[str, AfterValidator(_env_name)] | None = None
    fps: Fps | None = None
    jpeg_quality: Quality | None = None

    @model_validator(mode="after")
    def _one_uri(self) -> CameraEntry:
        if (self.uri is None) == (self.uri_env is None):
            raise ValueError("give exactly one of uri, uri_env")
        return self


def _some_cameras(cameras: list[CameraEntry]) -> list[CameraEntry]:
    if not cameras:
        raise ValueError("no [[cameras]] configured")
    names = [c.name for c in cameras]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"camera names must be unique: {duplicates}")
    return cameras


class CamerasFile(BaseModel):
    """The whole file as written."""

    model_config = _STRICT

    max_frame_bytes: Annotated[int, Field(ge=1024, le=MAX_FRAME_BYTES)] = DEFAULT_MAX_FRAME_BYTES
    jpeg_quality: Quality = DEFAULT_JPEG_QUALITY
    cameras: Annotated[list[CameraEntry], AfterValidator(_some_cameras)] = Field(
        default_factory=list, validate_default=True)

    @classmethod
    def parse(cls, data: Mapping[str, Any], where: str) -> CamerasFile:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(one_line(exc, where, cls, hidden=("uri",))) from None


class CameraConfig(BaseModel):
    """One camera, its URI resolved (a secret: see `spec().display_uri` for the masked form)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    name: CameraName
    uri: SecretStr
    fps: Fps | None = None
    jpeg_quality: Quality = DEFAULT_JPEG_QUALITY

    def spec(self) -> SourceSpec:
        return SourceSpec(self.name, self.uri.get_secret_value(), self.fps)

    def __repr__(self) -> str:  # the URI may hold credentials
        return f"CameraConfig({self.name!r}, {self.spec().display_uri!r}, fps={self.fps})"

    __str__ = __repr__


class IngestConfig(BaseModel):
    """The cameras of one ingest process and the frame size limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cameras: tuple[CameraConfig, ...]
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.cameras]

    @classmethod
    def from_toml(cls, path: Path, environ: Mapping[str, str] | None = None) -> IngestConfig:
        return cls.from_mapping(read_toml(path, ConfigError), str(path), environ)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "config",
                     environ: Mapping[str, str] | None = None) -> IngestConfig:
        """The file's cameras, each `uri_env` looked up in `environ` (default os.environ)."""
        parsed = CamerasFile.parse(data, where)
        env = os.environ if environ is None else environ
        cameras = []
        for i, entry in enumerate(parsed.cameras):
            secret = entry.uri
            if secret is None:  # CameraEntry: then uri_env is set
                uri = env.get(str(entry.uri_env), "")
                if not uri.strip():
                    raise ConfigError(f"{where}: cameras[{i}].uri_env: environment variable "
                                      f"{entry.uri_env} is not set")
                secret = SecretStr(uri)
            quality = parsed.jpeg_quality if entry.jpeg_quality is None else entry.jpeg_quality
            camera = CameraConfig(name=entry.name, uri=secret, fps=entry.fps,
                                  jpeg_quality=quality)
            try:
                camera.spec()
            except ValueError as exc:
                raise ConfigError(f"{where}: cameras[{i}]: {exc}") from None
            cameras.append(camera)
        return cls(cameras=tuple(cameras), max_frame_bytes=parsed.max_frame_bytes)


def camera_names(path: Path) -> list[str]:
    """The camera names of an ingest config, the whole file checked but no URI looked up
    (for the analyzer, which must not need the cameras' credentials)."""
    return [c.name for c in CamerasFile.parse(read_toml(path, ConfigError), str(path)).cameras]

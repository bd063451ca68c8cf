"""The ingest configuration file: many cameras, each with its fps cap and JPEG quality.

    max_frame_bytes = 900000   # optional; larger encoded frames are rejected (metric)
    jpeg_quality = 90          # optional default for every camera

    [[cameras]]
    name = "gate-1"
    uri_env = "GATE1_URI"      # or `uri = "rtsp://..."`; a URI with credentials belongs
    fps = 5                    # in the environment (a Kubernetes Secret), not the file
    jpeg_quality = 85

`uri` may be a file path, `file://`, `rtsp://`, `http(s)://` or a device index.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facescreen.bus.entry import DEFAULT_MAX_FRAME_BYTES
from facescreen.config.toml import read_toml
from facescreen.ingest.sources import SourceSpec

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")  # as in frame.schema.json
DEFAULT_JPEG_QUALITY = 90


class ConfigError(ValueError):
    """The ingest configuration cannot be used; the message names the file and the field."""


@dataclass(frozen=True, repr=False)
class CameraConfig:
    name: str
    uri: str
    fps: float | None = None
    jpeg_quality: int = DEFAULT_JPEG_QUALITY

    def spec(self) -> SourceSpec:
        return SourceSpec(self.name, self.uri, self.fps)

    def __repr__(self) -> str:  # the URI may hold credentials
        return f"CameraConfig({self.name!r}, {self.spec().display_uri!r}, fps={self.fps})"


@dataclass(frozen=True)
class IngestConfig:
    cameras: tuple[CameraConfig, ...]
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.cameras]

    @classmethod
    def from_toml(cls, path: Path) -> IngestConfig:
        return cls.from_mapping(_read_toml(path), str(path))

    @classmethod
    def from_mapping(cls, data: dict[str, Any], where: str = "config") -> IngestConfig:
        unknown = set(data) - {"cameras", "max_frame_bytes", "jpeg_quality"}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
        default_quality = _quality(data.get("jpeg_quality", DEFAULT_JPEG_QUALITY), where)
        max_bytes = data.get("max_frame_bytes", DEFAULT_MAX_FRAME_BYTES)
        if not isinstance(max_bytes, int) or max_bytes < 1024:
            raise ConfigError(f"{where}: max_frame_bytes must be an integer >= 1024")
        raw = data.get("cameras")
        if not isinstance(raw, list) or not raw:
            raise ConfigError(f"{where}: no [[cameras]] configured")
        cameras = [_camera(item, i, default_quality, where) for i, item in enumerate(raw)]
        names = [c.name for c in cameras]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"{where}: camera names must be unique: {duplicates}")
        return cls(tuple(cameras), max_bytes)


def camera_names(path: Path) -> list[str]:
    """The camera names of an ingest config, without resolving URIs (for the analyzer,
    which must not need the cameras' credentials)."""
    data = _read_toml(path)
    cameras = data.get("cameras")
    if not isinstance(cameras, list) or not cameras:
        raise ConfigError(f"{path}: no [[cameras]] configured")
    names = [c.get("name") if isinstance(c, dict) else None for c in cameras]
    bad = [n for n in names if not isinstance(n, str) or not _NAME.match(n)]
    if bad:
        raise ConfigError(f"{path}: invalid camera name(s) {bad}")
    return [str(n) for n in names]


def _quality(value: Any, where: str) -> int:
    if not isinstance(value, int) or not 1 <= value <= 100:
        raise ConfigError(f"{where}: jpeg_quality must be an integer in 1..100, got {value!r}")
    return value


def _camera(item: Any, index: int, default_quality: int, where: str) -> CameraConfig:
    here = f"{where}: cameras[{index}]"
    if not isinstance(item, dict):
        raise ConfigError(f"{here} is not a table")
    unknown = set(item) - {"name", "uri", "uri_env", "fps", "jpeg_quality"}
    if unknown:
        raise ConfigError(f"{here}: unknown key(s) {sorted(unknown)}")
    name = item.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{here}: name must be 1-128 of letters, digits, '_.-', got {name!r}")
    if ("uri" in item) == ("uri_env" in item):
        raise ConfigError(f"{here} ({name}): give exactly one of uri, uri_env")
    if "uri_env" in item:
        uri = os.environ.get(str(item["uri_env"]), "")
        if not uri:
            raise ConfigError(f"{here} ({name}): environment variable {item['uri_env']} "
                              "is not set")
    else:
        uri = str(item["uri"])
    fps = item.get("fps")
    if fps is not None and (not isinstance(fps, int | float) or fps <= 0):
        raise ConfigError(f"{here} ({name}): fps must be a number > 0")
    quality = _quality(item.get("jpeg_quality", default_quality), here)
    try:
        camera = CameraConfig(name, uri, None if fps is None else float(fps), quality)
        camera.spec()
    except ValueError as exc:
        raise ConfigError(f"{here}: {exc}") from None
    return camera


def _read_toml(path: Path) -> dict[str, Any]:
    return read_toml(path, ConfigError)

"""The pipeline TOML file (`--config`), read into the core's `PipelineConfig` with types checked.

Each table overrides the defaults of one core dataclass; pydantic checks every value against
the field's type (`max_side = "big"` is an error, not a TypeError an hour later), unknown
keys and tables are refused, and the dataclasses' own checks guard the ranges. Every error
is one line naming the file, the table and the key.

    [detector]            DetectorSpec       [decision]           ScreeningPolicy
    [embedder]            EmbedderSpec       [tracking]           TrackerPolicy
    [screening]           QualityPolicy      [cameras.NAME.decision|tracking]  per camera
    [enrolment]           QualityPolicy      [inference]          InferenceSpec
    [gallery]             GallerySpec
"""

from __future__ import annotations

from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from facescreen.config.toml import read_toml
from facescreen.core.screening import ScreeningPolicy
from facescreen.core.specs import PipelineConfig

SECTIONS = ("detector", "embedder", "screening", "enrolment", "decision", "tracking",
            "inference", "gallery")


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the file, table and key."""


def load_pipeline_config(path: Path) -> PipelineConfig:
    """`path`'s tables over the defaults, every value type- and range-checked."""
    return pipeline_from_mapping(read_toml(path, ConfigError), str(path))


def pipeline_from_mapping(data: dict[str, Any], where: str = "config") -> PipelineConfig:
    unknown = set(data) - set(SECTIONS) - {"cameras"}
    if unknown:
        raise ConfigError(f"{where}: unknown table(s) {sorted(unknown)}")
    base = PipelineConfig()
    parts: dict[str, Any] = {}
    for section in SECTIONS:
        values = _table(data.get(section, {}), f"{where}[{section}]")
        if section == "decision" and "tracker" in values:
            raise ConfigError(f"{where}[decision]: tracking settings go in [tracking]")
        parts[section] = _override(getattr(base, section), values, f"{where}[{section}]")
    cameras: dict[str, ScreeningPolicy] = {}
    for camera, tables in _table(data.get("cameras", {}), f"{where}[cameras]").items():
        here = f"{where}[cameras.{camera}]"
        tables = _table(tables, here)
        if set(tables) - {"decision", "tracking"}:
            raise ConfigError(f"{here}: only [decision] and [tracking] tables go here")
        decision = _override(parts["decision"], _table(tables.get("decision", {}), here), here)
        tracking = _override(parts["tracking"], _table(tables.get("tracking", {}), here), here)
        cameras[camera] = replace(decision, tracker=tracking)
    return PipelineConfig(**parts, cameras=cameras)


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table, got {type(value).__name__}")
    return value


def _override(current: Any, values: dict[str, Any], where: str) -> Any:
    """A copy of the dataclass `current` with `values`, validated by its field types."""
    names = {f.name for f in fields(current) if f.name != "tracker"}
    bad = set(values) - names
    if bad:
        raise ConfigError(f"{where}: unknown key(s) {sorted(bad)}")
    merged = {k: v for k, v in asdict(current).items() if k in names} | values
    if "tracker" in {f.name for f in fields(current)}:
        merged["tracker"] = current.tracker
    try:
        return TypeAdapter(type(current)).validate_python(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "(table)"
        value = first.get("input")
        shown = repr(value) if len(repr(value)) <= 40 else f"{type(value).__name__}"
        message = first["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, "):]
        raise ConfigError(f"{where} {key} = {shown}: {message}") from None
    except ValueError as exc:  # a dataclass check outside pydantic's wrapping
        raise ConfigError(f"{where}: {exc}") from None

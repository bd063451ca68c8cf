"""The topics file (`--topics FILE.toml`), parsed by pydantic into `BusConfig`/`TopicSpec`.

    replication = 3                  # optional, 1..32 (default 1)
    [faces]                          # any of frames, faces, alerts, dead_letter, audit,
    name = "site.faces"              #   feedback, matcher_state; every key optional
    partitions = 24                  # 1..10000
    retention_ms = 3600000           # > 0, or -1 for forever
    configs = { "segment.bytes" = "104857600" }   # Kafka topic configs, over the defaults

Types are strict, unknown tables and keys are refused, and the co-partitioning rule is a
validator: `feedback` and `matcher_state` have the faces topic's partition count (they
follow it when not given). Every error is one line naming the file and the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from facescreen.bus.topics import COPARTITIONED, ROLES, BusConfig, TopicSpec
from facescreen.config.environment import TOPIC_CHARS
from facescreen.config.validation import one_line

MAX_PARTITIONS = 10_000
MAX_REPLICATION = 32
MAX_TOPIC_NAME = 249  # Kafka's limit
_CONFIG_KEY = re.compile(r"^[a-z][a-z0-9]*(\.[a-z0-9]+)*$")  # e.g. max.message.bytes
# Set by their own keys: a copy in `configs` would silently win over them.
_OWN_KEYS = {"retention.ms": "retention_ms"}


class TopicsConfigError(ValueError):
    """The topics file cannot be used; the message names the file and the field."""


def topic_name(name: str) -> str:
    """`name` if Kafka accepts it as a topic name, else ValueError saying why."""
    if not name or name in (".", "..") or not TOPIC_CHARS.match(name):
        raise ValueError("a topic name is letters, digits, '.', '_' and '-' (not '.' or '..')")
    if len(name) > MAX_TOPIC_NAME:
        raise ValueError(f"a topic name has at most {MAX_TOPIC_NAME} characters")
    return name


def _retention(ms: int) -> int:
    if ms < -1 or ms == 0:
        raise ValueError("must be > 0 ms, or -1 for forever")
    return ms


def _config_value(value: Any) -> Any:
    """Kafka configs are strings; a TOML number or boolean is written as Kafka spells it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _configs(configs: dict[str, str]) -> dict[str, str]:
    for key in configs:
        if key in _OWN_KEYS:
            raise ValueError(f"{key!r}: set {_OWN_KEYS[key]} instead")
        if not _CONFIG_KEY.match(key):
            raise ValueError(f"{key!r} is not a Kafka topic config name (like "
                             "'max.message.bytes')")
    return configs


_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True)


class TopicTable(BaseModel):
    """One `[role]` table: every key overrides the role's default."""

    model_config = _STRICT

    name: Annotated[str, AfterValidator(topic_name)] | None = None
    partitions: Annotated[int, Field(ge=1, le=MAX_PARTITIONS)] | None = None
    retention_ms: Annotated[int, AfterValidator(_retention)] | None = None
    configs: Annotated[dict[str, Annotated[str, BeforeValidator(_config_value)]],
                       AfterValidator(_configs)] | None = None


class TopicsFile(BaseModel):
    """The whole file as written."""

    model_config = _STRICT

    replication: Annotated[int, Field(ge=1, le=MAX_REPLICATION)] = 1
    frames: TopicTable = TopicTable()
    faces: TopicTable = TopicTable()
    alerts: TopicTable = TopicTable()
    dead_letter: TopicTable = TopicTable()
    audit: TopicTable = TopicTable()
    feedback: TopicTable = TopicTable()
    matcher_state: TopicTable = TopicTable()

    @model_validator(mode="after")
    def _copartitioned(self) -> TopicsFile:
        faces = self.faces.partitions or BusConfig().faces.partitions
        for role in COPARTITIONED:
            given = getattr(self, role).partitions
            if given is not None and given != faces:
                raise ValueError(f"{role}.partitions: must be the faces topic's {faces}, not "
                                 f"{given}: they are co-partitioned (leave it out to follow)")
        return self

    def bus(self) -> BusConfig:
        """These overrides over the defaults (`configs` merged over the role's own)."""
        base = BusConfig()
        specs: dict[str, TopicSpec] = {}
        for role in ROLES:
            table: TopicTable = getattr(self, role)
            spec: TopicSpec = getattr(base, role)
            partitions = table.partitions
            if partitions is None and role in COPARTITIONED:
                partitions = specs["faces"].partitions
            specs[role] = replace(
                spec, name=table.name or spec.name, partitions=partitions or spec.partitions,
                retention_ms=spec.retention_ms if table.retention_ms is None
                else table.retention_ms,
                configs={**spec.configs, **(table.configs or {})})
        names = [s.name for s in specs.values()]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"two roles share the topic name(s) {twice}")
        return BusConfig(**specs, replication=self.replication)


def parse_topics(data: Mapping[str, Any], where: str) -> BusConfig:
    """The `BusConfig` of a topics file's tables; TopicsConfigError as one line."""
    try:
        return TopicsFile.model_validate(data).bus()
    except ValidationError as exc:
        raise TopicsConfigError(one_line(exc, where, TopicsFile)) from None
    except ValueError as exc:  # the names, or a TopicSpec/BusConfig check
        raise TopicsConfigError(f"{where}: {exc}") from None

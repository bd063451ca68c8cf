"""Topic names, partition counts and retention as configuration, and their creation.

Defaults (override with a topics file, see `bus/topics_config.py`, and/or a name prefix):

| topic       | default name             | partitions | retention | why                          |
|-------------|--------------------------|-----------:|-----------|------------------------------|
| frames      | facescreen.frames        | 12         | 10 min    | perishable, biometric        |
| faces       | facescreen.faces         | 12         | 1 h       | biometric (embeddings)       |
| alerts      | facescreen.alerts        | 6          | 7 days    | reviewed by people           |
| dead_letter | facescreen.dead-letter   | 3          | 14 days   | no payloads, only references |
| audit       | facescreen.audit         | 1          | forever   | accountability; one order    |
| feedback    | facescreen.feedback      | = faces    | 7 days    | reviewers' verdicts, by camera |
| matcher_state | facescreen.matcher-state | = faces  | 1 day, compacted | the matcher's table changelog |

Partitions bound the parallelism of each stage (every message is keyed by camera, so one
camera's messages stay in order on one partition). Topics are created explicitly with
their partition counts: a broker's auto-creation would pick its own count.

`feedback` and `matcher_state` are co-partitioned with `faces`: a camera's face events,
its reviewers' verdicts and its saved screening state have the same partition number, so
the one matcher worker that owns the partition sees all three. The configuration refuses
other counts. `matcher_state` holds track identities (biometric): it is compacted (one
latest state per camera) and still deleted after its retention, so a camera that stays
idle that long starts afresh.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from facescreen.config.environment import bootstrap_servers

log = logging.getLogger("facescreen.bus")

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
TOPIC_ALREADY_EXISTS = 36  # Kafka protocol error code


class TopicError(RuntimeError):
    """Topics are missing, misconfigured, or the broker cannot be reached."""


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its name, partition count, retention (ms, -1 = forever) and extra configs."""

    name: str
    partitions: int
    retention_ms: int
    configs: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("a topic needs a name")
        if self.partitions < 1:
            raise ValueError(f"topic {self.name}: partitions must be >= 1")
        if self.retention_ms < -1 or self.retention_ms == 0:
            raise ValueError(f"topic {self.name}: retention_ms must be > 0 or -1 (forever)")

    def kafka_configs(self) -> dict[str, str]:
        return {"retention.ms": str(self.retention_ms), "cleanup.policy": "delete",
                **dict(self.configs)}


ROLES = ("frames", "faces", "alerts", "dead_letter", "audit", "feedback", "matcher_state")
COPARTITIONED = ("feedback", "matcher_state")


@dataclass(frozen=True)
class BusConfig:
    """The topics of facescreen and their replication factor."""

    frames: TopicSpec = TopicSpec("facescreen.frames", 12, 10 * MINUTE_MS,
                                  {"max.message.bytes": str(2 * 1024 * 1024)})
    faces: TopicSpec = TopicSpec("facescreen.faces", 12, HOUR_MS)
    alerts: TopicSpec = TopicSpec("facescreen.alerts", 6, 7 * DAY_MS)
    dead_letter: TopicSpec = TopicSpec("facescreen.dead-letter", 3, 14 * DAY_MS)
    audit: TopicSpec = TopicSpec("facescreen.audit", 1, -1)
    feedback: TopicSpec = TopicSpec("facescreen.feedback", 12, 7 * DAY_MS)
    matcher_state: TopicSpec = TopicSpec("facescreen.matcher-state", 12, DAY_MS, {
        "cleanup.policy": "compact,delete",
        # compaction works on closed segments: roll often, so a reader after a
        # rebalance reads about one state per camera plus the last few minutes
        "segment.ms": str(10 * MINUTE_MS)})
    replication: int = 1

    def __post_init__(self) -> None:
        for role in COPARTITIONED:
            spec: TopicSpec = getattr(self, role)
            if spec.partitions != self.faces.partitions:
                raise ValueError(f"topic {spec.name} ({role}) must have the faces topic's "
                                 f"{self.faces.partitions} partitions, not {spec.partitions}: "
                                 "they are co-partitioned")

    def topics(self) -> dict[str, TopicSpec]:
        return {role: getattr(self, role) for role in ROLES}

    def with_prefix(self, prefix: str) -> BusConfig:
        """Every name prefixed: separate stacks (or tests) sharing one broker."""
        if not prefix:
            return self
        from facescreen.bus.topics_config import topic_name

        renamed: dict[str, Any] = {}
        for role, spec in self.topics().items():
            try:
                renamed[role] = replace(spec, name=topic_name(prefix + spec.name))
            except ValueError as exc:
                raise ValueError(f"topic prefix {prefix!r}: {exc}") from None
        return replace(self, **renamed)

    @classmethod
    def from_toml(cls, path: Path) -> BusConfig:
        """`replication` and `[frames]`, `[faces]`, ... tables over the defaults (see
        `facescreen.bus.topics_config`); TopicsConfigError (a ValueError) as one line."""
        from facescreen.bus.topics_config import TopicsConfigError, parse_topics
        from facescreen.config.toml import read_toml

        return parse_topics(read_toml(path, TopicsConfigError), str(path))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "topics") -> BusConfig:
        from facescreen.bus.topics_config import parse_topics

        return parse_topics(data, where)


def bootstrap_list(bootstrap: str) -> list[str]:
    """`host:port[,host:port...]` as a list, refusing an empty or malformed one."""
    try:
        return bootstrap_servers(bootstrap)
    except ValueError as exc:
        raise TopicError(str(exc)) from None


def _admin(bootstrap: str, timeout_s: float) -> Any:
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    from facescreen.bus.security import kafka_options

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return KafkaAdminClient(bootstrap_servers=bootstrap_list(bootstrap),
                                    client_id="facescreen-admin",
                                    request_timeout_ms=max(1000, int(timeout_s * 1000)),
                                    **kafka_options())
        except KafkaError as exc:
            if time.monotonic() >= deadline:
                raise TopicError(f"cannot reach the Kafka broker at {bootstrap}: {exc}") from None
            time.sleep(0.5)


def partition_counts(bootstrap: str, names: list[str], timeout_s: float = 30.0) -> dict[str, int]:
    """Partition count of each named topic that exists (missing topics are left out)."""
    admin = _admin(bootstrap, timeout_s)
    try:
        existing = set(admin.list_topics())
        wanted = [n for n in names if n in existing]
        described = admin.describe_topics(wanted) if wanted else []
        return {t["name"]: len(t["partitions"]) for t in described if t.get("error_code", 0) == 0}
    finally:
        admin.close()


def create_topics(bootstrap: str, config: BusConfig, *, roles: tuple[str, ...] = ROLES,
                  timeout_s: float = 30.0) -> dict[str, str]:
    """Create the topics of `roles` that are missing; returns name -> 'created' | 'exists'.

    An existing topic with another partition count is an error, not a silent mismatch:
    keyed ordering and consumer parallelism depend on it.
    """
    specs = [config.topics()[r] for r in roles]
    admin = _admin(bootstrap, timeout_s)
    outcome: dict[str, str] = {}
    try:
        request = {s.name: {"num_partitions": s.partitions,
                            "replication_factor": config.replication,
                            "configs": s.kafka_configs()} for s in specs}
        response = admin.create_topics(request, timeout_ms=int(timeout_s * 1000),
                                       raise_errors=False)
        for result in response["topics"]:
            code = result.get("error_code", 0)
            if code == 0:
                outcome[result["name"]] = "created"
            elif code == TOPIC_ALREADY_EXISTS:
                outcome[result["name"]] = "exists"
            else:
                raise TopicError(f"cannot create topic {result['name']}: error {code} "
                                 f"{result.get('error_message') or ''}".rstrip())
    finally:
        admin.close()
    counts = partition_counts(bootstrap, [s.name for s in specs], timeout_s)
    for spec in specs:
        have = counts.get(spec.name)
        if have is None:
            raise TopicError(f"topic {spec.name} does not exist after creation")
        if have != spec.partitions:
            raise TopicError(f"topic {spec.name} has {have} partitions, configured "
                             f"{spec.partitions}: change the configuration or the topic")
    for name, what in outcome.items():
        log.info("topic %s: %s", name, what)
    return outcome


def require_topics(bootstrap: str, config: BusConfig, roles: tuple[str, ...],
                   timeout_s: float = 60.0) -> None:
    """Fail with a clear message when a topic a service needs is missing.

    Services never create topics themselves (Kafka's auto-creation would pick the
    partition count): run `facescreen topics create` or let the operator (Strimzi) do it.
    """
    specs = [config.topics()[r] for r in roles]
    counts = partition_counts(bootstrap, [s.name for s in specs], timeout_s)
    missing = [s.name for s in specs if s.name not in counts]
    if missing:
        raise TopicError(f"missing topic(s) {', '.join(missing)} on {bootstrap}: "
                         "create them with `facescreen topics create`")
    wrong = [f"{s.name} has {counts[s.name]}, configured {s.partitions}" for s in specs
             if counts[s.name] != s.partitions]
    if wrong:
        raise TopicError(f"partition counts differ from the configuration: {'; '.join(wrong)}"
                         " (keyed routing and the matcher's co-partitioned table depend on "
                         "them)")

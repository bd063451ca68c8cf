"""Dead letters: what a service could not use, why, and where it came from; never the payload.

Frames and face events are biometric data, so a dead letter names the message (topic,
partition, offset, key, size and SHA-256 of the value) instead of copying it; whoever
investigates reads the original from its topic while its retention allows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema
from prometheus_client import Counter

from facescreen.alerts.events import validator
from facescreen.bus.codecs import SCHEMA_VERSION, Headers, dumps

log = logging.getLogger("facescreen.deadletter")
DEAD_LETTERS = Counter("facescreen_dead_letters", "Messages dead-lettered, by service and reason",
                       ["service", "reason"])
_NAMESPACE = uuid.UUID("0c6f9d1e-7a52-4b8e-9f3c-2d41e6a8b705")
_MAX_TEXT = 256
_MAX_HEADERS = 32


class DeadLetter(Exception):  # noqa: N818 - it is the verdict, not an error of this code
    """A message fails validation: `reason` is a machine code, `detail` says why for people."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def failure_letter(exc: BaseException) -> DeadLetter:
    """The dead letter of a message whose handling raised: this service is at fault.

    Only the exception's class is named: its message may quote the payload (a schema
    error repeats the offending value, which may be an embedding). An output of ours
    that fails its own schema is `invalid_output`; anything else is `internal_error`.
    """
    if isinstance(exc, DeadLetter):
        return exc
    name = f"{type(exc).__module__}.{type(exc).__qualname__}"
    if isinstance(exc, jsonschema.ValidationError):
        return DeadLetter("invalid_output", f"an output failed its schema ({name})")
    return DeadLetter("internal_error", name)


@dataclass(frozen=True)
class MessageRef:
    """Where a consumed message came from, and its raw parts."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers = field(default_factory=list)


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8", "replace")[:_MAX_TEXT]


def _headers(headers: Iterable[tuple[str, bytes | None]]) -> dict[str, str]:
    """The first `_MAX_HEADERS` headers, cut short: a message with thousands of headers
    must not make a dead letter too big to publish."""
    out: dict[str, str] = {}
    for k, v in headers:
        if len(out) >= _MAX_HEADERS:
            break
        out[str(k)[:_MAX_TEXT]] = (v or b"").decode("utf-8", "replace")[:_MAX_TEXT]
    return out


def dead_letter_event(service: str, ref: MessageRef, letter: DeadLetter,
                      at: float | None = None) -> dict[str, Any]:
    """The dead-letter event (`schemas/dead_letter.schema.json`), validated."""
    value = ref.value or b""
    event = {
        "schema_version": SCHEMA_VERSION,
        "dead_letter_id": str(uuid.uuid5(
            _NAMESPACE, f"{service}|{ref.topic}|{ref.partition}|{ref.offset}")),
        "at": time.time() if at is None else at,
        "service": service, "reason": letter.reason, "detail": letter.detail[:2000],
        "source": {"topic": ref.topic, "partition": ref.partition, "offset": ref.offset},
        "key": _text(ref.key),
        "payload": {"size": len(value), "sha256": hashlib.sha256(value).hexdigest()},
        "headers": _headers(ref.headers),
    }
    validator("dead_letter").validate(event)
    return event


def record(service: str, ref: MessageRef, letter: DeadLetter) -> tuple[bytes | None, bytes]:
    """Count and log a dead letter; returns the (key, value) to publish."""
    DEAD_LETTERS.labels(service, letter.reason).inc()
    event = dead_letter_event(service, ref, letter)
    log.warning("dead letter", extra={"fields": {
        "reason": letter.reason, "detail": letter.detail, "topic": ref.topic,
        "partition": ref.partition, "offset": ref.offset, "key": event["key"]}})
    return ref.key, dumps(event)


class KafkaDeadLetterProducer:
    """Publishes dead letters with kafka-python, for services that are not Faust apps."""

    def __init__(self, producer: Any, topic: str, service: str) -> None:
        self._producer = producer
        self.topic = topic
        self.service = service

    def publish(self, ref: MessageRef, letter: DeadLetter, timeout_s: float = 10.0) -> None:
        key, value = record(self.service, ref, letter)
        self._producer.send(self.topic, key=key, value=value).get(timeout_s)


def parse_dead_letter(value: bytes) -> Mapping[str, Any]:
    """A dead-letter event read back from the topic, validated (for tools and tests)."""
    event: Mapping[str, Any] = json.loads(value)
    validator("dead_letter").validate(event)
    return event

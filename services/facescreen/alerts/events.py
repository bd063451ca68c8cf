"""Alert events: the JSON form, checked against `schemas/alert.schema.json`, and sinks.

Each revision of an alert (open, update, closed) is one event; consumers keep the highest
revision of each `alert_id`.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from functools import cache
from pathlib import Path
from typing import Any, Protocol, TextIO

import jsonschema

from facescreen.core.alerting import Alert

SCHEMA_DIR = Path(__file__).resolve().parents[3] / "schemas"


@cache
def validator(name: str) -> jsonschema.protocols.Validator:
    """A cached draft 2020-12 validator for `schemas/<name>.schema.json`."""
    schema = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


ALERT_SCHEMA_VERSION = 2


def _finite(value: float, digits: int) -> float:
    """A JSON-safe number: NaN or infinity here is a defect upstream, not something to send."""
    if not math.isfinite(value):
        raise ValueError(f"alert field is not finite: {value!r}")
    return round(float(value), digits)


def alert_to_event(alert: Alert, detector: str, embedder: str) -> dict[str, Any]:
    """One revision of an alert as its schema-version-2 JSON document."""
    ev = alert.evidence
    return {
        "schema_version": ALERT_SCHEMA_VERSION, "alert_id": alert.alert_id,
        "state": alert.state, "revision": alert.revision, "source": alert.source,
        "frame_index": alert.frame_index, "captured_at": _finite(alert.timestamp, 6),
        "emitted_at": round(time.time(), 6), "subject_id": alert.subject_id,
        "watchlist": alert.watchlist, "score": _finite(alert.score, 6),
        "threshold": _finite(alert.threshold, 6), "track_id": alert.track_id,
        "track_first_seen": _finite(alert.track_first_seen, 6),
        "box": [_finite(v, 1) for v in alert.box], "quality": _finite(alert.quality, 4),
        "evidence": {
            "frames_seen": ev.frames_seen, "faces_used": ev.faces_used,
            "best_quality": _finite(ev.best_quality, 4), "score_min": _finite(ev.score_min, 6),
            "score_mean": _finite(ev.score_mean, 6), "score_max": _finite(ev.score_max, 6),
            "searches": ev.searches,
            "margin": None if ev.margin is None else _finite(ev.margin, 6),
            "first_frame": ev.first_frame, "decided_frame": ev.decided_frame,
            "time_to_decision_s": _finite(max(0.0, ev.time_to_decision_s), 3),
        },
        "models": {"detector": detector, "embedder": embedder},
    }


class AlertSink(Protocol):
    """Where alert revisions go: JSON lines, the alert store, or both."""

    def write(self, event: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class JsonLinesSink:
    """Writes each alert event as one validated JSON line, flushed at once."""

    _fh: TextIO

    def __init__(self, out: Path | TextIO | None = None) -> None:
        """`out`: a file to append to, an open text stream, or None for stdout."""
        self._owned: TextIO | None = None
        if isinstance(out, Path):
            # Alerts name people: readable by the owner only, whatever the umask.
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.chmod(out, 0o600)
            self._owned = self._fh = os.fdopen(fd, "a")
        else:
            self._fh = out or sys.stdout

    def write(self, event: dict[str, Any]) -> None:
        validator("alert").validate(event)
        self._fh.write(json.dumps(event, sort_keys=True) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._owned is not None:
            self._owned.close()

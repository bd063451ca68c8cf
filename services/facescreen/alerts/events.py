"""Alert events: the JSON form, checked against `schemas/alert.schema.json`, and sinks."""

from __future__ import annotations

import json
import sys
import time
from functools import cache
from pathlib import Path
from typing import Any, TextIO

import jsonschema

from facescreen.core.screening import Alert

SCHEMA_DIR = Path(__file__).resolve().parents[3] / "schemas"


@cache
def validator(name: str) -> jsonschema.protocols.Validator:
    """A cached draft 2020-12 validator for `schemas/<name>.schema.json`."""
    schema = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def alert_to_event(alert: Alert, detector: str, embedder: str) -> dict[str, Any]:
    return {
        "schema_version": 1, "alert_id": alert.alert_id, "source": alert.source,
        "frame_index": alert.frame_index, "captured_at": alert.timestamp,
        "emitted_at": time.time(), "subject_id": alert.subject_id,
        "watchlist": alert.watchlist, "score": round(alert.score, 6),
        "threshold": alert.threshold, "track_id": alert.track_id,
        "track_first_seen": alert.track_first_seen,
        "box": [round(v, 1) for v in alert.box], "quality": round(alert.quality, 4),
        "models": {"detector": detector, "embedder": embedder},
    }


class JsonLinesSink:
    """Writes each alert event as one validated JSON line, flushed at once."""

    _fh: TextIO

    def __init__(self, out: Path | TextIO | None = None) -> None:
        """`out`: a file to append to, an open text stream, or None for stdout."""
        self._owned: TextIO | None = None
        if isinstance(out, Path):
            self._owned = self._fh = out.open("a")
        else:
            self._fh = out or sys.stdout

    def write(self, event: dict[str, Any]) -> None:
        validator("alert").validate(event)
        self._fh.write(json.dumps(event, sort_keys=True) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._owned is not None:
            self._owned.close()

"""Between alert events, table rows and records: validation, conversion, cursors.

An event is checked against `schemas/alert.schema.json` before it reaches the database,
and the error names the failing field and rule, never the value (a subject id is
personal data, and a dead letter's detail must not carry payload).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import uuid
from typing import Any

from facescreen.alerts.events import ALERT_SCHEMA_VERSION, validator
from facescreen.alerts.store.models import NAME, AlertRow
from facescreen.alerts.store.records import AlertRecord, InvalidAlert, InvalidCursor

# Columns an ingested revision sets; review state, crop and stored_at are the store's own.
EVENT_COLUMNS = ("source", "subject_id", "watchlist", "state", "revision", "score",
                 "threshold", "captured_at", "emitted_at", "track_id", "track_first_seen",
                 "frame_index", "box", "quality", "evidence", "models")
_CURSOR_PREFIX = "c1."
MAX_REVISION = 2**31 - 1  # the column is a 32-bit integer on PostgreSQL
_SURROGATE = re.compile("[\ud800-\udfff]")


def normal_id(alert_id: str) -> str | None:
    """The canonical (lower-case, hyphenated) form of a UUID, or None if it is not one."""
    if not isinstance(alert_id, str) or len(alert_id) > 64:
        return None
    try:
        return str(uuid.UUID(alert_id))
    except ValueError:
        return None


def _where(path: Any) -> str:
    return "/".join(str(p) for p in path) or "(document)"


def event_values(doc: Any) -> dict[str, Any]:
    """The column values of a valid schema-v2 alert event; InvalidAlert otherwise."""
    if not isinstance(doc, dict):
        raise InvalidAlert(f"an alert event is a JSON object, got {type(doc).__name__}")
    if doc.get("schema_version") != ALERT_SCHEMA_VERSION:
        raise InvalidAlert(f"alert schema_version must be {ALERT_SCHEMA_VERSION}")
    errors = sorted(validator("alert").iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        shown = "; ".join(f"{_where(e.absolute_path)}: fails {e.validator}" for e in errors[:3])
        raise InvalidAlert(f"alert event does not match schema v2: {shown}")
    for field in ("source", "subject_id", "watchlist"):
        if len(doc[field]) > NAME:
            raise InvalidAlert(f"alert {field} is longer than {NAME} characters")
    texts = [doc["source"], doc["subject_id"], doc["watchlist"], *doc["models"].values()]
    if any("\x00" in value for value in texts):  # PostgreSQL text cannot hold NUL
        raise InvalidAlert("alert text fields may not contain NUL characters")
    if any(_SURROGATE.search(value) for value in texts):  # JSON "\ud800": no encoding holds it
        raise InvalidAlert("alert text fields may not contain lone surrogates")
    if doc["revision"] > MAX_REVISION:
        raise InvalidAlert(f"alert revision exceeds {MAX_REVISION}")
    alert_id = normal_id(doc["alert_id"])
    if alert_id is None:
        raise InvalidAlert("alert_id is not a UUID")
    values = {column: doc[column] for column in EVENT_COLUMNS}
    values["alert_id"] = alert_id
    values["box"] = [float(v) for v in doc["box"]]
    return values


def to_event(row: AlertRow) -> dict[str, Any]:
    """The stored revision as its schema-v2 event document (what was ingested)."""
    doc = {"schema_version": ALERT_SCHEMA_VERSION, "alert_id": row.alert_id,
           "track_id": row.track_id, "models": dict(row.models)}
    for column in EVENT_COLUMNS:
        doc[column] = getattr(row, column)
    return doc


def to_record(row: AlertRow) -> AlertRecord:
    return AlertRecord(
        alert_id=row.alert_id, source=row.source, subject_id=row.subject_id,
        watchlist=row.watchlist, state=row.state,  # type: ignore[arg-type]
        revision=row.revision, score=row.score, threshold=row.threshold,
        captured_at=row.captured_at, emitted_at=row.emitted_at,
        track_first_seen=row.track_first_seen, frame_index=row.frame_index,
        box=list(row.box), quality=row.quality, evidence=dict(row.evidence),
        review=row.review,  # type: ignore[arg-type]
        reviewed_by=row.reviewed_by, reviewed_at=row.reviewed_at,
        review_comment=row.review_comment, crop_available=row.crop_path is not None)


def encode_cursor(emitted_at: float, alert_id: str) -> str:
    """An opaque cursor after the row with this sort key (emitted_at, alert_id)."""
    raw = json.dumps([emitted_at, alert_id], separators=(",", ":")).encode()
    return _CURSOR_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The sort key in a cursor from `encode_cursor`; InvalidCursor for anything else."""
    if not isinstance(cursor, str) or not cursor.startswith(_CURSOR_PREFIX) or len(cursor) > 200:
        raise InvalidCursor("invalid cursor: pass back the next_cursor of a previous page")
    body = cursor[len(_CURSOR_PREFIX):]
    try:
        key = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (binascii.Error, ValueError):
        raise InvalidCursor("invalid cursor: pass back the next_cursor of a previous page") from None
    if (not isinstance(key, list) or len(key) != 2 or not isinstance(key[0], int | float)
            or isinstance(key[0], bool) or not math.isfinite(key[0])
            or normal_id(key[1]) is None):
        raise InvalidCursor("invalid cursor: pass back the next_cursor of a previous page")
    return float(key[0]), str(key[1])

"""Reviewer feedback: its JSON form (`schemas/feedback.schema.json`) and the embedded log.

Distributed, a verdict is a message on the feedback topic, keyed by camera so it reaches
the matcher that holds that camera's tracks. Embedded, it is a line in the data
directory's `feedback.jsonl`, which a running pipeline reads within a second. Either
way the verdict is audited with the reviewer's name.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import jsonschema

from facescreen.alerts.events import validator
from facescreen.core.feedback import Feedback

FEEDBACK_SCHEMA_VERSION = 1
FEEDBACK_FILE = "feedback.jsonl"


class FeedbackError(ValueError):
    """A feedback document or request is not valid; the message says why."""


def new_feedback(alert_id: str, *, actor: str, comment: str = "",
                 camera: str | None = None) -> Feedback:
    """A 'not this person' verdict, checked against the schema before it goes anywhere."""
    try:
        alert_id = str(uuid.UUID(alert_id))
    except ValueError:
        raise FeedbackError(f"alert id {alert_id[:60]!r} is not a UUID") from None
    feedback = Feedback(feedback_id=str(uuid.uuid4()), alert_id=alert_id, camera=camera,
                        verdict="reject", actor=actor, comment=comment, created_at=time.time())
    feedback_from_doc(feedback_to_doc(feedback))
    return feedback


def feedback_to_doc(feedback: Feedback) -> dict[str, Any]:
    return {"schema_version": FEEDBACK_SCHEMA_VERSION, "feedback_id": feedback.feedback_id,
            "alert_id": feedback.alert_id, "camera": feedback.camera,
            "verdict": feedback.verdict, "actor": feedback.actor,
            "comment": feedback.comment, "created_at": feedback.created_at}


def feedback_from_doc(doc: Any) -> Feedback:
    """A validated Feedback, or FeedbackError naming the first problem (never the value)."""
    if not isinstance(doc, dict) or doc.get("schema_version") != FEEDBACK_SCHEMA_VERSION:
        raise FeedbackError(f"feedback schema version must be {FEEDBACK_SCHEMA_VERSION}")
    try:
        validator("feedback").validate(doc)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise FeedbackError(f"feedback {where}: fails {exc.validator!r}") from None
    return Feedback(feedback_id=doc["feedback_id"], alert_id=doc["alert_id"],
                    camera=doc["camera"], verdict=doc["verdict"], actor=doc["actor"],
                    comment=doc["comment"], created_at=float(doc["created_at"]))


class LocalFeedbackLog:
    """`feedback.jsonl` in a data directory: appended by the CLI, followed by the pipeline."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / FEEDBACK_FILE
        self._offset = 0

    def append(self, feedback: Feedback) -> None:
        line = json.dumps(feedback_to_doc(feedback), sort_keys=True) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as fh:
            fh.write(line)

    def skip_existing(self) -> None:
        """Start following from the end: verdicts given before this run were applied then."""
        self._offset = self.path.stat().st_size if self.path.exists() else 0

    def new(self) -> list[Feedback]:
        """Verdicts appended since the last call; a malformed line is skipped, not fatal."""
        if not self.path.exists():
            return []
        with self.path.open("rb") as fh:
            fh.seek(self._offset)
            data = fh.read()
        complete = data[:data.rfind(b"\n") + 1]
        self._offset += len(complete)
        out = []
        for line in complete.splitlines():
            try:
                out.append(feedback_from_doc(json.loads(line)))
            except (ValueError, FeedbackError):
                continue
        return out

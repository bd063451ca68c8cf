"""Alert events for the store tests, made the way the pipeline makes them (core `Alert`
through `alert_to_event`), so they are real schema-v2 documents."""

from __future__ import annotations

import uuid
from typing import Any

from facescreen.alerts.events import alert_to_event
from facescreen.core.alerting import Alert, AlertState, Evidence


def alert_event(alert_id: str | None = None, revision: int = 0, *, state: AlertState | None = None,
                source: str = "cam1", subject_id: str = "alice", watchlist: str = "vip",
                score: float = 0.72, emitted_at: float = 1_700_000_000.0,
                captured_at: float = 12.5, faces_used: int = 6) -> dict[str, Any]:
    """One revision of an alert; `emitted_at` is set (the pipeline stamps the clock)."""
    evidence = Evidence(frames_seen=faces_used + 3, faces_used=faces_used, best_quality=0.8,
                        score_min=min(score, 0.61), score_mean=score, score_max=score,
                        searches=max(1, faces_used), margin=0.2, first_frame=3,
                        decided_frame=8, time_to_decision_s=0.4)
    alert = Alert(alert_id=alert_id or str(uuid.uuid4()),
                  state=state or ("open" if revision == 0 else "update"), revision=revision,
                  source=source, frame_index=8 + revision, timestamp=captured_at, track_id=1,
                  subject_id=subject_id, watchlist=watchlist, score=score, threshold=0.6,
                  box=(10.0, 20.0, 110.0, 140.0), quality=0.8, track_first_seen=12.1,
                  evidence=evidence)
    doc = alert_to_event(alert, "centerface", "dlib-resnet29-128")
    doc["emitted_at"] = emitted_at
    return doc


JPEG = b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF" + bytes(range(256)) + b"\xff\xd9"  # bytes of a JPEG

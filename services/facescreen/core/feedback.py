"""A reviewer's verdict on an alert, as the matcher applies it.

"Not this person" on an alert must change what the matcher does next, not only what a
dashboard shows: the track that raised the alert stops alerting for that subject, and
faces on that camera that look like the rejected track (a second passage of the same
stranger) are not alerted for that subject for a while. Pure data; the codecs and the
stores that carry it live in `facescreen.alerts.feedback`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Verdict = Literal["reject"]


@dataclass(frozen=True)
class Feedback:
    """One verdict on one alert, by a named person.

    `camera` routes the verdict to the matcher that holds the camera's state (the feedback
    topic is keyed and partitioned like the faces topic); in embedded mode every source's
    screener is asked, so it may be None there.
    """

    feedback_id: str
    alert_id: str
    camera: str | None
    verdict: Verdict
    actor: str
    comment: str
    created_at: float


@dataclass(frozen=True)
class Suppression:
    """Faces on this camera within `similarity` of `identity` do not alert for the subject."""

    subject_id: str
    watchlist: str
    identity: tuple[float, ...]  # the rejected track's voted embedding (biometric: state only)
    until: float  # in the camera's clock (frame timestamps)

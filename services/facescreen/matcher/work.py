"""The matcher's work on one face event, free of Faust: admit, screen, make the alerts.

Whatever goes wrong with one message ends as that message's dead letter, never as an
exception that stops the worker: a message that breaks a limit or fails plausibility
(`facescreen.bus.entry`), a seq jump (`matcher.state`), an exception while screening it
(`internal_error`; the camera's state is dropped, as it may be half-updated), or an
alert that fails its own schema (`invalid_output`; the other alerts of the event still
go out). Only the watchlist store being away stops the line (`PatientSearch` waits).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from facescreen.alerts.events import ALERT_SCHEMA_VERSION, alert_to_event, validator
from facescreen.bus.codecs import FaceEvent, dumps
from facescreen.bus.deadletter import DeadLetter, MessageRef, failure_letter
from facescreen.bus.entry import FaceEventPolicy, check_face_event
from facescreen.core.alerting import Alert
from facescreen.core.screening import ScreeningPolicy, SearchFn, SourceScreener
from facescreen.matcher.state import ScreenerStates, SeqPolicy

log = logging.getLogger("facescreen.matcher.work")
ALERT_HEADERS = [("schema_version", str(ALERT_SCHEMA_VERSION).encode()),
                 ("content_type", b"application/json")]


class StoppingError(RuntimeError):
    """The service stops while waiting for the watchlist store to come back."""


@dataclass(frozen=True)
class AlertOut:
    """One alert revision, encoded and validated, ready for the alerts topic."""

    key: bytes
    value: bytes
    alert_id: str
    state: str
    watchlist: str
    subject: str


@dataclass
class Outcome:
    """What became of one face event: alerts to send, a dead letter, or a skipped repeat."""

    alerts: list[AlertOut] = field(default_factory=list)
    letter: DeadLetter | None = None
    duplicate: bool = False
    camera: str | None = None  # set once the event parsed


class FaceEventMatcher:
    """Face events in, alert revisions out; one `ScreenerStates` for every camera."""

    def __init__(self, search: SearchFn, thresholds: Mapping[str, float], *, embedder: str,
                 dim: int, policy: ScreeningPolicy | None = None,
                 limits: FaceEventPolicy | None = None, seq: SeqPolicy | None = None) -> None:
        self.embedder = embedder
        self.dim = dim
        self.search = search
        self.thresholds = thresholds
        self.policy = policy or ScreeningPolicy()
        self.limits = limits or FaceEventPolicy()
        self.states = ScreenerStates(self.new_screener, seq or SeqPolicy())

    def new_screener(self, camera: str) -> SourceScreener:
        return SourceScreener(camera, self.search, self.thresholds, self.policy)

    def process(self, ref: MessageRef) -> Outcome:
        """Everything about one face event; raises only StoppingError (service stopping)."""
        outcome = Outcome()
        try:
            event = check_face_event(ref, self.embedder, self.dim, self.limits)
            outcome.camera = event.camera
            if not self.states.admit(event):
                outcome.duplicate = True
                return outcome
        except DeadLetter as letter:
            outcome.letter = letter
            return outcome
        except StoppingError:
            raise
        except Exception as exc:  # a defect of ours: the message is only the trigger
            outcome.letter = self._failed("admission", ref, exc)
            return outcome
        try:
            alerts = self._screen(event)
        except StoppingError:
            raise
        except Exception as exc:
            self.states.forget(event.camera)
            outcome.letter = self._failed("screening", ref, exc)
            return outcome
        for alert in alerts:
            try:
                outcome.alerts.append(self._encode(alert, event))
            except Exception as exc:
                outcome.letter = outcome.letter or self._failed("alert", ref, exc)
        return outcome

    def _screen(self, event: FaceEvent) -> list[Alert]:
        screener = self.states.screener_for(event)
        _, alerts = screener.screen(event.faces, event.frame_index, event.captured_at)
        self.states.screened(event)
        return list(alerts)

    def _encode(self, alert: Alert, event: FaceEvent) -> AlertOut:
        doc = alert_to_event(alert, event.detector, event.embedder)
        validator("alert").validate(doc)
        return AlertOut(key=doc["source"].encode(), value=dumps(doc), alert_id=doc["alert_id"],
                        state=doc["state"], watchlist=doc["watchlist"],
                        subject=doc["subject_id"])

    @staticmethod
    def _failed(stage: str, ref: MessageRef, exc: Exception) -> DeadLetter:
        letter = failure_letter(exc)
        log.error("message failed", exc_info=exc, extra={"fields": {
            "stage": stage, "reason": letter.reason, "topic": ref.topic,
            "partition": ref.partition, "offset": ref.offset}})
        return letter

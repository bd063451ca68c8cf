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
from facescreen.alerts.feedback import FeedbackError, feedback_from_doc
from facescreen.bus.codecs import FaceEvent, dumps
from facescreen.bus.deadletter import DeadLetter, MessageRef, failure_letter
from facescreen.bus.entry import FaceEventPolicy, check_face_event
from facescreen.bus.safejson import JsonLimitError, loads_bounded
from facescreen.core.alerting import Alert
from facescreen.core.feedback import Feedback
from facescreen.core.screening import ScreeningPolicy, SearchFn, SourceScreener
from facescreen.matcher.state import CameraState, ScreenerStates, SeqPolicy

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
    state: bytes | None = None  # the camera's state to save, when it changed
    applied: bool = False  # feedback only: the camera's screener knew the alert


class _Keep:
    """Use the live state as it is: no table behind the matcher (tests, tools)."""


KEEP = _Keep()
MAX_FEEDBACK_BYTES = 65_536


def parse_feedback(ref: MessageRef) -> Feedback:
    """A feedback message's verdict, checked at bounded cost; DeadLetter if it is unusable."""
    value = ref.value or b""
    if len(value) > MAX_FEEDBACK_BYTES:
        raise DeadLetter("oversized", f"feedback of {len(value):,} bytes exceeds "
                         f"{MAX_FEEDBACK_BYTES:,}")
    try:
        doc = loads_bounded(value, max_depth=4)
    except JsonLimitError as exc:
        raise DeadLetter(exc.reason, str(exc)) from None
    except ValueError as exc:
        raise DeadLetter("invalid_json", f"not JSON: {type(exc).__name__}") from None
    try:
        verdict = feedback_from_doc(doc)
    except FeedbackError as exc:
        raise DeadLetter("invalid_feedback", str(exc)) from None
    if verdict.camera is None:
        raise DeadLetter("invalid_feedback", "feedback on the topic must name its camera")
    if ref.key is None or ref.key.decode("utf-8", "replace") != verdict.camera:
        raise DeadLetter("key_mismatch", f"message key does not name camera "
                         f"{verdict.camera[:64]!r}")
    return verdict


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
        self.states = ScreenerStates(self.new_screener, seq or SeqPolicy(), loader=self.load)
        self.clear_pending = False  # set from the event loop on a rebalance

    def new_screener(self, camera: str) -> SourceScreener:
        return SourceScreener(camera, self.search, self.thresholds, self.policy)

    def load(self, data: bytes) -> CameraState:
        return CameraState.from_bytes(data, self.search, self.thresholds, self.policy)

    def _sync(self, camera: str, stored: bytes | _Keep | None) -> None:
        if self.clear_pending:
            self.clear_pending = False
            self.states.clear()
        if not isinstance(stored, _Keep):
            self.states.sync(camera, stored)

    def process(self, ref: MessageRef, stored: bytes | _Keep | None = KEEP) -> Outcome:
        """Everything about one face event; raises only StoppingError (service stopping).

        `stored`: the table's value for the message's camera (None: none), or KEEP to
        use the live state as it is (no table). `Outcome.state` is the value to save.
        """
        outcome = Outcome()
        try:
            event = check_face_event(ref, self.embedder, self.dim, self.limits)
            outcome.camera = event.camera
            self._sync(event.camera, stored)
            admitted = self.states.admit(event)
        except DeadLetter as letter:
            outcome.letter = letter
            if outcome.camera is not None:  # a seq jump is remembered (see admit)
                outcome.state = self.states.snapshot(outcome.camera)
            return outcome
        except StoppingError:
            raise
        except Exception as exc:  # a defect of ours: the message is only the trigger
            if outcome.camera is not None:
                self.states.forget(outcome.camera)
            outcome.letter = self._failed("admission", ref, exc)
            return outcome
        if not admitted:
            outcome.duplicate = True
            return outcome
        try:
            alerts = self._screen(event)
            outcome.state = self.states.snapshot(event.camera)
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

    def feedback(self, ref: MessageRef, stored: bytes | _Keep | None = KEEP) -> Outcome:
        """A reviewer's verdict for its camera's screener; `Outcome.applied` says whether
        that screener knew the alert (False also when the camera has no state here)."""
        outcome = Outcome()
        try:
            verdict = parse_feedback(ref)
            camera = outcome.camera = verdict.camera or ""
            self._sync(camera, stored)
            state = self.states.cameras.get(camera)
            if state is not None and state.screener.apply_feedback(verdict):
                outcome.applied = True
                outcome.state = self.states.snapshot(camera)
        except DeadLetter as letter:
            outcome.letter = letter
        except Exception as exc:
            if outcome.camera:
                self.states.forget(outcome.camera)
            outcome.letter = self._failed("feedback", ref, exc)
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

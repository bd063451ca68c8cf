"""Webhook delivery of alert events: signed, idempotent, retried, and "dead" when never taken.

A receiver must be able to tell three things, and the headers carry each:
- the event is ours: `X-Facescreen-Signature: sha256=<hex HMAC-SHA256(secret, "<ts>.<body>")>`;
- it is fresh: the timestamp is inside the signed text and `verify_signature` refuses one older
  (or further ahead) than `max_age_s`, so a captured request cannot be replayed later;
- it already has it: `Idempotency-Key: <alert_id>:<revision>` is the same on every attempt,
  because an attempt that timed out here may well have arrived there.
Each attempt is signed afresh (new timestamp, same body), so a slow retry stays verifiable.

Retries use exponential back-off with jitter (many senders retrying a receiver that just came
back must not arrive in lockstep) and honour `Retry-After` up to the back-off ceiling. Server
errors, 408, 425, 429 and transport errors are retried; any other non-2xx answer is the
receiver refusing this payload, which an identical retry cannot change, so it is dead at once.
Nothing secret or biometric is logged: routes by watchlist name, errors by class or status.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from facescreen.alerts.events import validator
from facescreen.alerts.webhook_routes import WebhookRoute

log = logging.getLogger("facescreen.webhooks")

TIMESTAMP_HEADER = "X-Facescreen-Timestamp"
SIGNATURE_HEADER = "X-Facescreen-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
_RETRIED_STATUS = frozenset({408, 425, 429})

DeliveryStatus = Literal["pending", "delivered", "dead"]


def encode_body(event: Mapping[str, Any]) -> bytes:
    """The exact bytes sent (and signed): compact, key-sorted JSON, so a revision always
    encodes the same way."""
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _key(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def sign(secret: str | bytes, timestamp: int | str, body: bytes) -> str:
    """The signature header value for `body` sent at `timestamp` (Unix seconds)."""
    mac = hmac.new(_key(secret), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify_signature(secret: str | bytes, timestamp: str | int | None, body: bytes, header: str | None,
                     max_age_s: float, now: float | None = None) -> bool:
    """For receivers: True only if `header` signs exactly `body` at `timestamp` with `secret`
    and `timestamp` is within `max_age_s` of `now` (either way: a clock far ahead is as
    suspicious as a replay). Never raises on malformed input; it is just refused."""
    if header is None or timestamp is None:
        return False
    ts_text = str(timestamp).strip()
    if not ts_text.isascii() or not ts_text.isdigit() or len(ts_text) > 12:
        return False
    current = time.time() if now is None else now
    if abs(current - int(ts_text)) > max_age_s:
        return False
    expected = sign(secret, ts_text, body)
    return hmac.compare_digest(expected.encode(), header.strip().encode("utf-8", "replace"))


@dataclass
class DeliveryOutcome:
    """One delivery of one alert revision to one route; the webhook deliveries table's row."""

    alert_id: str
    revision: int
    route: str
    url: str
    created_at: float
    status: DeliveryStatus = "pending"
    attempts: int = 0
    last_error: str | None = None
    next_attempt_at: float | None = None
    http_status: int | None = None
    id: int | None = None  # the recorder's key for it (the store's row id)

    @property
    def idempotency_key(self) -> str:
        return f"{self.alert_id}:{self.revision}"


class DeliveryRecorder(Protocol):
    """Keeps the state of deliveries, keyed by (alert_id, revision, route)."""

    def begin(self, outcome: DeliveryOutcome) -> DeliveryOutcome:
        """Register a delivery about to start; returns the state already recorded for its
        key if there is one (a redelivered event: maybe delivered already, or part-tried)."""
        ...

    def record(self, outcome: DeliveryOutcome) -> None:
        """Keep the state after a failed attempt and at the end."""
        ...


@dataclass
class MemoryRecorder:
    """Deliveries in memory, with every recorded state in order (embedded default, tests)."""

    history: list[DeliveryOutcome] = field(default_factory=list)
    latest: dict[str, DeliveryOutcome] = field(default_factory=dict)

    def begin(self, outcome: DeliveryOutcome) -> DeliveryOutcome:
        key = f"{outcome.idempotency_key}:{outcome.route}"
        known = self.latest.get(key)
        if known is not None:
            return replace(known)
        self.record(outcome)
        return outcome

    def record(self, outcome: DeliveryOutcome) -> None:
        self.history.append(replace(outcome))
        self.latest[f"{outcome.idempotency_key}:{outcome.route}"] = replace(outcome)


class _RetryableError(Exception):
    def __init__(self, error: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(error)
        self.error, self.status, self.retry_after = error, status, retry_after


class _RefusedError(Exception):
    def __init__(self, error: str, status: int) -> None:
        super().__init__(error)
        self.error, self.status = error, status


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    return float(value) if value.isdigit() else None


class WebhookSender:
    """Delivers alert events to the route of their watchlist (synchronously, with retries)."""

    def __init__(self, routes: Mapping[str, WebhookRoute], *, recorder: DeliveryRecorder | None = None,
                 client: httpx.Client | None = None, max_attempts: int = 5, initial_wait_s: float = 1.0,
                 max_wait_s: float = 60.0, jitter_s: float = 1.0, timeout_s: float = 10.0,
                 on_dead: Callable[[DeliveryOutcome], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.routes = dict(routes)
        self.recorder: DeliveryRecorder = recorder or MemoryRecorder()
        self._client = client or httpx.Client(follow_redirects=False)
        self._owns_client = client is None
        self._max_attempts, self._timeout_s = max_attempts, timeout_s
        self._max_wait_s = max_wait_s
        self._backoff = wait_exponential_jitter(multiplier=initial_wait_s, max=max_wait_s, jitter=jitter_s)
        self._on_dead, self._sleep, self._clock = on_dead, sleep, clock

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> WebhookSender:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def deliver(self, event: Mapping[str, Any]) -> DeliveryOutcome | None:
        """Send one alert event (schema v2, checked first) to its watchlist's route; None when
        the watchlist has no route. Returns once it is delivered or dead."""
        validator("alert").validate(dict(event))
        route = self.routes.get(str(event["watchlist"]))
        if route is None:
            return None
        outcome = self.recorder.begin(DeliveryOutcome(
            alert_id=str(event["alert_id"]), revision=int(event["revision"]), route=route.watchlist,
            url=route.url, created_at=self._clock()))
        if outcome.status != "pending":
            return outcome  # already delivered (or dead): never sent twice from here
        body = encode_body(event)
        attempts = route.max_attempts or self._max_attempts
        done = outcome.attempts  # a resumed delivery has fewer attempts left
        retrying = Retrying(
            stop=stop_after_attempt(max(1, attempts - done)), wait=self._wait, sleep=self._sleep,
            retry=retry_if_exception_type(_RetryableError), reraise=True,
            before_sleep=lambda state: self._failed(outcome, state, attempts))
        try:
            if done >= attempts:
                raise _RetryableError(outcome.last_error or "no attempts left")
            for attempt in retrying:
                with attempt:
                    outcome.attempts = done + attempt.retry_state.attempt_number
                    self._attempt(route, outcome, body)
        except (_RetryableError, _RefusedError) as exc:
            outcome.status, outcome.last_error, outcome.http_status = "dead", exc.error, exc.status
            outcome.next_attempt_at = None
            self.recorder.record(outcome)
            log.warning("webhook dead: alert %s rev %d route %s after %d attempt(s): %s",
                        outcome.alert_id, outcome.revision, outcome.route, outcome.attempts, exc.error)
            if self._on_dead is not None:
                self._on_dead(replace(outcome))
            return outcome
        outcome.status, outcome.next_attempt_at = "delivered", None
        self.recorder.record(outcome)
        log.info("webhook delivered: alert %s rev %d route %s in %d attempt(s)",
                 outcome.alert_id, outcome.revision, outcome.route, outcome.attempts)
        return outcome

    def _attempt(self, route: WebhookRoute, outcome: DeliveryOutcome, body: bytes) -> None:
        timestamp = str(int(self._clock()))
        headers = {
            "Content-Type": "application/json", TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(route.secret, timestamp, body),
            IDEMPOTENCY_HEADER: outcome.idempotency_key, "User-Agent": "facescreen-webhooks/1",
        }
        try:
            response = self._client.post(route.url, content=body, headers=headers,
                                         timeout=route.timeout_s or self._timeout_s)
        except httpx.TransportError as exc:
            raise _RetryableError(type(exc).__name__) from None
        outcome.http_status = response.status_code
        if 200 <= response.status_code < 300:
            outcome.last_error = None
            return
        error = f"HTTP {response.status_code}"
        if response.status_code >= 500 or response.status_code in _RETRIED_STATUS:
            raise _RetryableError(error, response.status_code, _retry_after(response))
        raise _RefusedError(f"{error} (refused, not retried)", response.status_code)

    def _wait(self, state: RetryCallState) -> float:
        wait = float(self._backoff(state))
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, _RetryableError) and exc.retry_after is not None:
            wait = max(wait, min(exc.retry_after, self._max_wait_s))
        return wait

    def _failed(self, outcome: DeliveryOutcome, state: RetryCallState, attempts: int) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        error = exc.error if isinstance(exc, _RetryableError) else type(exc).__name__
        outcome.last_error = error
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        outcome.next_attempt_at = self._clock() + wait
        self.recorder.record(outcome)
        log.warning("webhook attempt %d/%d failed: alert %s rev %d route %s: %s; retry in %.2fs",
                    outcome.attempts, attempts, outcome.alert_id, outcome.revision, outcome.route,
                    error, wait)

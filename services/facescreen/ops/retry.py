"""Retries by policy, in one place (tenacity): what is retried, how long to wait, who knows.

An error is either *transient* (infrastructure away: the inference server, the watchlist
store, the database, the broker) or *permanent* (this input or this request is at fault).
A transient one is retried with capped exponential back-off and jitter, so that many
workers retrying a server that has just come back do not hit it in step; a permanent one
is raised at once (the caller dead-letters or fails fast). Each policy says which is
which through its `transient` predicate, since only the caller knows its errors.

While an operation retries, the service's `Readiness` shows it under `retrying` (attempts,
masked error, since when) and its readiness check, if it has one, is false; the first
success clears both. Every retry logs one warning line with the delay chosen.

    wait(n) = min(max_s, initial_s * 2 ** (n - 1)) * uniform(1 - jitter, 1)

The upper bound is the plain exponential; `jitter` is the share of it that is random
("equal jitter" at 0.5: never less than half, so back-off still grows).
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_never,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from facescreen.ops.health import Readiness
from facescreen.ops.logs import redact

log = logging.getLogger("facescreen.retry")
T = TypeVar("T")
MAX_ERROR_CHARS = 200


class RetryStoppedError(RuntimeError):
    """The service is stopping while an operation waits for its next attempt."""


@dataclass(frozen=True)
class Backoff:
    """Capped exponential back-off with jitter (see the module docstring)."""

    initial_s: float = 0.5
    max_s: float = 30.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.initial_s <= 0 or self.max_s < self.initial_s or not 0 <= self.jitter <= 1:
            raise ValueError("back-off needs 0 < initial_s <= max_s and 0 <= jitter <= 1")

    def bounds(self, attempt: int) -> tuple[float, float]:
        """The lowest and highest wait after failed attempt number `attempt` (1-based)."""
        high = min(self.max_s, self.initial_s * 2 ** min(max(attempt, 1) - 1, 30))
        return high * (1 - self.jitter), high

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        low, high = self.bounds(attempt)
        return (rng or random).uniform(low, high)


class _Wait(wait_base):
    def __init__(self, backoff: Backoff) -> None:
        self.backoff = backoff

    def __call__(self, retry_state: RetryCallState) -> float:
        return self.backoff.delay(retry_state.attempt_number)


@dataclass(frozen=True)
class RetryPolicy:
    """How one kind of operation is retried.

    `transient` decides per exception; anything else is raised at once. `attempts` None
    retries for ever (a line that must not skip work waits for its dependency); a number
    bounds it, after which the last error is raised.
    """

    name: str
    transient: Callable[[BaseException], bool]
    backoff: Backoff = Backoff()
    attempts: int | None = None

    def _stop(self) -> stop_base:
        return stop_never if self.attempts is None else stop_after_attempt(self.attempts)


INFRA_MAX_S = 5.0
"""The longest wait between attempts at a dependency that is away. A worker waiting on one
does nothing else, an attempt is one cheap request, and the wait after the dependency is
back adds to every recovery (the chaos tests measured Triton found 13 s late with 30 s)."""


def infrastructure(transient: Callable[[BaseException], bool], *, max_s: float = INFRA_MAX_S,
                   name: str = "infrastructure") -> RetryPolicy:
    """Dependencies that come back by themselves: retried for ever, 0.5 s doubling to max_s."""
    return RetryPolicy(name, transient, Backoff(0.5, max_s, 0.5))


def bounded(transient: Callable[[BaseException], bool], attempts: int, *,
            initial_s: float = 1.0, max_s: float = 5.0, name: str = "bounded") -> RetryPolicy:
    """A few attempts, then the caller's own failure path (e.g. stop: no progress)."""
    return RetryPolicy(name, transient, Backoff(initial_s, max_s, 0.5), attempts)


def describe(exc: BaseException) -> str:
    """Type and message, masked (credentials in URLs, tokens) and short: fit for /readyz."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return redact(text)[:MAX_ERROR_CHARS]


class _Reporter:
    """Log lines and readiness updates of one operation's retries."""

    def __init__(self, policy: RetryPolicy, operation: str, readiness: Readiness | None,
                 check: str | None, confirm: bool = True) -> None:
        self.policy, self.operation = policy, operation
        self.readiness, self.check, self.confirm = readiness, check, confirm

    def failed(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        error = describe(exc) if exc is not None else "unknown"
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        if self.readiness is not None:
            self.readiness.retrying(self.operation, state.attempt_number, error)
            if self.check is not None:
                self.readiness.mark(self.check, False)
        log.warning("retrying", extra={"fields": {
            "operation": self.operation, "policy": self.policy.name,
            "attempt": state.attempt_number, "error": error, "delay_s": round(delay, 2)}})

    def succeeded(self, attempts: int) -> None:
        if self.readiness is not None:
            self.readiness.recovered(self.operation)
            if self.check is not None and (self.confirm or attempts > 1):
                self.readiness.mark(self.check, True)
        if attempts > 1:
            log.info("recovered", extra={"fields": {"operation": self.operation,
                                                    "attempts": attempts}})

    def gave_up(self) -> None:
        if self.readiness is not None:
            self.readiness.recovered(self.operation)  # no longer retrying: the caller acts


async def call_async(policy: RetryPolicy, operation: str, call: Callable[[], Awaitable[T]],
                     *, readiness: Readiness | None = None, check: str | None = None,
                     confirm: bool = True) -> T:
    """Await `call()` under `policy`; returns its result or raises its last error.

    `check` is the readiness check that is false while retrying; a success marks it true
    again, even a first-attempt one unless `confirm` is false (the check is then only
    restored after failures: it may be someone else's to set).
    """
    reporter = _Reporter(policy, operation, readiness, check, confirm)
    retrying = AsyncRetrying(**_tenacity(policy), before_sleep=reporter.failed)
    try:
        async for attempt in retrying:
            with attempt:
                result = await call()
            outcome = attempt.retry_state.outcome
            if outcome is not None and not outcome.failed:
                reporter.succeeded(attempt.retry_state.attempt_number)
                return result
    except BaseException:
        reporter.gave_up()
        raise
    raise AssertionError("unreachable: tenacity re-raises or returns")  # pragma: no cover


def _tenacity(policy: RetryPolicy) -> dict[str, Any]:
    """What `call_async` and `call_sync` give tenacity alike: stop, wait, what is retried."""
    return {"stop": policy._stop(), "wait": _Wait(policy.backoff),
            "retry": retry_if_exception(policy.transient), "reraise": True}


def call_sync(policy: RetryPolicy, operation: str, call: Callable[[], T], *,
              readiness: Readiness | None = None, check: str | None = None,
              confirm: bool = True, stopping: threading.Event | None = None) -> T:
    """`call()` under `policy` in this thread (see `call_async`). Waits end early when
    `stopping` is set, raising RetryStoppedError (chained to the last error)."""
    reporter = _Reporter(policy, operation, readiness, check, confirm)
    last: list[BaseException] = []

    def sleep(seconds: float) -> None:
        if stopping is None:
            threading.Event().wait(seconds)
        elif stopping.wait(seconds):
            raise RetryStoppedError(f"stopped while retrying {operation}") from (
                last[-1] if last else None)

    def remember(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        if exc is not None:
            last.append(exc)
        reporter.failed(state)

    retrying = Retrying(**_tenacity(policy), sleep=sleep, before_sleep=remember)
    try:
        for attempt in retrying:
            with attempt:
                result = call()
            outcome = attempt.retry_state.outcome
            if outcome is not None and not outcome.failed:
                reporter.succeeded(attempt.retry_state.attempt_number)
                return result
    except BaseException:
        reporter.gave_up()
        raise
    raise AssertionError("unreachable: tenacity re-raises or returns")  # pragma: no cover


class Schedule:
    """Back-off for loops that retry by themselves (poll, rewind, wait): `next()` gives the
    wait after one more failure and reports it; `reset()` after a success."""

    def __init__(self, policy: RetryPolicy, operation: str, *,
                 readiness: Readiness | None = None, check: str | None = None) -> None:
        self.policy, self.operation = policy, operation
        self.readiness, self.check = readiness, check
        self.attempts = 0

    def failed(self, exc: BaseException) -> float:
        self.attempts += 1
        delay = self.policy.backoff.delay(self.attempts)
        error = describe(exc)
        if self.readiness is not None:
            self.readiness.retrying(self.operation, self.attempts, error)
            if self.check is not None:
                self.readiness.mark(self.check, False)
        log.warning("retrying", extra={"fields": {
            "operation": self.operation, "policy": self.policy.name,
            "attempt": self.attempts, "error": error, "delay_s": round(delay, 2)}})
        return delay

    def succeeded(self) -> None:
        if self.readiness is not None:
            self.readiness.recovered(self.operation)
            if self.check is not None:
                self.readiness.mark(self.check, True)
        if self.attempts:
            log.info("recovered", extra={"fields": {"operation": self.operation,
                                                    "attempts": self.attempts + 1}})
        self.attempts = 0

"""Retry policies (tenacity): jitter bounds, permanent errors not retried, what /readyz shows."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from facescreen.ops.health import HealthServer, Readiness
from facescreen.ops.retry import (
    Backoff,
    RetryPolicy,
    RetryStoppedError,
    Schedule,
    bounded,
    call_async,
    call_sync,
    describe,
)


class UnavailableError(ConnectionError):
    pass


def transient(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionError)


class Flaky:
    """Fails with `error` `failures` times, then answers 42; records each attempt."""

    def __init__(self, failures: int, error: BaseException | None = None) -> None:
        self.failures = failures
        self.error = error or UnavailableError("server at 10.0.0.1:8001 is down")
        self.calls: list[float] = []

    def __call__(self) -> int:
        self.calls.append(time.monotonic())
        if len(self.calls) <= self.failures:
            raise self.error
        return 42


FAST = RetryPolicy("fast", transient, Backoff(0.01, 0.04, 0.5))


@pytest.mark.parametrize("backoff", [Backoff(0.5, 30.0, 0.5), Backoff(1.0, 5.0, 1.0),
                                     Backoff(0.1, 0.1, 0.0)])
def test_every_wait_lies_in_its_jitter_bounds_and_the_cap_holds(backoff: Backoff) -> None:
    rng = random.Random(7)
    for attempt in range(1, 40):
        low, high = backoff.bounds(attempt)
        assert high == min(backoff.max_s, backoff.initial_s * 2 ** (attempt - 1))
        assert low == pytest.approx(high * (1 - backoff.jitter))
        waits = [backoff.delay(attempt, rng) for _ in range(200)]
        assert all(low <= w <= high for w in waits)
        if backoff.jitter:  # jittered: workers retrying together do not stay in step
            assert max(waits) - min(waits) > 0.5 * (high - low)
        else:
            assert set(waits) == {high}


def test_a_backoff_refuses_nonsense() -> None:
    for args in ((0.0, 1.0, 0.5), (2.0, 1.0, 0.5), (0.5, 1.0, 1.5), (0.5, 1.0, -0.1)):
        with pytest.raises(ValueError):
            Backoff(*args)


def test_transient_errors_are_retried_and_shown_until_the_call_succeeds(
        caplog: pytest.LogCaptureFixture) -> None:
    readiness = Readiness("inference")
    seen: list[dict[str, Any]] = []
    flaky = Flaky(3)

    def call() -> int:
        seen.append(readiness.report())
        return flaky()

    with caplog.at_level("WARNING", logger="facescreen.retry"):
        assert call_sync(FAST, "inference", call, readiness=readiness, check="inference") == 42
    assert len(flaky.calls) == 4
    during = seen[3]  # the fourth attempt sees three failures
    assert during["ready"] is False and during["checks"] == {"inference": False}
    assert during["retrying"]["inference"]["attempts"] == 3
    assert during["retrying"]["inference"]["error"] == "UnavailableError: server at 10.0.0.1:8001 is down"
    assert during["retrying"]["inference"]["since"].endswith("Z")
    after = readiness.report()
    assert after == {"ready": True, "checks": {"inference": True}}
    delays = [(getattr(r, "fields")["attempt"], getattr(r, "fields")["delay_s"])  # noqa: B009
              for r in caplog.records if r.msg == "retrying"]
    assert [a for a, _ in delays] == [1, 2, 3]
    for attempt, delay in delays:
        low, high = FAST.backoff.bounds(attempt)
        assert round(low, 2) <= delay <= round(high, 2)
    gaps = [b - a for a, b in zip(flaky.calls, flaky.calls[1:], strict=False)]
    assert all(gap >= FAST.backoff.bounds(i + 1)[0] * 0.9 for i, gap in enumerate(gaps))


def test_a_permanent_error_is_raised_at_once_and_not_shown_as_retrying() -> None:
    readiness = Readiness("inference")
    readiness.mark("inference", True)
    flaky = Flaky(5, ValueError("this frame is at fault"))
    with pytest.raises(ValueError, match="at fault"):
        call_sync(FAST, "inference", flaky, readiness=readiness, check="inference")
    assert len(flaky.calls) == 1
    assert readiness.report() == {"ready": True, "checks": {"inference": True}}


def test_a_bounded_policy_gives_up_with_the_last_error() -> None:
    readiness = Readiness()
    flaky = Flaky(10)
    policy = bounded(transient, 3, initial_s=0.01, max_s=0.02)
    with pytest.raises(UnavailableError):
        call_sync(policy, "send", flaky, readiness=readiness, check="progress", confirm=False)
    assert len(flaky.calls) == 3
    report = readiness.report()
    assert report["checks"] == {"progress": False} and "retrying" not in report


def test_stopping_ends_the_wait_at_once() -> None:
    stopping = threading.Event()
    flaky = Flaky(1000)
    threading.Timer(0.3, stopping.set).start()
    started = time.monotonic()
    with pytest.raises(RetryStoppedError) as info:
        call_sync(RetryPolicy("slow", transient, Backoff(30.0, 60.0, 0.0)), "search", flaky,
                  stopping=stopping)
    assert time.monotonic() - started < 5
    assert isinstance(info.value.__cause__, UnavailableError)


def test_the_async_form_retries_transient_and_raises_permanent_errors() -> None:
    readiness = Readiness("watchlist")

    async def run() -> int:
        flaky = Flaky(2)

        async def call() -> int:
            return flaky()

        result = await call_async(FAST, "search", call, readiness=readiness, check="watchlist")
        assert len(flaky.calls) == 3
        broken = Flaky(3, KeyError("bug"))

        async def call_broken() -> int:
            return broken()

        with pytest.raises(KeyError):
            await call_async(FAST, "search", call_broken, readiness=readiness)
        assert len(broken.calls) == 1
        return result

    assert asyncio.run(run()) == 42
    assert readiness.report() == {"ready": True, "checks": {"watchlist": True}}


def test_errors_are_masked_and_short() -> None:
    exc = ConnectionError("postgresql://facescreen:hunter2@db:5432/alerts refused; "
                          "Authorization: Bearer abc.def.ghi " + "x" * 500)
    text = describe(exc)
    assert "hunter2" not in text and "abc.def.ghi" not in text
    assert text.startswith("ConnectionError: postgresql://") and len(text) <= 200


def test_a_schedule_backs_off_and_resets() -> None:
    readiness = Readiness("database")
    schedule = Schedule(RetryPolicy("db", transient, Backoff(0.1, 0.4, 0.5)), "database",
                        readiness=readiness, check="database")
    waits = [schedule.failed(UnavailableError("down")) for _ in range(5)]
    for attempt, wait in enumerate(waits, 1):
        low, high = schedule.policy.backoff.bounds(attempt)
        assert low <= wait <= high
    assert readiness.report()["retrying"]["database"]["attempts"] == 5
    schedule.succeeded()
    assert readiness.report() == {"ready": True, "checks": {"database": True}}
    assert schedule.failed(UnavailableError("down")) <= 0.1


def test_waiting_without_progress_turns_progress_false_on_readyz() -> None:
    readiness = Readiness("broker", stall_s=0.2)
    readiness.mark("broker", True)
    readiness.waiting("frames:3")
    readiness.waiting("frames:4")
    assert readiness.ready()  # not yet stalled
    time.sleep(0.1)
    readiness.progressed("frames:4")
    readiness.waiting("frames:4")  # more work, the clock starts again
    time.sleep(0.15)
    assert set(readiness.stalled()) == {"frames:3"}
    readiness.retrying("inference", 4, "InferenceUnavailable: down")
    server = HealthServer(readiness).start()
    try:
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/readyz", timeout=5)
        assert info.value.code == 503
        body = json.loads(info.value.read())
    finally:
        server.stop()
    assert body["ready"] is False
    assert body["checks"] == {"broker": True, "progress": False}
    assert body["retrying"]["inference"]["attempts"] == 4
    assert list(body["stalled"]) == ["frames:3"] and body["stalled"]["frames:3"]["waiting_s"] >= 0.2
    readiness.progressed("frames:3")
    readiness.forget("frames:4")
    readiness.recovered("inference")
    assert readiness.report() == {"ready": True, "checks": {"broker": True, "progress": True}}

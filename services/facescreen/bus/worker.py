"""What a worker does around each message: bounded sends, dead letters, retries, stopping.

Apart from `faustapp` (how the app is built and tuned) because these are the rules of
progress every service shares: a send that the broker does not acknowledge in time, a
transient dependency retried with back-off while readiness is false, and a worker that
cannot make progress stopping with exit 1 instead of hanging while its probes say 200.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import faust
from prometheus_client import Gauge

from facescreen.bus import deadletter
from facescreen.bus.deadletter import DeadLetter, MessageRef
from facescreen.bus.faustapp import FaustTuning
from facescreen.ops.health import Readiness

log = logging.getLogger("facescreen.faust")
LAG = Gauge("facescreen_consumer_lag", "Messages behind the partition's end, per service",
            ["service", "topic", "partition"])
T = TypeVar("T")


def watch_assignment(app: faust.App, readiness: Readiness, service: str) -> None:
    """Readiness 'broker' turns true once the group has given this worker its partitions."""

    async def _assigned(sender: Any, *args: Any, **kwargs: Any) -> None:
        assigned = args[0] if args else kwargs.get("assigned", ())
        readiness.mark("broker", True)
        log.info("partitions assigned", extra={"fields": {
            "service": service, "partitions": sorted(f"{tp.topic}:{tp.partition}"
                                                     for tp in assigned)}})

    app.on_partitions_assigned.connect(cast(Any, _assigned))


def observe_lag(app: faust.App, service: str, ref: MessageRef) -> None:
    """Consumer lag of the partition `ref` came from, as of this message."""
    try:
        from faust.types import TP

        highwater = app.consumer.highwater(TP(ref.topic, ref.partition))
    except Exception:  # highwater is best effort; never fail a message for a gauge
        return
    if highwater is not None:
        LAG.labels(service, ref.topic, str(ref.partition)).set(max(0, highwater - ref.offset - 1))


async def retry_forever(what: str, call: Callable[[], Awaitable[T]], readiness: Readiness,
                        check: str, is_transient: Callable[[BaseException], bool],
                        max_delay_s: float = 30.0) -> T:
    """Await `call` until it succeeds; transient failures back off (readiness false meanwhile).

    Used for infrastructure that is down (inference server, watchlist store): the line
    stops and nothing is skipped or dead-lettered, since the message is not at fault.
    """
    attempt = 0
    while True:
        try:
            result = await call()
        except Exception as exc:
            if not is_transient(exc):
                raise
            attempt += 1
            readiness.mark(check, False)
            delay = min(max_delay_s, 0.5 * 2 ** min(attempt - 1, 8)) * random.uniform(0.5, 1.0)
            log.warning("retrying", extra={"fields": {"what": what, "attempt": attempt,
                                                      "error": f"{type(exc).__name__}: {exc}",
                                                      "delay_s": round(delay, 2)}})
            await asyncio.sleep(delay)
            continue
        if attempt:
            log.info("recovered", extra={"fields": {"what": what, "attempts": attempt + 1}})
        readiness.mark(check, True)
        return result


class SendError(RuntimeError):
    """The broker did not take a message after every attempt: no progress is possible."""


async def send_bounded(topic: Any, key: bytes | None, value: bytes,
                       headers: list[tuple[str, bytes]] | None = None, *,
                       partition: int | None = None, tuning: FaustTuning | None = None,
                       readiness: Readiness | None = None) -> Any:
    """Send one message and wait for the broker's acknowledgement, within bounds.

    Faust's own producer timeout is 20 minutes; a worker that cannot write its output (or
    its dead letters) must say so long before that, so each attempt has a timeout, the
    worker is not ready while attempts fail, and the last failure raises SendError.
    Returns the broker's record metadata (topic, partition, offset).
    """
    tuning = tuning or FaustTuning()
    last: BaseException | None = None
    for attempt in range(1, tuning.send_attempts + 1):
        try:
            sent = await asyncio.wait_for(topic.send(key=key, value=value, headers=headers,
                                                     partition=partition),
                                          tuning.send_timeout_s)
            metadata = await asyncio.wait_for(asyncio.shield(sent), tuning.send_timeout_s)
        except Exception as exc:
            last = exc
            if readiness is not None:
                readiness.mark("progress", False)
            log.warning("send failed", extra={"fields": {
                "topic": topic.get_topic_name(), "attempt": attempt,
                "error": type(exc).__name__}})
            if attempt < tuning.send_attempts:
                await asyncio.sleep(min(5.0, 0.5 * 2 ** attempt))
            continue
        if readiness is not None and attempt > 1:
            readiness.mark("progress", True)
        return metadata
    raise SendError(f"{topic.get_topic_name()}: not acknowledged after "
                    f"{tuning.send_attempts} attempts ({type(last).__name__})") from last


async def publish_dead_letter(topic: Any, service: str, ref: MessageRef, letter: DeadLetter,
                              *, tuning: FaustTuning | None = None,
                              readiness: Readiness | None = None) -> None:
    """Count, log and publish a dead letter; raises SendError when the broker refuses."""
    key, value = deadletter.record(service, ref, letter)
    await send_bounded(topic, key, value, tuning=tuning, readiness=readiness)


async def hold_forever() -> None:
    """Keep the current event unacknowledged until the worker stops (it is redone later)."""
    await asyncio.Event().wait()


_failure: list[BaseException] = []
STOP_GRACE_S = 5.0  # wait_empty commits what was acknowledged at once, then waits on


def fail_stop(exc: BaseException, service: str, readiness: Readiness | None = None) -> None:
    """No progress is possible (the broker refuses our output): not ready, stop, exit 1.

    The event in hand stays unacknowledged (the agent holds it), so it is done again
    after the restart. A graceful stop commits what was acknowledged; Faust waits for the
    held event while stopping (for ever: seen here), so a watchdog ends the process after
    `STOP_GRACE_S`: an orchestrator then sees a failed container, not a hung one that
    answers its probes.
    """
    import os
    import signal
    import threading

    if readiness is not None:
        readiness.mark("progress", False)
    log.critical("cannot make progress, stopping", exc_info=exc,
                 extra={"fields": {"service": service}})
    _failure.append(exc)

    def _deadline() -> None:
        time.sleep(STOP_GRACE_S)
        log.critical("graceful stop timed out; exiting", extra={"fields": {
            "service": service, "grace_s": STOP_GRACE_S}})
        logging.shutdown()
        os._exit(1)

    threading.Thread(target=_deadline, name="fail-stop", daemon=True).start()
    os.kill(os.getpid(), signal.SIGTERM)


def failed() -> bool:
    return bool(_failure)

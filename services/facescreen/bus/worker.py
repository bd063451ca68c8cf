"""What a worker does around each message: bounded sends, dead letters, retries, stopping.

Apart from `faustapp` (how the app is built and tuned) because these are the rules of
progress every service shares: a send that the broker does not acknowledge in time, a
transient dependency retried by policy (`facescreen.ops.retry`) while readiness is false,
a worker that cannot make progress stopping with exit 1 instead of hanging while its
probes say 200, and the periodic bus checks (`facescreen.bus.watch`: topics present,
committed offsets within the log, partitions progressing) that keep `/readyz` honest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import faust
from prometheus_client import Gauge

from facescreen.bus import deadletter
from facescreen.bus.deadletter import DeadLetter, MessageRef
from facescreen.bus.faustapp import FaustTuning
from facescreen.bus.topics import BusConfig
from facescreen.bus.watch import (
    BrokerView,
    Key,
    ProgressTracker,
    WatchSettings,
    out_of_range,
    record_reset,
    reset_target,
)
from facescreen.ops.health import Readiness
from facescreen.ops.retry import INFRA_MAX_S, bounded, call_async, infrastructure

log = logging.getLogger("facescreen.faust")
LAG = Gauge("facescreen_consumer_lag", "Messages behind the partition's end, per service",
            ["service", "topic", "partition"])
T = TypeVar("T")
_handled: dict[tuple[str, str, int], int] = {}  # (service, topic, partition) -> next offset


def watch_assignment(app: faust.App, readiness: Readiness, service: str,
                     bus: BusConfig | None = None, roles: tuple[str, ...] = ()) -> None:
    """Readiness 'broker' turns true once the group has given this worker its partitions.

    With `bus` and the `roles` of the topics the service uses, the bus is also checked
    every `check_s` (`facescreen.bus.watch`): `topics` (present, partition counts),
    committed offsets past the log's end (reset by policy) and `progress`.
    """

    async def _assigned(sender: Any, *args: Any, **kwargs: Any) -> None:
        assigned = args[0] if args else kwargs.get("assigned", ())
        readiness.mark("broker", True)
        log.info("partitions assigned", extra={"fields": {
            "service": service, "partitions": sorted(f"{tp.topic}:{tp.partition}"
                                                     for tp in assigned)}})

    app.on_partitions_assigned.connect(cast(Any, _assigned))
    if bus is None:
        return
    settings = WatchSettings.from_env()
    # progress is read from committed offsets: never judge it faster than commits happen
    readiness.stall_s = max(settings.stall_s, 2 * float(app.conf.broker_commit_interval))
    readiness.mark("topics", True)  # checked at start (require_topics); rechecked below
    servers = [f"{url.host}:{url.port or 9092}" for url in app.conf.broker]
    view = BrokerView(servers, [bus.topics()[role] for role in roles], service, readiness)
    tracker = ProgressTracker(readiness)

    async def _check_bus() -> None:
        await check_bus(app, service, view, tracker, settings)

    app.timer(settings.check_s, name=f"{service}.check-bus")(_check_bus)


async def check_bus(app: faust.App, service: str, view: BrokerView, tracker: ProgressTracker,
                    settings: WatchSettings) -> None:
    """One round of bus checks (see `watch_assignment`); never raises."""
    try:
        await asyncio.to_thread(view.check_topics)
        committed = await asyncio.to_thread(view.committed, app.conf.id)
        if app.rebalancing:  # offsets move under a rebalance: look next time
            return
        consumer = app.consumer
        assigned = sorted(consumer.assignment())
        for tp in assigned:
            key: Key = (tp.topic, tp.partition)
            end = consumer.highwater(tp)  # from fetch responses: right on tansu too
            done = committed.get(key)
            # Also the position and Faust's own idea of the commit: a broker that lost its
            # commits (restarted empty) leaves both where they were, past the new log's end.
            remembered = cast(Any, consumer)._committed_offset.get(tp)
            ahead = max((o for o in (done, await _position(consumer, tp), remembered)
                         if o is not None), default=None)
            if ahead is not None and end is not None and out_of_range(ahead, end):
                start = (await consumer.earliest_offsets(tp)).get(tp, 0)
                target = reset_target(settings.offset_reset, start, end)
                record_reset(service, tp.topic, tp.partition, ahead, end, target,
                             settings.offset_reset)
                await reset_partition(app, tp, target)
                _handled.pop((service, tp.topic, tp.partition), None)
                continue
            markers = [m for m in (done, _handled.get((service, tp.topic, tp.partition)))
                       if m is not None]
            if not markers and end:
                markers = [(await consumer.earliest_offsets(tp)).get(tp, 0)]
            tracker.update(key, max(markers, default=0), end)
        tracker.retain((tp.topic, tp.partition) for tp in assigned)
    except Exception as exc:  # a check must never take the worker down
        log.warning("bus check failed", extra={"fields": {"service": service,
                                                          "error": type(exc).__name__}})


async def _position(consumer: Any, tp: Any) -> int | None:
    """The next offset the consumer fetches, None while it is not known."""
    try:
        position = await asyncio.wait_for(consumer.position(tp), 2.0)
    except Exception:  # being reset or revoked: the next round looks again
        return None
    return None if position is None else int(position)


async def reset_partition(app: faust.App, tp: Any, offset: int) -> None:
    """Move a partition's committed offset and position to `offset`, in the broker and in
    Faust's own bookkeeping.

    Faust (faust-streaming 0.15.3) has no public call for this: it acknowledges only
    offsets at or past the committed offset it remembers, so that one is replaced too
    (`_committed_offset`), and the broker's is committed (`_commit`) so a restart does
    not find it again. Covered by tests/distributed/test_bus_watch.py.
    """
    consumer = cast(Any, app.consumer)
    await consumer._commit({tp: offset})
    await consumer.seek(tp, offset)
    consumer._committed_offset[tp] = offset or None


def observe_lag(app: faust.App, service: str, ref: MessageRef) -> None:
    """Consumer lag of the partition `ref` came from, as of this message."""
    try:
        from faust.types import TP

        highwater = app.consumer.highwater(TP(ref.topic, ref.partition))
    except Exception:  # highwater is best effort; never fail a message for a gauge
        return
    _handled[(service, ref.topic, ref.partition)] = ref.offset + 1
    if highwater is not None:
        LAG.labels(service, ref.topic, str(ref.partition)).set(max(0, highwater - ref.offset - 1))


async def retry_forever(what: str, call: Callable[[], Awaitable[T]], readiness: Readiness,
                        check: str, is_transient: Callable[[BaseException], bool],
                        max_delay_s: float = INFRA_MAX_S) -> T:
    """Await `call` until it succeeds; transient failures back off (readiness false and
    `/readyz` `retrying` meanwhile), anything else is raised at once.

    Used for infrastructure that is down (inference server, watchlist store): the line
    stops and nothing is skipped or dead-lettered, since the message is not at fault.
    """
    policy = infrastructure(is_transient, max_s=max_delay_s, name=check)
    return await call_async(policy, what, call, readiness=readiness, check=check)


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
    name = topic.get_topic_name()

    async def attempt() -> Any:
        sent = await asyncio.wait_for(topic.send(key=key, value=value, headers=headers,
                                                 partition=partition), tuning.send_timeout_s)
        return await asyncio.wait_for(asyncio.shield(sent), tuning.send_timeout_s)

    policy = bounded(_any_error, tuning.send_attempts, name="send")
    try:
        return await call_async(policy, f"send to {name}", attempt, readiness=readiness,
                                check="progress", confirm=False)
    except Exception as exc:
        raise SendError(f"{name}: not acknowledged after {tuning.send_attempts} attempts "
                        f"({type(exc).__name__})") from exc


def _any_error(exc: BaseException) -> bool:
    """Every failed send is worth another attempt, up to the bound."""
    return isinstance(exc, Exception)


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

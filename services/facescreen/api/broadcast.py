"""Fan-out of alert changes to the open SSE streams of the dashboard.

`create_app` registers `publish` as a listener of the alert store, so whatever thread
changes an alert (the embedded pipeline's sink ingesting it, a reviewer's verdict) calls
it; when another process ingests (the distributed `alert-store` consumer), the app polls
the store's `changed_since` instead. Each open stream has a bounded queue on the event
loop that serves it. A stream that falls behind by more than its queue is ended rather
than allowed to grow memory without bound: the browser's EventSource reconnects and
the dashboard re-reads the list, so nothing is lost but the backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from pydantic import BaseModel

from facescreen.alerts.store import AlertRecord


class _Store(Protocol):
    def add_listener(self, listener: Any) -> None: ...
    def ingest(self, doc: dict[str, Any]) -> bool: ...
    def get(self, alert_id: str) -> AlertRecord | None: ...

_CLOSED: dict[str, Any] = {}  # the sentinel that ends a stream (identity-compared)


class Subscription:
    """One open stream's queue; read it with `next` on its own event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(size)
        self.overflowed = False

    def _offer(self, item: dict[str, Any]) -> None:  # runs on self.loop
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed = True
            self.queue.get_nowait()  # make room for the end marker
            self.queue.put_nowait(_CLOSED)

    async def next(self, timeout: float) -> dict[str, Any] | None:
        """The next alert (JSON-ready dict); None after `timeout` s without one.

        Raises EOFError once the stream is closed (broadcaster closed or queue overflow).
        """
        try:
            item = await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None
        if item is _CLOSED:
            raise EOFError("stream closed")
        return item


class AlertBroadcaster:
    """Thread-safe publish, per-stream asyncio queues."""

    def __init__(self, queue_size: int = 256) -> None:
        self.queue_size = queue_size
        self._subscribers: set[Subscription] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._attached: set[int] = set()

    def attach(self, store: _Store) -> None:
        """Publish every change `store` makes from now on (once per store)."""
        with self._lock:
            if id(store) in self._attached:
                return
            self._attached.add(id(store))
        store.add_listener(self.publish)

    def attached(self, store: object) -> bool:
        with self._lock:
            return id(store) in self._attached

    def publish(self, record: AlertRecord | BaseModel | Mapping[str, Any]) -> None:
        """Send one alert's latest state to every open stream; callable from any thread."""
        item = (record.model_dump(mode="json") if isinstance(record, BaseModel)
                else dict(record))
        self._deliver(item)

    def _deliver(self, item: dict[str, Any]) -> None:
        with self._lock:
            targets = list(self._subscribers)
        for sub in targets:
            with contextlib.suppress(RuntimeError):  # that stream's loop has stopped
                sub.loop.call_soon_threadsafe(sub._offer, item)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subscribers)

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[Subscription]:
        """An open stream for the lifetime of the block (call on the serving loop)."""
        sub = Subscription(asyncio.get_running_loop(), self.queue_size)
        with self._lock:
            if self._closed:
                sub.queue.put_nowait(_CLOSED)
            self._subscribers.add(sub)
        try:
            yield sub
        finally:
            with self._lock:
                self._subscribers.discard(sub)

    def close(self) -> None:
        """End every open stream (at shutdown, so the server need not wait on them)."""
        with self._lock:
            self._closed = True
        self._deliver(_CLOSED)


def ingest_and_publish(store: _Store, broadcaster: AlertBroadcaster,
                       doc: dict[str, Any]) -> bool:
    """Store one alert event; the open streams hear of it through the store's listener,
    or from here when the broadcaster is not attached to that store. Returns whether the
    store changed."""
    changed = store.ingest(doc)
    if changed and not broadcaster.attached(store):
        record = store.get(str(doc["alert_id"]))
        if record is not None:
            broadcaster.publish(record)
    return changed

"""What the HTTP API is built from, so the embedded and distributed modes wire it alike.

`create_app` takes one `ApiContext`; nothing in the API opens a store, a model or a
broker itself. Embedded, the context holds the data directory's stores and the local
feedback log; distributed, the PostgreSQL alert store, the Redis watchlist and the
feedback publisher. Tests build it from the real parts too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from facescreen.alerts.store import AlertStore
from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.api.broadcast import AlertBroadcaster
from facescreen.core.feedback import Feedback
from facescreen.ingest.images import DEFAULT_MAX_PIXELS
from facescreen.watchlist.base import WatchlistStore

FeedbackSink = Callable[[Feedback], None]
CameraStatus = Callable[[], list[dict[str, Any]]]


@dataclass(frozen=True)
class ApiLimits:
    """Bounds on what one request may cost; each refusal is a 4xx that names the bound.

    Rates are per token: a leaked reviewer token cannot run a face search engine, and an
    admin script that loops cannot starve the analyzer of the cameras it shares a host with.
    """

    max_request_bytes: int = 64 * 1024 * 1024
    max_image_bytes: int = 15 * 1024 * 1024
    max_images: int = 10
    max_pixels: int = DEFAULT_MAX_PIXELS
    enrol_per_minute: float = 30.0
    enrol_burst: int = 10
    search_per_minute: float = 30.0
    search_burst: int = 10
    search_k: int = 5
    stream_recheck_s: float = 15.0  # a revoked token's open stream ends within this


@dataclass
class ApiContext:
    """The parts the API serves; `analyzer` is a factory, called once on first use."""

    alerts: AlertStore
    watchlists: WatchlistStore
    analyzer: Callable[[], FaceAnalyzer]
    feedback: FeedbackSink
    cameras: CameraStatus = field(default=lambda: [])
    broadcaster: AlertBroadcaster = field(default_factory=AlertBroadcaster)
    limits: ApiLimits = field(default_factory=ApiLimits)
    retention_s: float | None = None  # alerts older than this are purged by the API process
    purge_interval_s: float = 3600.0
    # None: the store's listener feeds the streams (this process ingests). A number: poll
    # the store every so many seconds (another process ingests: distributed mode).
    poll_changes_s: float | None = None
    _analyzer: FaceAnalyzer | None = field(default=None, init=False, repr=False)
    _analyzer_lock: threading.Lock = field(default_factory=threading.Lock, init=False,
                                           repr=False)
    _run_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def face_analyzer(self) -> FaceAnalyzer:
        """The one analyzer of this process, built on first use (model loading is slow)."""
        with self._analyzer_lock:
            if self._analyzer is None:
                self._analyzer = self.analyzer()
            return self._analyzer

    @property
    def analyzer_lock(self) -> threading.Lock:
        """Held while the analyzer runs: one inference at a time keeps the CPU for cameras."""
        return self._run_lock

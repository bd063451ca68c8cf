"""Per-token rate limits (token buckets) for the endpoints that run the face models.

Enrolment and search each cost a detector and an embedder pass on the host the cameras
use, and search is the one endpoint that turns a photo of anyone into names: both are
limited per API token, in this process's memory (one API process per deployment; a
restart refills the buckets, which errs towards availability).
"""

from __future__ import annotations

import math
import threading
import time


class RateLimiter:
    """`burst` requests at once, refilled at `per_minute`; `take` says how long to wait."""

    MAX_KEYS = 10_000

    def __init__(self, per_minute: float, burst: int) -> None:
        if per_minute <= 0 or burst < 1:
            raise ValueError("a rate limit needs a positive rate and a burst of at least 1")
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: str, now: float | None = None) -> int:
        """0 if the request may go ahead (and count it), else whole seconds to wait."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, at = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                if len(self._buckets) > self.MAX_KEYS:
                    self._forget_full(now)
                return 0
            self._buckets[key] = (tokens, now)
            return max(1, math.ceil((1.0 - tokens) / self.rate))

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled: they hold no information."""
        full = [k for k, (tokens, at) in self._buckets.items()
                if tokens + (now - at) * self.rate >= self.burst]
        for key in full:
            del self._buckets[key]

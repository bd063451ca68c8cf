"""The matcher's watchlist search: patient when the store is away, live on a data dir.

A face event is never at fault for a store that is down, so the search is retried until
it answers (readiness false and `/readyz` `retrying` meanwhile; `facescreen.ops.retry`)
instead of dead-lettering events; a local data directory is re-read when its files
change, so enrolments reach a running matcher.
"""

from __future__ import annotations

import logging
import threading
import time

from prometheus_client import Histogram

from facescreen.core.matching import Candidate
from facescreen.core.screening import SearchFn
from facescreen.core.types import FloatArray
from facescreen.matcher.work import StoppingError
from facescreen.ops.health import Readiness
from facescreen.ops.retry import INFRA_MAX_S, RetryStoppedError, call_sync, infrastructure

log = logging.getLogger("facescreen.matcher.search")
MATCH_SCORES = Histogram("facescreen_matcher_top_score",
                         "Best watchlist similarity of each voted track (open-set view)",
                         buckets=(-0.5, 0, 0.25, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95,
                                  0.97, 0.99, 1.0))
SEARCH_SECONDS = Histogram("facescreen_matcher_search_seconds", "Watchlist search latency",
                           buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5))


class PatientSearch:
    """The watchlist search, retried until it answers: a face event is never at fault for a
    store that is down, so the line stops (readiness false) instead of dropping events."""

    def __init__(self, search: SearchFn, readiness: Readiness, stopping: threading.Event,
                 max_delay_s: float = INFRA_MAX_S) -> None:
        self._search = search
        self._readiness = readiness
        self._stopping = stopping
        self._policy = infrastructure(_store_away, max_s=max_delay_s, name="watchlist")

    def __call__(self, probes: FloatArray, k: int) -> list[list[Candidate]]:
        timed: list[float] = []

        def search() -> list[list[Candidate]]:
            timed[:] = [time.perf_counter()]
            return self._search(probes, k)

        try:
            result = call_sync(self._policy, "watchlist search", search,
                               readiness=self._readiness, check="watchlist",
                               stopping=self._stopping)
        except RetryStoppedError as exc:
            raise StoppingError("stopped while the watchlist store was away") from exc
        SEARCH_SECONDS.observe(time.perf_counter() - timed[0])
        for candidates in result:
            if candidates:
                MATCH_SCORES.observe(candidates[0].score)
        return result


def _store_away(exc: BaseException) -> bool:
    """Every search failure is the store's (a query of ours that is wrong would fail the
    same for every event, and stopping the line is then the right outcome too)."""
    return isinstance(exc, Exception)

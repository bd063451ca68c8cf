"""Concurrent enrolments of one new subject id: exactly one wins, none merges into it.

The API checks "is this id taken?" before the slow part of an enrolment (decoding and
embedding the photos) and writes afterwards, so two requests for one new id can both pass
the check. `add_subject(..., new=True)` repeats the check inside the store's own lock (local
directory) or WATCH transaction (Redis); without it the second request's photos, possibly
of another person, would join the first subject's template.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from facescreen.core.alignment import l2_normalise
from facescreen.watchlist.base import WatchlistStore
from facescreen.watchlist.redis_store import RedisWatchlistStore
from facescreen.watchlist.store import LocalWatchlistStore, SubjectExistsError

DIM = 8
RACERS = 6


def _vec(seed: int) -> np.ndarray:
    return l2_normalise(np.random.default_rng(seed).normal(size=DIM).astype(np.float32))


def _race(store: WatchlistStore) -> tuple[list[str], list[str]]:
    """RACERS threads enrol subject 'x' as new at the same moment; who won, who was refused."""
    start = threading.Barrier(RACERS)
    won: list[str] = []
    refused: list[str] = []

    def enrol(i: int) -> None:
        start.wait()
        try:
            store.add_subject("x", "vip", [(f"photo-{i}", 0.9, _vec(i))], actor="t", new=True)
            won.append(f"photo-{i}")
        except SubjectExistsError:
            refused.append(f"photo-{i}")

    threads = [threading.Thread(target=enrol, args=(i,)) for i in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return won, refused


def _check(store: WatchlistStore) -> None:
    won, refused = _race(store)
    assert len(won) == 1 and len(refused) == RACERS - 1
    assert [i.label for i in store.subjects()["x"].images] == won
    adds = [e for e in store.audit_log() if e.get("action") == "add_subject"]
    assert len(adds) == 1  # a refused enrolment changed nothing and audited no change
    # Without `new`, adding photos to an existing subject is still what it does.
    store.add_subject("x", "vip", [("more", 0.9, _vec(99))], actor="t")
    assert len(store.subjects()["x"].images) == 2


def test_local_store_lets_one_new_enrolment_win(tmp_path: Path) -> None:
    store = LocalWatchlistStore(tmp_path / "data", embedder="test-embedder", dim=DIM)
    store.set_watchlist("vip", actor="t")
    _check(store)


@pytest.mark.parametrize("kind", ["FLAT", "HNSW"])
def test_redis_store_lets_one_new_enrolment_win(redis_url: str, kind: str) -> None:
    store = RedisWatchlistStore(redis_url, embedder="test-embedder", dim=DIM,
                                index_kind=kind)  # type: ignore[arg-type]
    store.set_watchlist("vip", actor="t")
    _check(store)

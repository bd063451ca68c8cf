"""HNSW parameters of the Redis store: given, or from the environment, reach the index that
RediSearch builds; bad values are refused in one line; a graph built with other settings
is kept and named in a warning."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import redis
from facescreen.core.alignment import l2_normalise
from facescreen.watchlist.redis_store import RedisWatchlistStore, hnsw_setting
from facescreen.watchlist.store import WatchlistError

DIM = 8


def _vector_info(url: str, index: str) -> dict[str, object]:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        info = client.execute_command("FT.INFO", index)
    finally:
        client.close()
    (vector,) = [a for a in info["attributes"] if a["type"] == "VECTOR"]
    return dict(vector)


def _enrol(store: RedisWatchlistStore) -> None:
    vector = l2_normalise(np.random.default_rng(1).normal(size=DIM).astype(np.float32))
    store.add_subject("alice", "vip", [("a.jpg", 0.9, vector)], actor="op")
    (top,) = store.search(vector[None], 1)
    assert top[0].subject_id == "alice"


def test_settings_from_the_environment_build_the_index(redis_url: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACESCREEN_REDIS_HNSW_M", "24")
    monkeypatch.setenv("FACESCREEN_REDIS_HNSW_EF_CONSTRUCTION", "120")
    monkeypatch.setenv("FACESCREEN_REDIS_HNSW_EF_RUNTIME", "300")
    store = RedisWatchlistStore(redis_url, embedder="e", dim=DIM, index_kind="HNSW")
    assert (store.hnsw_m, store.hnsw_ef_construction, store.hnsw_ef_runtime) == (24, 120, 300)
    _enrol(store)
    vector = _vector_info(redis_url, store.index_name)
    assert (vector["algorithm"], vector["M"], vector["ef_construction"]) == ("HNSW", 24, 120)
    given = RedisWatchlistStore(redis_url, embedder="e", dim=DIM, index_kind="HNSW",
                                hnsw_ef_runtime=40)
    assert given.hnsw_ef_runtime == 40  # an argument wins over the environment


@pytest.mark.parametrize(("name", "value"), [("M", "1"), ("EF_RUNTIME", "0"),
                                             ("EF_CONSTRUCTION", "lots"), ("M", "513")])
def test_bad_settings_are_refused_in_one_line(name: str, value: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"FACESCREEN_REDIS_HNSW_{name}", value)
    with pytest.raises(WatchlistError, match=f"FACESCREEN_REDIS_HNSW_{name}") as caught:
        hnsw_setting(name, None)
    assert "\n" not in str(caught.value)
    with pytest.raises(WatchlistError, match="EF_RUNTIME '-3'"):
        hnsw_setting("EF_RUNTIME", -3)


def test_a_graph_built_with_other_settings_is_kept_with_a_warning(
        redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    _enrol(RedisWatchlistStore(redis_url, embedder="e", dim=DIM, index_kind="HNSW", hnsw_m=8))
    reopened = RedisWatchlistStore(redis_url, embedder="e", dim=DIM, index_kind="HNSW",
                                   hnsw_m=32)
    with caplog.at_level(logging.WARNING, logger="facescreen.watchlist.redis"):
        assert [c.subject_id for c in reopened.search(
            l2_normalise(np.random.default_rng(1).normal(size=DIM).astype(np.float32))[None],
            1)[0]] == ["alice"]
    (record,) = [r for r in caplog.records if "other settings" in r.getMessage()]
    assert record.fields["built"] == {"M": "8"}  # type: ignore[attr-defined]
    assert _vector_info(redis_url, reopened.index_name)["M"] == 8

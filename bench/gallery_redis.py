"""The Redis half of bench/gallery_scale.py: build a RediSearch index of n templates, then
time `RedisWatchlistStore.search` one probe at a time and score it against exact search.

Templates go in as the store lays them out (`P:tpl:<id>:<list>` hashes, the store's own
index created first by `store.matcher()`), by pipelined HSETs, 1000 a round trip. With the
index in place RediSearch indexes each HSET as it lands, so the build time is from the
first HSET until FT.INFO says every document is indexed (`indexing` 0, `percent_indexed`
1, `num_docs` n). Memory is INFO `used_memory` after the build less before it (hashes plus
index), with FT.INFO's `vector_index_sz_mb` beside it.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import redis
from facescreen.core.types import FloatArray
from facescreen.watchlist.redis_store import IndexKind, RedisWatchlistStore

PREFIX = "gallerybench"
WATCHLIST = "bench"
TIE = 1e-5  # a found template this close to the exact best score counts as the best one


def info_map(client: redis.Redis, index: str) -> dict[str, Any]:
    raw = client.execute_command("FT.INFO", index)
    pairs = raw if isinstance(raw, dict) else dict(zip(raw[::2], raw[1::2], strict=False))
    return {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in pairs.items()}


def wait_indexed(client: redis.Redis, index: str, docs: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = info_map(client, index)
        if (int(info["indexing"]) == 0 and float(info["percent_indexed"]) >= 1.0
                and int(info["num_docs"]) >= docs):
            return
        time.sleep(0.1)
    raise TimeoutError(f"{index} still indexing after {timeout_s:.0f} s")


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def insert(client: redis.Redis, templates: FloatArray, budget_s: float,
           batch: int = 1000) -> tuple[int, list[dict[str, float]]]:
    """Pipelined HSETs until done or `budget_s` is spent; rows loaded and per-100k marks."""
    start = time.perf_counter()
    marks: list[dict[str, float]] = []
    pipe = client.pipeline(transaction=False)
    loaded = 0
    for begin in range(0, len(templates), batch):
        for i in range(begin, min(begin + batch, len(templates))):
            pipe.hset(f"{PREFIX}:tpl:s{i}:{WATCHLIST}", mapping={
                "vec": templates[i].astype("<f4").tobytes(), "watchlist": WATCHLIST,
                "subject": f"s{i}", "expires": "inf"})
        pipe.execute()
        loaded = min(begin + batch, len(templates))
        elapsed = time.perf_counter() - start
        if loaded % 100_000 == 0:
            marks.append({"rows": loaded, "elapsed_s": round(elapsed, 1)})
            print(f"    {loaded:,} rows in {elapsed:.1f} s", flush=True)
        if elapsed > budget_s and loaded < len(templates):
            print(f"    stopped at {loaded:,} rows: over the {budget_s:.0f} s budget", flush=True)
            break
    return loaded, marks


def measure(store: RedisWatchlistStore, templates: FloatArray, probes: FloatArray,
            truth: np.ndarray, best: FloatArray, k: int, warmup: int = 20) -> dict[str, Any]:
    """p50/p99 of one-probe searches, and recall@1 against exact (genuine, impostor, all)."""
    for probe in probes[:warmup]:
        store.search(probe[None], k)
    times = np.empty(len(probes))
    hits = np.zeros(len(probes), bool)
    for i, probe in enumerate(probes):
        start = time.perf_counter()
        (found,) = store.search(probe[None], k)
        times[i] = time.perf_counter() - start
        if found:
            row = int(found[0].subject_id[1:])
            hits[i] = float(templates[row] @ probe) >= best[i] - TIE
    return latency(times) | recall(hits, truth)


def latency(times: np.ndarray) -> dict[str, float]:
    p50, p99 = np.percentile(times * 1e3, [50, 99])
    return {"p50_ms": round(float(p50), 3), "p99_ms": round(float(p99), 3),
            "max_ms": round(float(times.max() * 1e3), 3)}


def recall(hits: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    genuine = truth >= 0
    return {"recall_at_1": round(float(hits.mean()), 4),
            "recall_at_1_genuine": round(float(hits[genuine].mean()), 4),
            "recall_at_1_impostor": round(float(hits[~genuine].mean()), 4)}


def redis_rows(url: str, kind: IndexKind, templates: FloatArray, probes: FloatArray,
               truth: np.ndarray, best: FloatArray, *, k: int, m: int, ef_construction: int,
               ef_runtimes: list[int], budget_s: float) -> list[dict[str, Any]]:
    """Build one index over `templates` and query it (HNSW: at each EF_RUNTIME)."""
    n, dim = templates.shape
    client = redis.Redis.from_url(url)
    client.flushall()
    store = RedisWatchlistStore(url, embedder="synthetic", dim=dim, prefix=PREFIX,
                                index_kind=kind, hnsw_m=m, hnsw_ef_construction=ef_construction)
    store.matcher()  # the meta record and the empty index, as the product creates them
    before = used_memory(client)
    start = time.perf_counter()
    loaded, marks = insert(client, templates, budget_s)
    insert_s = time.perf_counter() - start
    wait_indexed(client, store.index_name, loaded, timeout_s=max(600.0, budget_s))
    build_s = time.perf_counter() - start
    info = info_map(client, store.index_name)
    base: dict[str, Any] = {
        "n": n, "store": f"redis {kind}", "rows_built": loaded, "complete": loaded == n,
        "insert_s": round(insert_s, 1), "build_s": round(build_s, 1),
        "build_s_per_100k": round(build_s / loaded * 1e5, 1),
        "memory_mb": round((used_memory(client) - before) / 2**20, 1),
        "vector_index_mb": round(float(info["vector_index_sz_mb"]), 1)}
    if kind == "HNSW":
        base |= {"M": m, "EF_CONSTRUCTION": ef_construction, "marks": marks}
    print(f"  redis {kind}: {base}", flush=True)
    rows: list[dict[str, Any]] = []
    if loaded < n:  # a partial gallery is not the size asked for: build figures only
        rows.append(base)
    else:
        for ef in ef_runtimes if kind == "HNSW" else [0]:
            store.hnsw_ef_runtime = ef
            row = base | ({"EF_RUNTIME": ef} if kind == "HNSW" else {})
            row |= measure(store, templates, probes, truth, best, k)
            print(f"  {row['store']} ef={ef}: p50 {row['p50_ms']} p99 {row['p99_ms']} ms "
                  f"recall@1 {row['recall_at_1']}", flush=True)
            rows.append(row)
    store.close()
    client.flushall()
    client.close()
    return rows

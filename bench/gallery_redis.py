"""The Redis half of bench/gallery_scale.py: build a RediSearch index of n templates, then
time `RedisWatchlistStore.search` one probe at a time and score it against exact search
(HNSW: every EF_RUNTIME on one graph, interleaved query by query).

Templates go in as the store lays them out (`P:tpl:<id>:<list>` hashes, the store's own
index created first by `store.matcher()`), by pipelined HSETs, 1000 a round trip. With the
index in place RediSearch indexes each HSET as it lands, so the build time is from the
first HSET until FT.INFO says every document is indexed (`indexing` 0, `percent_indexed`
1, `num_docs` n). Memory is INFO `used_memory` after the build less before it (hashes plus
index), with FT.INFO's `vector_index_sz_mb` beside it.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import redis
from facescreen.core.matching import Candidate
from facescreen.core.types import FloatArray
from facescreen.watchlist.redis_store import IndexKind, RedisWatchlistStore
from facescreen.watchlist.store import WatchlistError
from gallery_data import Query, recall, timed_rounds

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


def insert(client: redis.Redis, prefix: str, templates: FloatArray, budget_s: float,
           batch: int = 1000) -> tuple[int, list[dict[str, float]]]:
    """Pipelined HSETs until done or `budget_s` is spent; rows loaded and per-100k marks."""
    start = time.perf_counter()
    marks: list[dict[str, float]] = []
    pipe = client.pipeline(transaction=False)
    loaded = 0
    for begin in range(0, len(templates), batch):
        for i in range(begin, min(begin + batch, len(templates))):
            pipe.hset(f"{prefix}:tpl:s{i}:{WATCHLIST}", mapping={
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


def top1_check(templates: FloatArray, probes: FloatArray,
               best: FloatArray) -> Callable[[int, list[Candidate]], bool]:
    """Whether a search's first candidate for probe i is the exact best (or ties it)."""
    def check(i: int, found: list[Candidate]) -> bool:
        return bool(found) and float(templates[int(found[0].subject_id[1:])] @ probes[i]) \
            >= best[i] - TIE
    return check


def redis_rows(url: str, kind: IndexKind, templates: FloatArray, probes: FloatArray,
               truth: np.ndarray, best: FloatArray, *, k: int, m: int, ef_construction: int,
               ef_runtimes: list[int], budget_s: float, rounds: int,
               reuse: bool = False) -> list[dict[str, Any]]:
    """Build one index over `templates` and query it (HNSW: at each EF_RUNTIME).

    With `reuse`, an index of this kind, size and parameters left by an earlier run with
    `reuse` (same seed) is queried again, with the build figures recorded then; nothing is
    flushed, so several sizes and kinds stay on one server. Without it, FLUSHALL first.
    """
    n, dim = templates.shape
    client = redis.Redis.from_url(url, socket_timeout=600)
    prefix = f"{PREFIX}-{kind.lower()}-{n}" + (f"-m{m}-efc{ef_construction}"
                                               if kind == "HNSW" else "")
    store = RedisWatchlistStore(url, embedder="synthetic", dim=dim, prefix=prefix,
                                index_kind=kind, hnsw_m=m, hnsw_ef_construction=ef_construction)
    recorded = client.get(f"{prefix}:bench-build") if reuse else None
    if recorded is not None:
        base: dict[str, Any] = json.loads(recorded) | {"reused_build": True}
    else:
        if reuse:  # a build of this name that did not finish: drop it and its documents
            with contextlib.suppress(redis.ResponseError):
                client.execute_command("FT.DROPINDEX", store.index_name, "DD")
            stale = list(client.scan_iter(match=f"{prefix}:*", count=10_000))
            for begin in range(0, len(stale), 10_000):
                client.delete(*stale[begin:begin + 10_000])
        else:
            client.flushall()
        base = {"n": n, "store": f"redis {kind}"} | build(client, store, templates, budget_s)
        if kind == "HNSW":
            base |= {"M": m, "EF_CONSTRUCTION": ef_construction}
        if reuse and base["complete"]:
            client.set(f"{prefix}:bench-build", json.dumps(base))
    print(f"  redis {kind}: {base}", flush=True)
    rows: list[dict[str, Any]] = []
    if not base["complete"]:  # a partial gallery is not the size asked for: build figures only
        rows.append(base)
    else:
        check = top1_check(templates, probes, best)

        def query(ef: int) -> Query:
            def run(i: int) -> bool:
                store.hnsw_ef_runtime = ef
                try:
                    (found,) = store.search(probes[i][None], k)
                except WatchlistError:  # e.g. over RediSearch's TIMEOUT (500 ms by default)
                    errors[ef] += 1
                    return False
                return check(i, found)
            return run

        efs = ef_runtimes if kind == "HNSW" else [store.hnsw_ef_runtime]
        errors = dict.fromkeys(efs, 0)  # failed searches, all rounds and the warm-up
        measured = timed_rounds({str(ef): query(ef) for ef in efs}, len(probes), rounds)
        for ef in efs:
            result = measured[str(ef)]
            row = base | ({"EF_RUNTIME": ef} if kind == "HNSW" else {})
            row |= {key: value for key, value in result.items() if key != "hits"}
            row |= recall(result["hits"], truth) | {"failed_searches": errors[ef]}
            label = f"{row['store']}" + (f" EF_RUNTIME {ef}" if kind == "HNSW" else "")
            print(f"  {label}: p50 {row['p50_ms']} p99 {row['p99_ms']} ms "
                  f"recall@1 {row['recall_at_1']} rounds {row['rounds']}", flush=True)
            rows.append(row)
    store.close()
    if not reuse:
        client.flushall()
    client.close()
    return rows


def build(client: redis.Redis, store: RedisWatchlistStore, templates: FloatArray,
          budget_s: float) -> dict[str, Any]:
    """Insert every template into the store's new, empty index; time and memory."""
    store.matcher()  # the meta record and the empty index, as the product creates them
    # On a server holding other keys (--reuse), FT.CREATE first scans them all in the
    # background; a product index is created on first use, so that scan is not build time.
    wait_indexed(client, store.index_name, 0, timeout_s=max(600.0, budget_s))
    before = used_memory(client)
    start = time.perf_counter()
    loaded, marks = insert(client, store.prefix, templates, budget_s)
    insert_s = time.perf_counter() - start
    wait_indexed(client, store.index_name, loaded, timeout_s=max(600.0, budget_s))
    build_s = time.perf_counter() - start
    info = info_map(client, store.index_name)
    return {"rows_built": loaded, "complete": loaded == len(templates),
            "insert_s": round(insert_s, 1), "build_s": round(build_s, 1),
            "build_s_per_100k": round(build_s / loaded * 1e5, 1),
            "memory_mb": round((used_memory(client) - before) / 2**20, 1),
            "vector_index_mb": round(float(info["vector_index_sz_mb"]), 1),
            "marks": marks, "built_at_loadavg_1m": round(os.getloadavg()[0], 2),
            "built": time.strftime("%Y-%m-%d %H:%M:%S %z")}

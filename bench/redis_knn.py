"""Redis KNN (RediSearch FLAT and HNSW) against exact numpy search: latency and recall@1.

Synthetic gallery: `n` L2-normalised 128-D templates drawn around n/20 cluster centres
(so neighbours are close and the nearest one is not trivially far ahead); queries are
templates picked at random and perturbed, then renormalised. Ground truth is the exact
numpy top-1 over the whole gallery.

Templates are bulk-loaded with pipelined HSETs under the key layout and index of
`RedisWatchlistStore` (index created first, so load time includes building it); queries go
through `RedisWatchlistStore.search`, one probe per FT.SEARCH, sequentially, i.e. what a
matcher pays per face, with the store's expiry pre-filter. HNSW is queried at each
`--ef-runtime` on the same graph. numpy latency is one probe against the gallery in memory.

    .venv/bin/python bench/redis_knn.py [--sizes 1000,10000,100000] [--queries 300]
        [--noise 0.35] [--ef-runtime 10,64] [--url redis://...] [--json out.json]

Without --url it starts valkey + RediSearch from the PyPI wheels in a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one probe, one core: like a worker

import numpy as np
import redis
from facescreen.devstack.valkey import start_valkey, valkey_url
from facescreen.watchlist.redis_store import IndexKind, RedisWatchlistStore

PREFIX = "knnbench"


def gallery(n: int, dim: int, queries: int, noise: float,
            seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(1, n // 20), dim)).astype(np.float32)
    members = centres[rng.integers(0, len(centres), n)]
    templates = members + rng.normal(scale=0.6, size=(n, dim)).astype(np.float32)
    templates /= np.linalg.norm(templates, axis=1, keepdims=True)
    picked = templates[rng.integers(0, n, queries)]
    probes = picked + rng.normal(scale=noise / np.sqrt(dim), size=picked.shape).astype(np.float32)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    return templates, probes


def percentiles_ms(samples: list[float]) -> tuple[float, float]:
    p50, p99 = np.percentile(np.asarray(samples) * 1e3, [50, 99])
    return round(float(p50), 3), round(float(p99), 3)


def wait_indexed(client: redis.Redis, index: str, timeout_s: float = 1800) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = client.execute_command("FT.INFO", index)
        if isinstance(info, list):
            info = dict(zip(info[::2], info[1::2], strict=False))
        if int(info.get(b"indexing", 0)) == 0 and float(info.get(b"percent_indexed", 1)) >= 1:
            return
        time.sleep(0.2)
    raise TimeoutError(f"{index} still indexing after {timeout_s}s")


def load(client: redis.Redis, store: RedisWatchlistStore, templates: np.ndarray) -> float:
    """Pipelined HSETs, 1000 a round trip; seconds until the index has every template."""
    start = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    for i, vector in enumerate(templates):
        pipe.hset(f"{PREFIX}:tpl:s{i}:bench", mapping={
            "vec": vector.astype("<f4").tobytes(), "watchlist": "bench", "subject": f"s{i}",
            "expires": "inf"})
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    wait_indexed(client, store.index_name)
    return time.perf_counter() - start


def measure(store: RedisWatchlistStore, probes: np.ndarray, truth: np.ndarray,
            warmup: int = 20) -> dict[str, Any]:
    for probe in probes[:warmup]:
        store.search(probe[None], 1)
    times: list[float] = []
    hits = 0
    for probe, expected in zip(probes, truth, strict=True):
        start = time.perf_counter()
        (found,) = store.search(probe[None], 1)
        times.append(time.perf_counter() - start)
        hits += bool(found) and found[0].subject_id == f"s{expected}"
    p50, p99 = percentiles_ms(times)
    return {"p50_ms": p50, "p99_ms": p99, "recall_at_1": round(hits / len(probes), 4)}


def numpy_exact(templates: np.ndarray, probes: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    times: list[float] = []
    truth = np.empty(len(probes), np.int64)
    for i, probe in enumerate(probes):
        start = time.perf_counter()
        truth[i] = int(np.argmax(templates @ probe))
        times.append(time.perf_counter() - start)
    p50, p99 = percentiles_ms(times)
    return truth, {"p50_ms": p50, "p99_ms": p99, "recall_at_1": 1.0}


def run(url: str, sizes: list[int], dim: int, queries: int, noise: float,
        ef_runtimes: list[int]) -> list[dict[str, Any]]:
    client = redis.Redis.from_url(url)
    rows: list[dict[str, Any]] = []
    for n in sizes:
        templates, probes = gallery(n, dim, queries, noise)
        truth, exact = numpy_exact(templates, probes)
        rows.append({"n": n, "method": "numpy exact", **exact})
        print(f"n={n}: numpy {exact}", flush=True)
        for kind in ("FLAT", "HNSW"):
            client.flushall()
            index_kind: IndexKind = "HNSW" if kind == "HNSW" else "FLAT"
            store = RedisWatchlistStore(url, embedder="synthetic", dim=dim, prefix=PREFIX,
                                        index_kind=index_kind)
            store.matcher()  # creates the meta record and the (empty) index
            load_s = load(client, store, templates)
            memory_mb = int(client.info("memory")["used_memory"]) / 2**20
            for ef in ef_runtimes if kind == "HNSW" else [0]:
                store.hnsw_ef_runtime = ef
                result = measure(store, probes, truth)
                method = f"redis HNSW ef={ef}" if kind == "HNSW" else "redis FLAT"
                row = {"n": n, "method": method, **result, "load_s": round(load_s, 2),
                       "memory_mb": round(memory_mb, 1),
                       "p50_vs_numpy": round(result["p50_ms"] / max(exact["p50_ms"], 1e-6), 1)}
                rows.append(row)
                print(f"n={n}: {row}", flush=True)
            store.close()
    client.flushall()
    client.close()
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| templates | method | p50 ms | p99 ms | recall@1 | p50 / numpy | load+index s "
             "| Redis MB |", "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['n']:,} | {r['method']} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
                     f"{r['recall_at_1']:.3f} | {r.get('p50_vs_numpy', 1.0)} | "
                     f"{r.get('load_s', '')} | {r.get('memory_mb', '')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--noise", type=float, default=0.35,
                        help="probe perturbation norm (0.35: cosine ~0.94 to its template; "
                             "templates of one cluster are ~0.73 apart)")
    parser.add_argument("--ef-runtime", default="10,64", help="HNSW EF_RUNTIME values to query")
    parser.add_argument("--url", help="an existing Redis with RediSearch (it is FLUSHALLed!)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    efs = [int(s) for s in args.ef_runtime.split(",")]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        server = None if args.url else start_valkey(Path(tmp))
        try:
            url = args.url or valkey_url(server)  # type: ignore[arg-type]
            rows = run(url, sizes, args.dim, args.queries, args.noise, efs)
        finally:
            if server is not None:
                server.stop()
    report = {"dim": args.dim, "queries": args.queries, "noise": args.noise, "rows": rows,
              "wall_s": round(time.perf_counter() - started, 1)}
    print(json.dumps(report, indent=1))
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

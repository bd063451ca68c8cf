"""The app factory: everything under `/api/v1`, the dashboard at `/`.

`create_app(ctx)` wires the routers, the JSON error handlers, the body-size bound, the
per-token rate limiters, the live stream's feed (the store's change listener, or a poll
of the store when another process ingests) and, when the context asks for it, the
periodic alert retention job. Serve it with any ASGI server; `facescreen.api.server`
runs uvicorn with the access log masked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from facescreen.alerts.store.retention import RetentionJob
from facescreen.api import errors
from facescreen.api.auth import install_log_filter
from facescreen.api.context import ApiContext
from facescreen.api.ratelimit import RateLimiter
from facescreen.api.routes_alerts import router as alerts_router
from facescreen.api.routes_ops import router as ops_router
from facescreen.api.routes_search import router as search_router
from facescreen.api.routes_subjects import router as subjects_router
from facescreen.api.routes_watchlists import router as watchlists_router
from facescreen.api.uploads import BodyLimit

PREFIX = "/api/v1"
ROUTERS = (ops_router, alerts_router, watchlists_router, subjects_router, search_router)
STATIC_DIR = Path(__file__).resolve().parent / "static"
log = logging.getLogger("facescreen.api")


async def _poll_changes(ctx: ApiContext, every_s: float, overlap_s: float = 5.0) -> None:
    """Publish alerts another process changed, from the store's `changed_since`.

    Each poll asks from `overlap_s` before the previous one began (a change committed
    late, or a clock a little apart, is not missed) and drops what it already sent
    (same alert, revision and review).
    """
    after = time.time()
    sent: dict[str, tuple[tuple[object, ...], float]] = {}
    while True:
        await asyncio.sleep(every_s)
        began = time.time()
        try:
            changed = await run_in_threadpool(ctx.alerts.changed_since, after - overlap_s, 1000)
        except Exception as exc:  # the next poll tries again
            log.warning("alert poll failed", extra={"fields": {"error": type(exc).__name__}})
            continue
        for record in changed:
            key = (record.revision, record.review, record.reviewed_at)
            if sent.get(record.alert_id, ((), 0.0))[0] != key:
                ctx.broadcaster.publish(record)
            sent[record.alert_id] = (key, began)
        sent = {k: v for k, v in sent.items() if v[1] > began - 4 * overlap_s - every_s}
        after = began


def create_app(ctx: ApiContext, *, static_dir: Path | None = STATIC_DIR) -> FastAPI:
    """The API over `ctx`; the dashboard is served from `static_dir` if that folder exists."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        retention = (None if ctx.retention_s is None
                     else RetentionJob(ctx.alerts, ctx.retention_s, ctx.purge_interval_s).start())
        poll = (None if ctx.poll_changes_s is None
                else asyncio.create_task(_poll_changes(ctx, ctx.poll_changes_s)))
        try:
            yield
        finally:
            ctx.broadcaster.close()
            if retention is not None:
                retention.stop()
            if poll is not None:
                poll.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poll

    app = FastAPI(title="facescreen", version="1",
                  description="Watchlist alerts for human review: alerts, reviews, "
                              "watchlists, enrolment, search, audit.",
                  lifespan=lifespan)
    app.state.ctx = ctx
    if ctx.poll_changes_s is None:
        ctx.broadcaster.attach(ctx.alerts)
    app.state.limiters = {
        "enrol": RateLimiter(ctx.limits.enrol_per_minute, ctx.limits.enrol_burst),
        "search": RateLimiter(ctx.limits.search_per_minute, ctx.limits.search_burst),
    }
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router, prefix=PREFIX)
    app.add_middleware(BodyLimit, max_bytes=ctx.limits.max_request_bytes)
    install_log_filter()
    if static_dir is not None and static_dir.is_dir():
        app.mount("/", StaticFiles(directory=static_dir, html=True), name="dashboard")
    return app

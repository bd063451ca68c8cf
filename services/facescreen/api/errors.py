"""Every error is JSON `{"detail": "<one line>"}` with a 4xx that says what to fix.

FastAPI's own validation errors are lists of objects; the dashboard and scripts would
have to dig the reason out, so they are flattened to one line here ("query.limit: Input
should be less than or equal to 500"). Store failures are 503 with the store's one-line
reason (no traceback, no URL password: the stores already mask them).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from facescreen.alerts.store.records import AlertNotFound, InvalidCursor, StoreError
from facescreen.watchlist.store import WatchlistError

log = logging.getLogger("facescreen.api")


class RequestTooLarge(Exception):  # noqa: N818 - reads as the HTTP status it becomes
    """The request body passed the API's byte limit while it was being read."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body larger than {limit:,} bytes")


def error(status: int, detail: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status,
                        headers=None if headers is None else dict(headers))


def _flatten(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    more = len(exc.errors()) - 3
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def install(app: FastAPI) -> None:
    """Register the handlers that give every failure its JSON one-liner."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error(422, _flatten(exc))

    @app.exception_handler(RequestTooLarge)
    async def too_large(_: Request, exc: RequestTooLarge) -> JSONResponse:
        return error(413, str(exc), {"Connection": "close"})

    @app.exception_handler(AlertNotFound)
    async def no_alert(_: Request, exc: AlertNotFound) -> JSONResponse:
        return error(404, str(exc) or "no such alert")

    @app.exception_handler(InvalidCursor)
    async def bad_cursor(_: Request, exc: InvalidCursor) -> JSONResponse:
        return error(400, str(exc) or "bad cursor")

    @app.exception_handler(StoreError)
    async def store_down(_: Request, exc: StoreError) -> JSONResponse:
        log.warning("alert store error", extra={"fields": {"error": str(exc)[:300]}})
        return error(503, f"alert store: {exc}")

    @app.exception_handler(WatchlistError)
    async def watchlist_error(_: Request, exc: WatchlistError) -> JSONResponse:
        text = str(exc)
        if any(word in text for word in _OUTAGE):
            log.warning("watchlist store error", extra={"fields": {"error": text[:300]}})
            return error(503, f"watchlist store: {text}")
        return error(400, text)


# The stores' messages for a store that cannot serve (as opposed to a refused request).
_OUTAGE = ("unreachable", "not writable", "corrupt", "refused the credentials",
           "no vector search", "cannot write", "search incomplete")

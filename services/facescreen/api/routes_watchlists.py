"""Watchlists: read (viewer), create, change and delete (admin); every change audited.

A watchlist's threshold decides who gets flagged, so changes go through the store's own
checks (one for both stores) and carry the admin's reason into the audit trail.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Path, Request, Response
from starlette.concurrency import run_in_threadpool

from facescreen.api.auth import GuardedRoute, actor, principal, role
from facescreen.api.context import ApiContext
from facescreen.api.schemas import NAME_MAX, NewWatchlist, WatchlistOut, WatchlistSettings
from facescreen.watchlist.store import (
    Watchlist,
    WatchlistError,
    calibration_stale,
    check_name,
    gallery_size,
)

router = APIRouter(route_class=GuardedRoute, tags=["watchlists"])
WatchlistName = Path(min_length=1, max_length=NAME_MAX)


def _ctx(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


def _out(ctx: ApiContext, wl: Watchlist) -> WatchlistOut:
    subjects = ctx.watchlists.subjects()
    size = gallery_size(subjects, wl.name)
    members = sum(1 for s in subjects.values() if wl.name in s.watchlists)
    return WatchlistOut.of(wl, members, calibration_stale(wl, size))


@router.get("/watchlists", response_model=list[WatchlistOut], openapi_extra=role("viewer"))
def list_watchlists(request: Request) -> list[WatchlistOut]:
    """Highest priority first, then by name."""
    ctx = _ctx(request)
    lists = sorted(ctx.watchlists.watchlists().values(), key=lambda w: (-w.priority, w.name))
    return [_out(ctx, wl) for wl in lists]


@router.post("/watchlists", response_model=WatchlistOut, status_code=201,
             openapi_extra=role("admin"))
def create_watchlist(body: NewWatchlist, request: Request) -> WatchlistOut:
    ctx = _ctx(request)
    try:
        check_name(body.name, "watchlist")
    except WatchlistError as exc:
        raise HTTPException(400, str(exc)) from None
    if body.name in ctx.watchlists.watchlists():
        raise HTTPException(409, f"watchlist {body.name!r} exists: PATCH it instead")
    return _out(ctx, _set(ctx, request, body.name, body))


@router.get("/watchlists/{name}", response_model=WatchlistOut, openapi_extra=role("viewer"))
def get_watchlist(request: Request, name: str = WatchlistName) -> WatchlistOut:
    ctx = _ctx(request)
    return _out(ctx, _existing(ctx, name))


@router.patch("/watchlists/{name}", response_model=WatchlistOut, openapi_extra=role("admin"))
def change_watchlist(body: WatchlistSettings, request: Request,
                     name: str = WatchlistName) -> WatchlistOut:
    ctx = _ctx(request)
    _existing(ctx, name)
    return _out(ctx, _set(ctx, request, name, body))


@router.delete("/watchlists/{name}", status_code=204, openapi_extra=role("admin"))
async def delete_watchlist(request: Request, name: str = WatchlistName,
                           reason: str = "") -> Response:
    """Only an empty list: take its subjects off (or delete them) first."""
    ctx = _ctx(request)
    lists = await run_in_threadpool(ctx.watchlists.watchlists)
    if name not in lists:
        raise HTTPException(404, f"unknown watchlist {name!r}")
    try:
        await run_in_threadpool(lambda: ctx.watchlists.delete_watchlist(
            name, actor=actor(principal(request)), reason=reason[:1000]))
    except WatchlistError as exc:
        if "subject" in str(exc):
            raise HTTPException(409, str(exc)) from None
        raise
    return Response(status_code=204)


def _existing(ctx: ApiContext, name: str) -> Watchlist:
    found = ctx.watchlists.watchlists().get(name)
    if found is None:
        raise HTTPException(404, f"unknown watchlist {name!r}")
    return found


def _set(ctx: ApiContext, request: Request, name: str, body: WatchlistSettings) -> Watchlist:
    try:
        return ctx.watchlists.set_watchlist(
            name, actor=actor(principal(request)), reason=body.reason,
            threshold=body.threshold, description=body.description,
            target_fpir=body.target_fpir, priority=body.priority, route=body.route)
    except WatchlistError as exc:
        if "unreachable" in str(exc) or "not writable" in str(exc):
            raise
        raise HTTPException(400, str(exc)) from None

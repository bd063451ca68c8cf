"""Health (public), the caller's own token (viewer), camera status (viewer), audit (admin)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from facescreen.alerts.store import TokenRecord
from facescreen.api.auth import PUBLIC, GuardedRoute, principal, role
from facescreen.api.common import ctx_of
from facescreen.api.schemas import AuditPage, Health, Me

router = APIRouter(route_class=GuardedRoute, tags=["operations"])


@router.get("/health", response_model=Health, openapi_extra=role(PUBLIC),
            responses={503: {"model": Health, "description": "a store cannot be reached"}})
def health(request: Request) -> JSONResponse:
    """Whether both stores answer; says nothing else (no auth, so no names or counts)."""
    ctx = ctx_of(request)
    checks: dict[str, str] = {}
    for name, probe in (("alert_store", ctx.alerts.ping), ("watchlist_store",
                                                           ctx.watchlists.watchlists)):
        try:
            probe()
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"down ({type(exc).__name__})"
    ok = all(v == "ok" for v in checks.values())
    body = Health(status="ok" if ok else "degraded", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get("/me", response_model=Me, openapi_extra=role("viewer"))
def me(request: Request) -> Me:
    record: TokenRecord = principal(request)
    return Me(token_id=record.token_id, name=record.name, role=record.role)


@router.get("/cameras", response_model=list[dict[str, Any]], openapi_extra=role("viewer"))
def cameras(request: Request) -> list[dict[str, Any]]:
    """Each camera's status as the pipeline reports it (name, state, fps, last frame...)."""
    return list(ctx_of(request).cameras())


@router.get("/audit", response_model=AuditPage, openapi_extra=role("admin"))
def audit(request: Request,
          since: Annotated[float | None, Query(ge=0, le=1e12, description="Unix seconds")] = None,
          action: Annotated[str | None, Query(max_length=64)] = None,
          limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> AuditPage:
    """Newest first: who changed, searched or read what, when and why."""
    entries = [e for e in ctx_of(request).watchlists.audit_log()
               if (since is None or float(e.get("time", 0)) >= since)
               and (action is None or e.get("action") == action)]
    return AuditPage(entries=list(reversed(entries))[:limit])

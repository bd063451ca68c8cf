"""Bearer tokens and roles, checked before a request's body is read.

Each route declares the least role it needs once, in its OpenAPI extension
`x-required-role` ("public", "viewer", "reviewer" or "admin"); `GuardedRoute` refuses to
build a route that declares none, and checks the token before FastAPI parses anything,
so an anonymous client gets 401 (not a validation error, not a multipart parse) from
every endpoint. The tests walk the same route table to prove it.

The token is looked up through the alert store's `check_token` (SHA-256 of the secret;
revoked tokens are not found). Only the stream endpoint also takes `?access_token=`,
because the browser's EventSource cannot set headers; the access-log filter here masks
it, and nothing in the API logs a header.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response, Security
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from starlette.concurrency import run_in_threadpool

from facescreen.alerts.store import TokenRecord
from facescreen.alerts.store.records import ROLES, role_allows

ROLE_KEY = "x-required-role"
QUERY_TOKEN_KEY = "x-token-in-query"
PUBLIC = "public"
_BEARER = HTTPBearer(auto_error=False, description="an API token (`facescreen tokens create`)")
_ERROR = {"content": {"application/json": {"schema": {
    "type": "object", "properties": {"detail": {"type": "string"}}, "required": ["detail"]}}}}


def role(name: str, *, query_token: bool = False) -> dict[str, Any]:
    """The `openapi_extra` of a route that needs role `name` (or "public")."""
    if name != PUBLIC and name not in ROLES:
        raise ValueError(f"unknown role {name!r}")
    extra: dict[str, Any] = {ROLE_KEY: name}
    if query_token:
        extra[QUERY_TOKEN_KEY] = True
    return extra


def unauthorized(reason: str) -> HTTPException:
    return HTTPException(401, reason, headers={"WWW-Authenticate": "Bearer"})


def presented_token(request: Request, allow_query: bool) -> str | None:
    """The secret the client sent: `Authorization: Bearer`, or `?access_token=` if allowed."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise unauthorized("the Authorization header must be 'Bearer <token>'")
        return value.strip()
    if allow_query:
        return request.query_params.get("access_token") or None
    return None


async def authenticate(request: Request, need: str, allow_query: bool) -> TokenRecord:
    """The token's record, or 401 (none, unknown, revoked) / 403 (role too low)."""
    secret = presented_token(request, allow_query)
    if secret is None:
        raise unauthorized("no API token: send 'Authorization: Bearer <token>'")
    if len(secret) > 512:
        raise unauthorized("invalid or revoked API token")
    store = request.app.state.ctx.alerts
    record: TokenRecord | None = await run_in_threadpool(store.check_token, secret)
    if record is None or record.revoked:
        raise unauthorized("invalid or revoked API token")
    if not role_allows(record.role, need):
        raise HTTPException(403, f"this needs the {need} role; the token has {record.role}")
    return record


class GuardedRoute(APIRoute):
    """An APIRoute that authenticates by its declared role before anything else runs."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        extra = kwargs.get("openapi_extra") or {}
        need = extra.get(ROLE_KEY)
        if need != PUBLIC and need not in ROLES:
            raise ValueError(f"route {path} declares no role (openapi_extra=role(...))")
        if need != PUBLIC:
            kwargs["dependencies"] = [*(kwargs.get("dependencies") or []), Security(_BEARER)]
            responses = dict(kwargs.get("responses") or {})
            responses.setdefault(401, {"description": "no, unknown or revoked token", **_ERROR})
            responses.setdefault(403, {"description": f"needs the {need} role", **_ERROR})
            kwargs["responses"] = responses
        self.required_role: str = need
        self.query_token = bool(extra.get(QUERY_TOKEN_KEY))
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.required_role == PUBLIC:
            return handler
        need, allow_query = self.required_role, self.query_token

        async def guarded(request: Request) -> Response:
            request.state.principal = await authenticate(request, need, allow_query)
            return await handler(request)

        return guarded


def principal(request: Request) -> TokenRecord:
    """The authenticated token of this request (a dependency for handlers)."""
    record: TokenRecord = request.state.principal
    return record


def actor(record: TokenRecord) -> str:
    """Who the audit trail names: the token's name and id (names need not be unique)."""
    return f"{record.name[:200]} (token {record.token_id})"


_QUERY_SECRET = re.compile(r"(?i)(access_token=)[^&\s\"']*")


class AccessTokenFilter(logging.Filter):
    """Masks `access_token=` in uvicorn's access lines (its args hold the full path)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_masked(a) for a in record.args)
        if isinstance(record.msg, str):
            record.msg = _QUERY_SECRET.sub(r"\1***", record.msg)
        return True


def _masked(arg: object) -> object:
    """The argument, or its text with the secret masked (URL objects included)."""
    if isinstance(arg, int | float) or arg is None:
        return arg
    text = str(arg)
    return _QUERY_SECRET.sub(r"\1***", text) if "access_token=" in text.lower() else arg


def install_log_filter() -> None:
    """Attach the filter to the loggers that print request paths (idempotent)."""
    for name in ("uvicorn.access", "uvicorn.error", "httpx"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, AccessTokenFilter) for f in logger.filters):
            logger.addFilter(AccessTokenFilter())

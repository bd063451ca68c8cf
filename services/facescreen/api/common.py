"""Small pieces the routers share: the context, rate limiting, analyzer runs, bodies."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool

from facescreen.api.auth import principal
from facescreen.api.context import ApiContext
from facescreen.api.ratelimit import RateLimiter
from facescreen.core.types import Face, ImageBGR
from facescreen.watchlist.enrol import EnrolledFace, EnrolmentError, enrol_pictures


def ctx_of(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


def limit(request: Request, bucket: str) -> None:
    """429 with Retry-After when this token has used up its `bucket` for now."""
    limiter: RateLimiter = request.app.state.limiters[bucket]
    wait = limiter.take(principal(request).token_id)
    if wait:
        raise HTTPException(429, f"rate limit for {bucket}: try again in {wait} s",
                            headers={"Retry-After": str(wait)})


def _enrol(ctx: ApiContext, pictures: Sequence[tuple[str, ImageBGR]],
           face: str | None) -> list[EnrolledFace]:
    analyzer = ctx.face_analyzer()
    with ctx.analyzer_lock:
        return enrol_pictures(analyzer, pictures, face)


async def embed_for_enrolment(ctx: ApiContext, pictures: Sequence[tuple[str, ImageBGR]],
                              face: str | None) -> list[EnrolledFace]:
    """One face per picture under the enrolment quality bar, or 422 listing each refusal."""
    try:
        return await run_in_threadpool(_enrol, ctx, pictures, face)
    except EnrolmentError as exc:
        text = str(exc).replace("\n  ", " | ").replace(
            "choose one with --face largest or --face N (0 = largest)",
            "choose one with the field face=largest or face=N (0 = largest)").replace(
            "--face ", "face=")
        raise HTTPException(422, text) from None


def _analyze(ctx: ApiContext, image: ImageBGR) -> list[Face]:
    analyzer = ctx.face_analyzer()
    with ctx.analyzer_lock:
        (faces,) = analyzer.analyze([image], analyzer.config.screening)
    return faces


async def analyze(ctx: ApiContext, image: ImageBGR) -> list[Face]:
    """The faces of one photo, judged by the screening quality bar (as a camera's are)."""
    return await run_in_threadpool(_analyze, ctx, image)


def multipart_body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """The OpenAPI request body of an endpoint that reads its multipart form itself."""
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "properties": properties, "required": required}}}}}


IMAGES = {"type": "array", "items": {"type": "string", "format": "binary"},
          "description": "JPEG, PNG, BMP or WebP photos, one face each"}

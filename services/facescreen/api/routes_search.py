"""1:N search of one photo against the watchlists (reviewer), rate limited and audited.

Search turns any photo into names, so it is the most sensitive read the API offers: it
needs the reviewer role, counts against a per-token rate, and every search is audited
with the searcher, the lists searched and the subjects returned (never the photo or its
embedding). Faces are judged by the screening quality bar, as a camera's face would be;
a face that fails it is reported with its reasons and not searched.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from facescreen.api.auth import GuardedRoute, actor, principal, role
from facescreen.api.common import analyze, ctx_of, limit, multipart_body
from facescreen.api.schemas import Match, SearchFace, SearchResult
from facescreen.api.uploads import read_upload

router = APIRouter(route_class=GuardedRoute, tags=["search"])
_BODY = multipart_body({
    "image": {"type": "string", "format": "binary", "description": "JPEG, PNG, BMP or WebP"},
    "watchlists": {"type": "string", "description": "comma-separated names; all when absent"},
    "reason": {"type": "string", "description": "kept in the audit log"},
}, ["image"])
MAX_FACES = 20


@router.post("/search", response_model=SearchResult, openapi_extra={**role("reviewer"), **_BODY})
async def search(request: Request) -> SearchResult:
    ctx = ctx_of(request)
    limit(request, "search")
    upload = await read_upload(request, ctx.limits, text={"watchlists", "reason"},
                               files="image", max_files=1)
    known = await run_in_threadpool(ctx.watchlists.watchlists)
    names = upload.text("watchlists", required=False)
    chosen = None if names is None else [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen or [] if n not in known]
    if unknown:
        raise HTTPException(422, f"unknown watchlist {unknown[0][:60]!r}")
    ((label, image),) = await upload.images(ctx.limits)
    faces = await analyze(ctx, image)
    faces = sorted(faces, key=lambda f: -(f.detection.width * f.detection.height))[:MAX_FACES]
    search_fn, thresholds = await run_in_threadpool(ctx.watchlists.matcher, chosen)
    out: list[SearchFace] = []
    for face in faces:
        matches: list[Match] = []
        if face.quality.passed and face.embedding is not None:
            (found,) = await run_in_threadpool(search_fn, face.embedding[None, :],
                                               ctx.limits.search_k)
            for c in found:
                limit_ = thresholds.get(c.watchlist)
                matches.append(Match(subject_id=c.subject_id, watchlist=c.watchlist,
                                     score=round(c.score, 6), threshold=limit_,
                                     above_threshold=limit_ is not None and c.score >= limit_))
        out.append(SearchFace(box=[round(v, 1) for v in face.detection.box],
                              quality=round(face.quality.score, 4),
                              quality_passed=face.quality.passed,
                              reasons=list(face.quality.reasons), candidates=matches))
    returned = sorted({m.subject_id for f in out for m in f.candidates})
    hits = sorted({m.subject_id for f in out for m in f.candidates if m.above_threshold})
    await run_in_threadpool(lambda: ctx.watchlists.record(
        actor=actor(principal(request)), action="search",
        reason=(upload.text("reason", required=False) or "")[:1000], watchlists=chosen,
        faces=len(out), returned=returned, matches=hits, photo_name=label))
    return SearchResult(faces=out)

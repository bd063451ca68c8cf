"""Subjects: enrolment from uploaded photos, audited reads, image removal and erasure.

Enrolment runs the pipeline's own analyzer and `enrol_pictures`, so an enrolled template
is exactly what the cameras' faces are compared with, under the stricter enrolment
quality bar; all images of a request are enrolled or none. Reads of subjects are
audited with the reader, like searches: who looked up whom is part of the record.
Erasure removes the templates and every alert (and crop) of the subject, and says so.
"""

from __future__ import annotations

import math
import time
from datetime import datetime

from fastapi import APIRouter, HTTPException, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from facescreen.api.auth import GuardedRoute, actor, principal, role
from facescreen.api.common import IMAGES, ctx_of, embed_for_enrolment, limit, multipart_body
from facescreen.api.context import ApiContext
from facescreen.api.schemas import NAME_MAX, TEXT_MAX, ErasureReport, SubjectOut
from facescreen.api.uploads import Upload, read_upload
from facescreen.watchlist.store import Subject, SubjectExistsError, WatchlistError, check_name

router = APIRouter(route_class=GuardedRoute, tags=["subjects"])
SubjectId = Path(min_length=1, max_length=NAME_MAX)
_TEXT = {"type": "string"}
_ENROL = multipart_body({
    "subject_id": _TEXT, "watchlist": _TEXT, "reason": _TEXT,
    "expires": {"type": "string", "description": "Unix seconds or ISO 8601 with a time zone"},
    "face": {"type": "string", "description": "'largest' or N (0 = largest) when a photo "
                                              "shows several faces"},
    "images": IMAGES}, ["subject_id", "watchlist", "reason", "images"])
_MORE = multipart_body({"reason": _TEXT, "face": _TEXT, "images": IMAGES},
                       ["reason", "images"])


@router.get("/subjects", response_model=list[SubjectOut], openapi_extra=role("viewer"))
def list_subjects(request: Request, watchlist: str | None = Query(None, max_length=NAME_MAX)
                  ) -> list[SubjectOut]:
    """Audited: the listing names people."""
    ctx = ctx_of(request)
    subjects = [s for s in ctx.watchlists.subjects().values()
                if watchlist is None or watchlist in s.watchlists]
    ctx.watchlists.record(actor=actor(principal(request)), action="list_subjects",
                          watchlist=watchlist, count=len(subjects))
    return [SubjectOut.of(s) for s in subjects]


@router.post("/subjects", response_model=SubjectOut, status_code=201,
             openapi_extra={**role("admin"), **_ENROL})
async def enrol(request: Request) -> SubjectOut:
    """Enrol a new subject on a watchlist from one or more photos (multipart)."""
    ctx = ctx_of(request)
    limit(request, "enrol")
    upload = await read_upload(request, ctx.limits, files="images",
                               text={"subject_id", "watchlist", "expires", "reason", "face"},
                               max_files=ctx.limits.max_images)
    subject_id, watchlist = _name(upload, "subject_id"), _name(upload, "watchlist")
    reason = _reason(upload)
    expires = parse_expiry(upload.text("expires", required=False))
    if watchlist not in await run_in_threadpool(ctx.watchlists.watchlists):
        raise HTTPException(422, f"unknown watchlist {watchlist!r}: create it first "
                                 "(POST /api/v1/watchlists)")
    if subject_id in await run_in_threadpool(ctx.watchlists.subjects):
        raise HTTPException(409, f"subject {subject_id!r} is already enrolled: add images "
                                 f"with POST /api/v1/subjects/{{id}}/images")
    try:
        return await _add(request, ctx, upload, subject_id, watchlist, reason, expires, new=True)
    except SubjectExistsError:  # enrolled meanwhile by a concurrent request
        raise HTTPException(409, f"subject {subject_id!r} is already enrolled: add images "
                                 f"with POST /api/v1/subjects/{{id}}/images") from None


@router.get("/subjects/{subject_id}", response_model=SubjectOut, openapi_extra=role("viewer"))
def get_subject(request: Request, subject_id: str = SubjectId) -> SubjectOut:
    """Audited read."""
    ctx = ctx_of(request)
    subject = _existing(ctx, subject_id)
    ctx.watchlists.record(actor=actor(principal(request)), action="read_subject",
                          subject=subject_id)
    return SubjectOut.of(subject)


@router.post("/subjects/{subject_id}/images", response_model=SubjectOut, status_code=201,
             openapi_extra={**role("admin"), **_MORE})
async def add_images(request: Request, subject_id: str = SubjectId) -> SubjectOut:
    """More photos of an enrolled subject; its template is recomputed over all of them."""
    ctx = ctx_of(request)
    limit(request, "enrol")
    upload = await read_upload(request, ctx.limits, files="images", text={"reason", "face"},
                               max_files=ctx.limits.max_images)
    reason = _reason(upload)
    subject = await run_in_threadpool(_existing, ctx, subject_id)
    return await _add(request, ctx, upload, subject_id, subject.watchlists[0], reason, None)


WatchlistName = Path(min_length=1, max_length=NAME_MAX)
Reason = Query(min_length=1, max_length=TEXT_MAX, description="why (audited)")


@router.put("/subjects/{subject_id}/watchlists/{watchlist}", response_model=SubjectOut,
            openapi_extra=role("admin"))
def add_to_watchlist(request: Request, subject_id: str = SubjectId,
                     watchlist: str = WatchlistName, reason: str = Reason) -> SubjectOut:
    """Put an enrolled subject on another (existing) watchlist with the photos it has;
    already on it: unchanged. Audited."""
    ctx = ctx_of(request)
    _existing(ctx, subject_id)
    if watchlist not in ctx.watchlists.watchlists():
        raise HTTPException(422, f"unknown watchlist {watchlist!r}: create it first "
                                 "(POST /api/v1/watchlists)")
    try:
        changed = ctx.watchlists.add_membership(subject_id, watchlist,
                                                actor=actor(principal(request)), reason=reason)
    except WatchlistError as exc:
        if "unknown subject" in str(exc):  # erased meanwhile
            raise HTTPException(404, str(exc)) from None
        raise
    return SubjectOut.of(changed)


@router.delete("/subjects/{subject_id}/watchlists/{watchlist}", response_model=SubjectOut,
               openapi_extra=role("admin"))
def remove_from_watchlist(request: Request, subject_id: str = SubjectId,
                          watchlist: str = WatchlistName, reason: str = Reason) -> SubjectOut:
    """Take a subject off one of its watchlists. Its last one is refused: that is an
    erasure (DELETE /api/v1/subjects/{id}), which also removes its alerts and crops."""
    ctx = ctx_of(request)
    subject = _existing(ctx, subject_id)
    if watchlist not in subject.watchlists:
        raise HTTPException(404, f"subject {subject_id!r} is not on watchlist {watchlist!r}")
    if subject.watchlists == [watchlist]:
        raise HTTPException(409, f"{watchlist!r} is the last watchlist of {subject_id!r}: "
                                 "erase the subject instead (DELETE /api/v1/subjects/{id})")
    ctx.watchlists.remove_subject(subject_id, watchlist=watchlist,
                                  actor=actor(principal(request)), reason=reason)
    return SubjectOut.of(_existing(ctx, subject_id))


@router.delete("/subjects/{subject_id}/images/{image_id}", response_model=SubjectOut,
               openapi_extra=role("admin"))
def remove_image(request: Request, subject_id: str = SubjectId,
                 image_id: str = Path(min_length=1, max_length=64),
                 reason: str = Query("", max_length=TEXT_MAX)) -> SubjectOut:
    ctx = ctx_of(request)
    subject = _existing(ctx, subject_id)
    if image_id not in {i.image_id for i in subject.images}:
        raise HTTPException(404, f"subject {subject_id!r} has no image {image_id!r}")
    try:
        changed = ctx.watchlists.remove_image(subject_id, image_id,
                                              actor=actor(principal(request)), reason=reason)
    except WatchlistError as exc:
        if "last" in str(exc):
            raise HTTPException(409, str(exc)) from None
        raise
    return SubjectOut.of(changed)


@router.delete("/subjects/{subject_id}", response_model=ErasureReport,
               openapi_extra=role("admin"))
def erase(request: Request, subject_id: str = SubjectId,
          reason: str = Query("", max_length=TEXT_MAX)) -> ErasureReport:
    """Delete the subject with every template, alert and crop; the report says what went."""
    ctx = ctx_of(request)
    who = actor(principal(request))
    subject = _existing(ctx, subject_id)
    # Alerts first: a failure after them leaves the subject to retry the erasure with;
    # again after the templates, for alerts that were in flight meanwhile.
    alerts, crops = ctx.alerts.erase_subject(subject_id)
    ctx.watchlists.remove_subject(subject_id, actor=who, reason=reason)
    late_alerts, late_crops = ctx.alerts.erase_subject(subject_id)
    alerts, crops = alerts + late_alerts, crops + late_crops
    ctx.watchlists.record(actor=who, action="erase_subject", reason=reason,
                          subject=subject_id, templates_removed=len(subject.images),
                          alerts_removed=alerts, crops_removed=crops)
    entry = next((e for e in reversed(ctx.watchlists.audit_log())
                  if e.get("action") == "erase_subject" and e.get("subject") == subject_id),
                 None)
    return ErasureReport(subject_id=subject_id, watchlists=list(subject.watchlists),
                         templates_removed=len(subject.images), alerts_removed=alerts,
                         crops_removed=crops,
                         audit_entry_id=None if entry is None else str(entry.get("id")))


async def _add(request: Request, ctx: ApiContext, upload: Upload, subject_id: str,
               watchlist: str, reason: str, expires: float | None,
               new: bool = False) -> SubjectOut:
    pictures = await upload.images(ctx.limits)
    enrolled = await embed_for_enrolment(ctx, pictures, upload.text("face", required=False))
    rows = [(e.label, e.quality, e.embedding) for e in enrolled]
    subject = await run_in_threadpool(lambda: ctx.watchlists.add_subject(
        subject_id, watchlist, rows, actor=actor(principal(request)), reason=reason,
        expires=expires, new=new))
    return SubjectOut.of(subject)


def _existing(ctx: ApiContext, subject_id: str) -> Subject:
    subject = ctx.watchlists.subjects().get(subject_id)
    if subject is None:
        raise HTTPException(404, f"unknown subject {subject_id!r}")
    return subject


def _name(upload: Upload, field: str) -> str:
    value = upload.text(field)
    assert value is not None
    try:
        check_name(value, field.replace("_id", ""))
    except WatchlistError as exc:
        raise HTTPException(400, f"{field}: {exc}") from None
    return value


def _reason(upload: Upload) -> str:
    reason = upload.text("reason")
    assert reason is not None
    if len(reason) > TEXT_MAX:
        raise HTTPException(400, f"reason longer than {TEXT_MAX} characters")
    return reason


MAX_EXPIRY_S = 20 * 365 * 86400.0


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise HTTPException(400, f"expires {text[:40]!r} is neither Unix seconds nor an "
                                 "ISO 8601 time") from None
    if moment.tzinfo is None:
        raise HTTPException(400, "expires needs a time zone (e.g. 2030-01-01T00:00:00Z)")
    return moment.timestamp()


def parse_expiry(text: str | None, now: float | None = None) -> float | None:
    """Unix seconds or ISO 8601 with a zone; in the future and within 20 years, or 400."""
    if text is None:
        return None
    now = time.time() if now is None else now
    value = _seconds(text)
    if not math.isfinite(value):
        raise HTTPException(400, "expires is not a finite time")
    if value <= now:
        raise HTTPException(400, "expires lies in the past")
    if value > now + MAX_EXPIRY_S:
        raise HTTPException(400, "expires lies more than 20 years ahead")
    return value

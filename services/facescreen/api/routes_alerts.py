"""Alerts: list, read, face crop, live stream (SSE) and the reviewer's verdicts.

A verdict is recorded in the alert store (history kept there), audited in the watchlist
store's trail like the CLI's `alerts reject`, and reaches the open streams through the
store's change listener, so every dashboard shows it. "Reject" ("not this person") also
goes to the matcher through the feedback sink, so the rejected track stops alerting for
that subject: the sink is called before the store is changed, so a verdict the matcher
never got is not shown as given.
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from facescreen.alerts.feedback import FeedbackError, new_feedback
from facescreen.alerts.store import AlertFilter, AlertRecord
from facescreen.api.auth import GuardedRoute, actor, presented_token, principal, role
from facescreen.api.context import ApiContext
from facescreen.api.schemas import AlertPage, Comment

router = APIRouter(route_class=GuardedRoute, tags=["alerts"])


def _ctx(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


@router.get("/alerts", response_model=AlertPage, openapi_extra=role("viewer"))
def list_alerts(
    request: Request,
    watchlist: Annotated[str | None, Query(max_length=255)] = None,
    camera: Annotated[str | None, Query(max_length=255)] = None,
    subject: Annotated[str | None, Query(max_length=255)] = None,
    review: Literal["new", "acknowledged", "rejected"] | None = None,
    state: Literal["open", "update", "closed"] | None = None,
    since: Annotated[float | None, Query(ge=0, le=1e12, description="Unix seconds")] = None,
    until: Annotated[float | None, Query(ge=0, le=1e12, description="Unix seconds")] = None,
    min_score: Annotated[float | None, Query(ge=-1.0, le=1.0)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> AlertPage:
    """Newest first; pass `next_cursor` back as `cursor` for the next page."""
    try:
        filters = AlertFilter(watchlist=watchlist, camera=camera, subject_id=subject,
                              review=review, state=state, since=since, until=until,
                              min_score=min_score)
    except ValidationError as exc:
        raise HTTPException(422, f"bad filter: {exc.errors()[0]['msg']}") from None
    items, next_cursor = _ctx(request).alerts.list(filters, limit=limit, cursor=cursor)
    return AlertPage(items=items, next_cursor=next_cursor)


@router.get("/alerts/stream", response_class=EventSourceResponse,
            openapi_extra=role("viewer", query_token=True))
async def stream_alerts(
    request: Request,
    watchlist: Annotated[str | None, Query(max_length=255)] = None,
    camera: Annotated[str | None, Query(max_length=255)] = None,
    access_token: Annotated[str | None, Query(description="for EventSource, which cannot "
                                                          "send headers")] = None,
) -> AsyncIterable[ServerSentEvent]:
    """Event `alert` with the AlertRecord JSON on each change; comments keep it alive.

    The token is checked again every few seconds without events: a revoked token's
    stream ends.
    """
    del access_token  # read (and checked) by the route guard; named here for the docs
    ctx = _ctx(request)
    secret = presented_token(request, allow_query=True)
    async with ctx.broadcaster.subscribe() as sub:
        yield ServerSentEvent(comment="connected", retry=3000)
        while True:
            try:
                item = await sub.next(ctx.limits.stream_recheck_s)
            except EOFError:
                return
            if item is None:
                if secret is None or await run_in_threadpool(ctx.alerts.check_token,
                                                              secret) is None:
                    return
                continue
            if (watchlist is not None and item.get("watchlist") != watchlist) or (
                    camera is not None and item.get("source") != camera):
                continue
            yield ServerSentEvent(event="alert", data=item,
                                  id=f"{item.get('alert_id')}:{item.get('revision')}")


@router.get("/alerts/{alert_id}", response_model=AlertRecord, openapi_extra=role("viewer"))
def get_alert(alert_id: str, request: Request) -> AlertRecord:
    record = _ctx(request).alerts.get(alert_id)
    if record is None:
        raise HTTPException(404, "no such alert")
    return record


@router.get("/alerts/{alert_id}/crop", openapi_extra=role("viewer"),
            responses={200: {"content": {"image/jpeg": {}}, "description": "the face crop"},
                       404: {"description": "no such alert, or no crop kept"}})
def get_crop(alert_id: str, request: Request) -> Response:
    """The best face of the alert as JPEG, when crops are kept (opt-in)."""
    data = _ctx(request).alerts.crop(alert_id)
    if data is None:
        raise HTTPException(404, "no crop for this alert (none kept, or no such alert)")
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@router.post("/alerts/{alert_id}/acknowledge", response_model=AlertRecord,
             openapi_extra=role("reviewer"))
def acknowledge(alert_id: str, request: Request, body: Comment | None = None) -> AlertRecord:
    """Confirm the alert (the reviewer found it right, or dealt with it)."""
    return _review(request, alert_id, "acknowledge", (body or Comment()).comment)


@router.post("/alerts/{alert_id}/reject", response_model=AlertRecord,
             openapi_extra=role("reviewer"))
def reject(alert_id: str, request: Request, body: Comment | None = None) -> AlertRecord:
    """"Not this person": recorded, and sent to the matcher as feedback."""
    return _review(request, alert_id, "reject", (body or Comment()).comment)


def _review(request: Request, alert_id: str, verdict: Literal["acknowledge", "reject"],
            comment: str) -> AlertRecord:
    ctx = _ctx(request)
    who = actor(principal(request))
    current = ctx.alerts.get(alert_id)
    if current is None:
        raise HTTPException(404, "no such alert")
    details: dict[str, str | None] = {"alert_id": current.alert_id, "camera": current.source}
    if verdict == "reject":
        try:
            feedback = new_feedback(current.alert_id, actor=who, comment=comment,
                                    camera=current.source)
        except FeedbackError as exc:
            raise HTTPException(400, str(exc)) from None
        ctx.feedback(feedback)
        details["feedback_id"] = feedback.feedback_id
    record = ctx.alerts.review(current.alert_id, verdict, actor=who, comment=comment)
    ctx.watchlists.record(actor=who, action=f"{verdict}_alert", reason=comment,
                          subject=current.subject_id, watchlist=current.watchlist, **details)
    return record  # the store's listener (or poller) tells the open streams

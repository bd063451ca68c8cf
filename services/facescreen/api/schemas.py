"""Request and response bodies of the API (the alert record is the store's own model).

Requests forbid unknown fields: a typo in `threshhold` must be a 422, not a silent
no-op on a watchlist that decides who gets flagged.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from facescreen.alerts.store import AlertRecord
from facescreen.watchlist.store import EnrolledImage, Subject, Watchlist

NAME_MAX = 200
TEXT_MAX = 1000


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Comment(Strict):
    comment: str = Field(default="", max_length=TEXT_MAX)


class WatchlistSettings(Strict):
    """The settings an admin may change (PATCH: only those given)."""

    threshold: float | None = Field(default=None, ge=-1.0, le=1.0,
                                    description="cosine similarity an alert needs")
    target_fpir: float | None = Field(default=None, gt=0.0, lt=1.0,
                                      description="the false-positive identification rate "
                                                  "the threshold is meant to give")
    description: str | None = Field(default=None, max_length=TEXT_MAX)
    priority: int | None = Field(default=None, ge=0, le=100, description="higher is more urgent")
    route: str | None = Field(default=None, max_length=NAME_MAX,
                              description="alert route (webhook) name; empty for none")
    reason: str = Field(default="", max_length=TEXT_MAX, description="kept in the audit log")

    @field_validator("threshold", "target_fpir")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


class NewWatchlist(WatchlistSettings):
    name: str = Field(min_length=1, max_length=NAME_MAX)


class WatchlistOut(BaseModel):
    name: str
    threshold: float
    target_fpir: float | None
    description: str
    priority: int
    route: str
    calibrated: bool
    calibration_stale: bool
    subjects: int

    @classmethod
    def of(cls, wl: Watchlist, subjects: int, stale: bool) -> WatchlistOut:
        return cls(name=wl.name, threshold=wl.threshold, target_fpir=wl.target_fpir,
                   description=wl.description, priority=wl.priority, route=wl.route,
                   calibrated=bool(wl.calibration), calibration_stale=stale, subjects=subjects)


class ImageOut(BaseModel):
    image_id: str
    label: str
    quality: float
    added: float

    @classmethod
    def of(cls, image: EnrolledImage) -> ImageOut:
        return cls(image_id=image.image_id, label=image.label, quality=image.quality,
                   added=image.added)


class SubjectOut(BaseModel):
    subject_id: str
    watchlists: list[str]
    created: float
    expires: float | None
    images: list[ImageOut]

    @classmethod
    def of(cls, subject: Subject) -> SubjectOut:
        return cls(subject_id=subject.subject_id, watchlists=list(subject.watchlists),
                   created=subject.created, expires=subject.expires,
                   images=[ImageOut.of(i) for i in subject.images])


class ErasureReport(BaseModel):
    """What deleting a subject removed, for the data-protection record."""

    subject_id: str
    watchlists: list[str]
    templates_removed: int = Field(description="enrolled images (embeddings) deleted")
    alerts_removed: int
    crops_removed: int
    audit_entry_id: str | None


class AlertPage(BaseModel):
    items: list[AlertRecord]
    next_cursor: str | None


class Match(BaseModel):
    subject_id: str
    watchlist: str
    score: float
    threshold: float | None
    above_threshold: bool


class SearchFace(BaseModel):
    box: list[float]
    quality: float
    quality_passed: bool
    reasons: list[str]
    candidates: list[Match]


class SearchResult(BaseModel):
    faces: list[SearchFace]
    audit: str = "search recorded with your token's name"


class Me(BaseModel):
    token_id: str
    name: str
    role: str


class Health(BaseModel):
    status: str
    checks: dict[str, str]


class AuditPage(BaseModel):
    entries: list[dict[str, Any]]

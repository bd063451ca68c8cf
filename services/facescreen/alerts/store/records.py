"""What the alert store hands out: pydantic records (also the API's response models),
the list filter, and the errors callers tell apart.

Records are plain values, detached from any database session: a caller can keep them,
serialise them (`model_dump()`) or send them over SSE without touching the database.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

AlertState = Literal["open", "update", "closed"]
ReviewState = Literal["new", "acknowledged", "rejected"]
Verdict = Literal["acknowledge", "reject"]
Role = Literal["viewer", "reviewer", "admin"]
DeliveryStatus = Literal["pending", "delivered", "dead"]

ROLES: tuple[Role, ...] = ("viewer", "reviewer", "admin")  # each includes the ones before
VERDICT_STATE: dict[str, ReviewState] = {"acknowledge": "acknowledged", "reject": "rejected"}


def role_allows(have: str, need: str) -> bool:
    """True when role `have` may do what needs `need` (viewer < reviewer < admin)."""
    if have not in ROLES or need not in ROLES:
        return False
    return ROLES.index(have) >= ROLES.index(need)


class StoreError(Exception):
    """The store cannot do what was asked; the message is one line, fit for a user."""


class AlertNotFound(StoreError, LookupError):  # noqa: N818 - named by the contract
    """No alert with that id (never stored, purged or erased)."""


class ReviewConflict(StoreError):  # noqa: N818 - named by the contract
    """The alert's review state is not the one the reviewer expected (`review(expect=)`)."""


class TokenNotFound(StoreError, LookupError):  # noqa: N818 - parallels AlertNotFound
    """No token with that id."""


class InvalidAlert(StoreError, ValueError):  # noqa: N818 - a verdict on the input
    """An alert event that is not schema version 2; the message names the field, not values."""


class InvalidCursor(StoreError, ValueError):  # noqa: N818 - a verdict on the input
    """A pagination cursor this store did not hand out."""


class AlertRecord(BaseModel):
    """The latest revision of one alert, with its review state."""

    model_config = ConfigDict(frozen=True)

    alert_id: str
    source: str
    subject_id: str
    watchlist: str
    state: AlertState
    revision: int
    score: float
    threshold: float
    captured_at: float
    emitted_at: float
    track_first_seen: float
    frame_index: int
    box: list[float]
    quality: float
    evidence: dict[str, Any]
    review: ReviewState
    reviewed_by: str | None
    reviewed_at: float | None
    review_comment: str | None
    crop_available: bool


class ReviewRecord(BaseModel):
    """One verdict in an alert's review history."""

    model_config = ConfigDict(frozen=True)

    review_id: int
    alert_id: str
    verdict: Verdict
    actor: str
    comment: str
    revision: int
    at: float


class TokenRecord(BaseModel):
    """An API token as the store knows it: never its secret."""

    model_config = ConfigDict(frozen=True)

    token_id: str
    name: str
    role: Role
    created_at: float
    revoked_at: float | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


class DeliveryRecord(BaseModel):
    """One webhook delivery of one alert revision to one route."""

    model_config = ConfigDict(frozen=True)

    id: int
    alert_id: str
    revision: int
    route: str
    url: str
    attempts: int
    status: DeliveryStatus
    next_attempt_at: float | None
    last_error: str | None
    created_at: float


class AlertFilter(BaseModel):
    """What `AlertStore.list` selects; every field left None selects everything.

    `since` (inclusive) and `until` (exclusive) bound `emitted_at` (when the revision was
    made, Unix time), or `captured_at` (the source's clock) with `time_field="captured"`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    watchlist: str | None = None
    camera: str | None = None
    subject_id: str | None = None
    review: ReviewState | None = None
    state: AlertState | None = None
    since: float | None = None
    until: float | None = None
    min_score: float | None = Field(default=None, ge=-1.0, le=1.0)
    time_field: Literal["emitted", "captured"] = "emitted"

    @model_validator(mode="after")
    def _window(self) -> AlertFilter:
        if self.since is not None and self.until is not None and self.until < self.since:
            raise ValueError("until is before since")
        return self

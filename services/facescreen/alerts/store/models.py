"""The tables of the alert store (SQLAlchemy 2 ORM), one schema for SQLite and PostgreSQL.

Times are Unix seconds as double precision, like the alert events themselves: the
event's `captured_at`/`emitted_at` round-trip exactly, and one type serves both
databases. Each alert is one row (its highest revision so far); reviews, webhook
deliveries and crops hang off it and go with it (ON DELETE CASCADE, and the repository
deletes them explicitly too, so erasure never depends on SQLite's foreign-key pragma).

The migrations in `alerts/migrations` are written by hand from these classes and a test
checks that the two agree (`alembic check`); change both together.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Named constraints: Alembic needs names to alter or drop them later (SQLite batch mode).
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

NAME = 255  # longest source, subject, watchlist, actor or route name kept


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class AlertRow(Base):
    """The latest (highest) revision of one alert, with its review state."""

    __tablename__ = "alerts"

    alert_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    source: Mapped[str] = mapped_column(String(NAME), index=True)
    subject_id: Mapped[str] = mapped_column(String(NAME), index=True)
    watchlist: Mapped[str] = mapped_column(String(NAME), index=True)
    state: Mapped[str] = mapped_column(String(8))
    revision: Mapped[int] = mapped_column(Integer)
    score: Mapped[float] = mapped_column(Double)
    threshold: Mapped[float] = mapped_column(Double)
    captured_at: Mapped[float] = mapped_column(Double)
    emitted_at: Mapped[float] = mapped_column(Double)
    track_id: Mapped[int] = mapped_column(BigInteger)
    track_first_seen: Mapped[float] = mapped_column(Double)
    frame_index: Mapped[int] = mapped_column(BigInteger)
    box: Mapped[list[float]] = mapped_column(JSON)
    quality: Mapped[float] = mapped_column(Double)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON)
    models: Mapped[dict[str, Any]] = mapped_column(JSON)
    review: Mapped[str] = mapped_column(String(12), default="new")
    reviewed_by: Mapped[str | None] = mapped_column(String(NAME))
    reviewed_at: Mapped[float | None] = mapped_column(Double)
    review_comment: Mapped[str | None] = mapped_column(Text)
    crop_path: Mapped[str | None] = mapped_column(String(NAME))  # file name in the crops folder
    stored_at: Mapped[float] = mapped_column(Double)  # when the store first saw the alert
    updated_at: Mapped[float] = mapped_column(Double, index=True)  # last change (ingest/review)

    __table_args__ = (
        CheckConstraint("state IN ('open', 'update', 'closed')", name="state"),
        CheckConstraint("review IN ('new', 'acknowledged', 'rejected')", name="review"),
        CheckConstraint("revision >= 0", name="revision"),
        # Keyset pagination, newest first: (emitted_at, alert_id) is the sort key.
        Index("ix_alerts_emitted_at_alert_id", "emitted_at", "alert_id"),
        Index("ix_alerts_captured_at", "captured_at"),
    )


class ReviewRow(Base):
    """One reviewer's verdict; every one is kept (the last one is the alert's state)."""

    __tablename__ = "alert_reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alert_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("alerts.alert_id", ondelete="CASCADE"), index=True)
    verdict: Mapped[str] = mapped_column(String(12))
    actor: Mapped[str] = mapped_column(String(NAME))
    comment: Mapped[str] = mapped_column(Text)
    revision: Mapped[int] = mapped_column(Integer)  # the alert's revision the reviewer saw
    at: Mapped[float] = mapped_column(Double)

    __table_args__ = (
        CheckConstraint("verdict IN ('acknowledge', 'reject')", name="verdict"),
    )


class TokenRow(Base):
    """An API token: only the SHA-256 of its secret is stored."""

    __tablename__ = "api_tokens"

    token_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME))
    role: Mapped[str] = mapped_column(String(16))
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Double)
    revoked_at: Mapped[float | None] = mapped_column(Double)

    __table_args__ = (
        CheckConstraint("role IN ('viewer', 'reviewer', 'admin')", name="role"),
    )


class DeliveryRow(Base):
    """One webhook delivery of one alert revision to one route (for `alerts.webhooks`)."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alert_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("alerts.alert_id", ondelete="CASCADE"), index=True)
    revision: Mapped[int] = mapped_column(Integer)
    route: Mapped[str] = mapped_column(String(NAME))
    url: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(12), default="pending")
    next_attempt_at: Mapped[float | None] = mapped_column(Double)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Double)

    __table_args__ = (
        UniqueConstraint("alert_id", "revision", "route", name="uq_webhook_deliveries_key"),
        CheckConstraint("status IN ('pending', 'delivered', 'dead')", name="status"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    )

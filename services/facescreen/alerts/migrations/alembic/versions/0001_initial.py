"""Initial schema: alerts, their reviews, API tokens, webhook deliveries.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

NAME = 255


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("alert_id", sa.String(36), nullable=False),
        sa.Column("source", sa.String(NAME), nullable=False),
        sa.Column("subject_id", sa.String(NAME), nullable=False),
        sa.Column("watchlist", sa.String(NAME), nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("score", sa.Double(), nullable=False),
        sa.Column("threshold", sa.Double(), nullable=False),
        sa.Column("captured_at", sa.Double(), nullable=False),
        sa.Column("emitted_at", sa.Double(), nullable=False),
        sa.Column("track_id", sa.BigInteger(), nullable=False),
        sa.Column("track_first_seen", sa.Double(), nullable=False),
        sa.Column("frame_index", sa.BigInteger(), nullable=False),
        sa.Column("box", sa.JSON(), nullable=False),
        sa.Column("quality", sa.Double(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("models", sa.JSON(), nullable=False),
        sa.Column("review", sa.String(12), nullable=False),
        sa.Column("reviewed_by", sa.String(NAME), nullable=True),
        sa.Column("reviewed_at", sa.Double(), nullable=True),
        sa.Column("review_comment", sa.Text(), nullable=True),
        sa.Column("crop_path", sa.String(NAME), nullable=True),
        sa.Column("stored_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.CheckConstraint("state IN ('open', 'update', 'closed')", name=op.f("ck_alerts_state")),
        sa.CheckConstraint("review IN ('new', 'acknowledged', 'rejected')",
                           name=op.f("ck_alerts_review")),
        sa.CheckConstraint("revision >= 0", name=op.f("ck_alerts_revision")),
        sa.PrimaryKeyConstraint("alert_id", name=op.f("pk_alerts")),
    )
    op.create_index("ix_alerts_emitted_at_alert_id", "alerts", ["emitted_at", "alert_id"])
    op.create_index("ix_alerts_captured_at", "alerts", ["captured_at"])
    for column in ("source", "subject_id", "watchlist", "updated_at"):
        op.create_index(op.f(f"ix_alerts_{column}"), "alerts", [column])

    op.create_table(
        "alert_reviews",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("alert_id", sa.String(36), nullable=False),
        sa.Column("verdict", sa.String(12), nullable=False),
        sa.Column("actor", sa.String(NAME), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.CheckConstraint("verdict IN ('acknowledge', 'reject')",
                           name=op.f("ck_alert_reviews_verdict")),
        sa.ForeignKeyConstraint(["alert_id"], ["alerts.alert_id"], ondelete="CASCADE",
                                name=op.f("fk_alert_reviews_alert_id_alerts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_reviews")),
    )
    op.create_index(op.f("ix_alert_reviews_alert_id"), "alert_reviews", ["alert_id"])

    op.create_table(
        "api_tokens",
        sa.Column("token_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(NAME), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("revoked_at", sa.Double(), nullable=True),
        sa.CheckConstraint("role IN ('viewer', 'reviewer', 'admin')",
                           name=op.f("ck_api_tokens_role")),
        sa.PrimaryKeyConstraint("token_id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("secret_sha256", name=op.f("uq_api_tokens_secret_sha256")),
    )

    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("alert_id", sa.String(36), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("route", sa.String(NAME), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("next_attempt_at", sa.Double(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.CheckConstraint("status IN ('pending', 'delivered', 'dead')",
                           name=op.f("ck_webhook_deliveries_status")),
        sa.ForeignKeyConstraint(["alert_id"], ["alerts.alert_id"], ondelete="CASCADE",
                                name=op.f("fk_webhook_deliveries_alert_id_alerts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.UniqueConstraint("alert_id", "revision", "route", name="uq_webhook_deliveries_key"),
    )
    op.create_index(op.f("ix_webhook_deliveries_alert_id"), "webhook_deliveries", ["alert_id"])
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    op.drop_table("api_tokens")
    op.drop_table("alert_reviews")
    op.drop_table("alerts")

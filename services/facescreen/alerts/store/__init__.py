"""The alert store: alerts for review, their review history, API tokens and webhook
deliveries, on SQLite (embedded default, `sqlite:///<data-dir>/alerts.db`) or PostgreSQL
(`postgresql+psycopg://...`), one schema migrated by Alembic (`alerts/migrations`)."""

from facescreen.alerts.store.base import StoreUnavailable
from facescreen.alerts.store.engine import sqlite_url
from facescreen.alerts.store.records import (
    ROLES,
    AlertFilter,
    AlertNotFound,
    AlertRecord,
    AlertState,
    DeliveryRecord,
    InvalidAlert,
    InvalidCursor,
    ReviewConflict,
    ReviewRecord,
    ReviewState,
    Role,
    StoreError,
    TokenNotFound,
    TokenRecord,
    Verdict,
    role_allows,
)
from facescreen.alerts.store.repository import AlertStore

__all__ = [
    "ROLES", "AlertFilter", "AlertNotFound", "AlertRecord", "AlertState", "AlertStore",
    "DeliveryRecord", "InvalidAlert", "InvalidCursor", "ReviewConflict", "ReviewRecord",
    "ReviewState", "Role", "StoreError", "StoreUnavailable", "TokenNotFound", "TokenRecord",
    "Verdict", "role_allows", "sqlite_url",
]

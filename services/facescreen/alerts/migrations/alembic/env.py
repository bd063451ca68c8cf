"""Alembic environment of the alert store: online only, on the connection it is given.

`facescreen.alerts.migrations.upgrade(url)` opens the connection and passes it in
(`config.attributes["connection"]`). On PostgreSQL an advisory lock is held while
migrating, so API replicas and alert-store consumers starting together migrate once;
SQLite serialises writers itself. Batch mode lets later migrations alter SQLite tables.
"""

from __future__ import annotations

from alembic import context
from facescreen.alerts.migrations import VERSION_TABLE
from facescreen.alerts.store.models import Base
from sqlalchemy import text

LOCK_KEY = 0x66616365  # pg_advisory_xact_lock key of facescreen's alert store migrations


def run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through facescreen.alerts.migrations.upgrade(url)")
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
    context.configure(connection=connection, target_metadata=Base.metadata,
                      version_table=VERSION_TABLE, render_as_batch=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported")
run()

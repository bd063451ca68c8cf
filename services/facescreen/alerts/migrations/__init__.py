"""The alert store's schema migrations (Alembic), shipped inside the package.

`upgrade(url)` brings a database to the newest schema and is what every process calls
at start; `pending_diffs(url)` is `alembic check`: what differs between the ORM models
and the migrated database (empty when they agree). No `alembic.ini` is needed: the
script folder is `alembic/` next to this file and the URL is passed in. The version
table is `facescreen_alerts_version`, so the store can share a database with other
Alembic users.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine

SCRIPTS = Path(__file__).resolve().parent / "alembic"
VERSION_TABLE = "facescreen_alerts_version"


def config(connection: Connection | None = None) -> Config:
    """An Alembic configuration for our scripts; env.py uses `connection` when given."""
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPTS))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest revision id."""
    revision = ScriptDirectory.from_config(config()).get_current_head()
    assert revision is not None
    return revision


def upgrade(target: str | Engine, revision: str = "head") -> None:
    """Migrate the database at `target` (a URL or an engine) to `revision`."""
    engine, owned = _engine(target)
    try:
        with engine.begin() as connection:
            command.upgrade(config(connection), revision)
    finally:
        if owned:
            engine.dispose()


def current(target: str | Engine) -> str | None:
    """The database's revision (None for a database never migrated)."""
    engine, owned = _engine(target)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"version_table": VERSION_TABLE})
            return context.get_current_revision()
    finally:
        if owned:
            engine.dispose()


def pending_diffs(target: str | Engine) -> list[Any]:
    """`alembic check`: the differences between the models and the database, by type."""
    from alembic.autogenerate import compare_metadata

    from facescreen.alerts.store.models import Base

    engine, owned = _engine(target)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={
                "version_table": VERSION_TABLE, "compare_type": True,
                "compare_server_default": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        if owned:
            engine.dispose()


def _engine(target: str | Engine) -> tuple[Engine, bool]:
    if isinstance(target, Engine):
        return target, False
    from facescreen.alerts.store.engine import make_engine

    return make_engine(target), True

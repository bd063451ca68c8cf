"""The alert store's schema migrations (Alembic), shipped inside the package.

`upgrade(url)` brings a database to the newest schema and is what every process calls
at start; `pending_diffs(url)` is `alembic check`: what differs between the ORM models
and the migrated database (empty when they agree). No `alembic.ini` is needed: the
script folder is `alembic/` next to this file and the URL is passed in. The version
table is `facescreen_alerts_version`, so the store can share a database with other
Alembic users.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine

if TYPE_CHECKING:
    from alembic.config import Config

SCRIPTS = Path(__file__).resolve().parent / "alembic"
VERSION_TABLE = "facescreen_alerts_version"
log = logging.getLogger("facescreen.alerts.migrations")


def _quiet_alembic() -> None:
    """Alembic narrates every plugin and step at INFO; keep its warnings (we log the step)."""
    alembic_log = logging.getLogger("alembic")
    if alembic_log.level == logging.NOTSET:
        alembic_log.setLevel(logging.WARNING)


def config(connection: Connection | None = None) -> Config:
    """An Alembic configuration for our scripts; env.py uses `connection` when given."""
    _quiet_alembic()  # before alembic's first import, which logs its plugins at INFO
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPTS))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest revision id."""
    from alembic.script import ScriptDirectory

    revision = ScriptDirectory.from_config(config()).get_current_head()
    assert revision is not None
    return revision


def upgrade(target: str | Engine, revision: str = "head") -> None:
    """Migrate the database at `target` (a URL or an engine) to `revision`."""
    cfg = config()
    from alembic import command

    engine, owned = _engine(target)
    try:
        with engine.begin() as connection:
            before = _revision(connection)
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, revision)
            after = _revision(connection)
        if after != before:
            log.info("alert store schema migrated from %s to %s", before or "empty", after)
    finally:
        if owned:
            engine.dispose()


def current(target: str | Engine) -> str | None:
    """The database's revision (None for a database never migrated)."""
    engine, owned = _engine(target)
    try:
        with engine.connect() as connection:
            return _revision(connection)
    finally:
        if owned:
            engine.dispose()


def _revision(connection: Connection) -> str | None:
    _quiet_alembic()
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def pending_diffs(target: str | Engine) -> list[Any]:
    """`alembic check`: the differences between the models and the database, by type."""
    _quiet_alembic()
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

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

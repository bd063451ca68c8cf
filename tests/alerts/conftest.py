"""Alert store fixtures: every store test runs on SQLite and on the real PostgreSQL.

PostgreSQL is the server at 127.0.0.1:5432 (or $FACESCREEN_TEST_PG, a SQLAlchemy URL of
a database to connect to for administration). Each test session creates its own
uniquely named database and drops it at the end; each test starts from empty tables.
Migration tests get a database of their own, never migrated. An unreachable server
skips on a user's machine and fails in CI (`tests.infra.missing`).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from facescreen.alerts.store import AlertStore, sqlite_url
from facescreen.alerts.store.models import Base
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from tests.infra import missing

PG_ADMIN = os.environ.get("FACESCREEN_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
BACKENDS = ["sqlite", "postgresql"]


@contextlib.contextmanager
def pg_database(label: str) -> Iterator[str]:
    """A new, empty PostgreSQL database; its URL. Dropped afterwards (even if in use)."""
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT",
                          connect_args={"connect_timeout": 5})
    name = f"facescreen_{label}_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        admin.dispose()
        missing(f"PostgreSQL at {make_url(PG_ADMIN).render_as_string(hide_password=True)} "
                f"is unreachable: {str(exc.orig).splitlines()[0]}")
    try:
        yield make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_session_db() -> Iterator[str]:
    """This test session's PostgreSQL database, migrated once."""
    with pg_database("test") as url:
        store = AlertStore(url)
        store.upgrade()
        store.close()
        yield url


def _empty_tables(store: AlertStore) -> None:
    with store.engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty alert store database: SQLite in tmp_path, or PostgreSQL."""
    if request.param == "sqlite":
        url = sqlite_url(tmp_path)
        store = AlertStore(url)
        store.upgrade()
        store.close()
        return url
    url = str(request.getfixturevalue("pg_session_db"))
    store = AlertStore(url)
    _empty_tables(store)
    store.close()
    return url


@pytest.fixture
def alert_store(db_url: str, tmp_path: Path) -> Iterator[AlertStore]:
    """The store on `db_url`, with face crops on in tmp_path/crops."""
    store = AlertStore(db_url, crops_dir=tmp_path / "crops")
    store.upgrade()
    yield store
    store.close()


@pytest.fixture(params=BACKENDS)
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database never migrated: a new SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
        return
    with pg_database("migrate") as url:
        yield url

"""Database URLs and engines: SQLite (embedded default) or PostgreSQL through psycopg 3.

A bad URL, an unknown driver or an unreachable server is one line that names the
database with its password masked, never a driver traceback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.pool import StaticPool

from facescreen.alerts.store.records import StoreError

DB_FILE = "alerts.db"
CONNECT_TIMEOUT_S = 5


def sqlite_url(data_dir: Path) -> str:
    """The embedded default: `sqlite:///<data-dir>/alerts.db`."""
    return f"sqlite:///{Path(data_dir).resolve() / DB_FILE}"


def parse_url(url: str) -> URL:
    """The URL, with `postgresql://` meaning psycopg 3 (the driver installed here)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(f"bad database URL {mask(url)!r}: expected sqlite:///PATH or "
                         "postgresql+psycopg://USER@HOST:PORT/DB") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername not in ("sqlite", "sqlite+pysqlite", "postgresql+psycopg"):
        raise StoreError(f"database URL {mask(url)!r}: driver {parsed.drivername!r} is not "
                         "supported (sqlite or postgresql+psycopg)")
    if parsed.get_backend_name() == "postgresql" and not parsed.database:
        raise StoreError(f"database URL {mask(url)!r} names no database")
    return parsed


def mask(url: str | URL) -> str:
    """The URL fit for messages and logs: password hidden."""
    try:
        return (url if isinstance(url, URL) else make_url(url)).render_as_string(
            hide_password=True)
    except ArgumentError:
        return "<unparsable URL>"


def _sqlite_file(url: URL) -> None:
    """Create the database file 0600 before SQLite does: alerts name people."""
    if not url.database or url.database == ":memory:":
        return
    path = Path(url.database)
    if not path.parent.is_dir():
        raise StoreError(f"database folder {path.parent} does not exist")
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    os.chmod(path, 0o600)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")  # writers from two threads wait, not fail
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for `url`; checks nothing over the network yet (see `describe_error`)."""
    parsed = parse_url(url)
    try:
        if parsed.get_backend_name() == "sqlite":
            _sqlite_file(parsed)
            memory = not parsed.database or parsed.database == ":memory:"
            engine = create_engine(parsed, poolclass=StaticPool if memory else None,
                                   connect_args={"check_same_thread": False})
            event.listen(engine, "connect", _sqlite_pragmas)
            return engine
        return create_engine(parsed, pool_pre_ping=True,
                             connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
    except (ArgumentError, NoSuchModuleError) as exc:
        raise StoreError(f"database URL {mask(parsed)!r}: {exc}") from None


def describe_error(url: str | URL, exc: DBAPIError) -> StoreError:
    """One line for a driver error: unreachable, refused, missing database..."""
    first = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else type(exc).__name__
    return StoreError(f"database {mask(url)}: {first[:300]}")

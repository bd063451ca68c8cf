"""The database side every part of the store shares: engine, sessions, transactions.

Driver errors never leave the store as tracebacks: a server that cannot be reached (or a
locked SQLite file) is `StoreUnavailable`, something a caller may retry (the consumer
waits and retries, without dead-lettering a good message); a database without our tables
says to run the migrations; anything else is a one-line `StoreError`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from facescreen.alerts.store.engine import describe_error, make_engine, mask, parse_url
from facescreen.alerts.store.records import StoreError

_NO_TABLE = re.compile(r'no such table|relation ".*" does not exist')  # SQLite | PostgreSQL


class StoreUnavailable(StoreError):  # noqa: N818 - a state, like AlertNotFound
    """The database cannot be reached right now (or is locked): retry later."""


class StoreCore:
    """Owns the engine; `_tx()` is one transaction with errors translated."""

    def __init__(self, url: str) -> None:
        self._url = parse_url(url)
        self.engine: Engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def url(self) -> str:
        """The database URL, password masked (fit for logs)."""
        return mask(self._url)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        try:
            with self._sessions.begin() as session:
                yield session
        except PoolTimeout:
            raise StoreUnavailable(f"database {self.url}: no free connection in the pool") from None
        except DBAPIError as exc:
            error = describe_error(self._url, exc)
            if _NO_TABLE.search(str(error)):
                raise StoreError(f"{error} (run the migrations: AlertStore.upgrade())") from None
            if isinstance(exc, OperationalError | InterfaceError):
                raise StoreUnavailable(str(error)) from None
            raise error from None

    def ping(self) -> None:
        """Check the database answers (readiness); StoreUnavailable if not."""
        with self._tx() as session:
            session.execute(text("SELECT 1"))

    def close(self) -> None:
        self.engine.dispose()

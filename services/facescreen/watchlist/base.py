"""What every watchlist store offers, so the CLI and screening do not care where it lives.

Two implementations: `LocalWatchlistStore` (a data directory, exact numpy search; the
embedded mode) and `RedisWatchlistStore` (Redis hashes and a RediSearch vector index; the
distributed mode). Both raise `WatchlistError` with a one-line reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from facescreen.core.screening import SearchFn
from facescreen.core.types import FloatArray
from facescreen.watchlist.store import EnrolledImage, Subject, Watchlist, WatchlistError

__all__ = ["EnrolledImage", "Subject", "Watchlist", "WatchlistError", "WatchlistStore"]


@runtime_checkable
class WatchlistStore(Protocol):
    """Subjects, their templates and watchlists; every change is audited (who, when, why)."""

    embedder: str
    dim: int

    def set_watchlist(self, name: str, *, actor: str, reason: str = "",
                      threshold: float | None = None, description: str | None = None,
                      calibration: dict[str, Any] | None = None,
                      target_fpir: float | None = None, priority: int | None = None,
                      route: str | None = None) -> Watchlist:
        """Create a watchlist or change its threshold, description, calibration record,
        target FPIR, priority (0..100) or alert route."""
        ...

    def delete_watchlist(self, name: str, *, actor: str, reason: str = "") -> None:
        """Delete an empty watchlist."""
        ...

    def add_subject(self, subject_id: str, watchlist: str,
                    embeddings: list[tuple[str, float, FloatArray]], *, actor: str,
                    reason: str = "", expires: float | None = None,
                    new: bool = False) -> Subject:
        """Enrol images (label, quality, normalised embedding) for a subject on a watchlist.

        `new=True` refuses (SubjectExistsError) a subject that exists, checked inside the
        store's own lock or transaction: two concurrent enrolments of one new id must not
        merge two people's photos into one subject.
        """
        ...

    def add_membership(self, subject_id: str, watchlist: str, *, actor: str,
                       reason: str = "") -> Subject:
        """Put an enrolled subject on another watchlist with the images it has."""
        ...

    def remove_subject(self, subject_id: str, *, actor: str, reason: str = "",
                       watchlist: str | None = None) -> None:
        """Take a subject off one watchlist, or delete it with every embedding it has."""
        ...

    def remove_image(self, subject_id: str, image_id: str, *, actor: str,
                     reason: str = "") -> Subject:
        """Delete one enrolled image and its embedding (not the subject's last)."""
        ...

    def purge_expired(self, *, actor: str, now: float | None = None) -> list[str]:
        """Delete every subject past its expiry; returns their ids."""
        ...

    def subjects(self) -> dict[str, Subject]:
        ...

    def watchlists(self) -> dict[str, Watchlist]:
        ...

    def audit_log(self) -> list[dict[str, Any]]:
        """Every change, oldest first; never an embedding."""
        ...

    def record(self, *, actor: str, action: str, reason: str = "", **details: Any) -> None:
        """Audit an action that changes no watchlist (a search, a reviewer's verdict)."""
        ...

    def audit_cursor(self) -> str | None:
        """Id of the last audit entry relayed to the audit topic."""
        ...

    def set_audit_cursor(self, entry_id: str) -> None: ...

    def matcher(self, watchlists: Sequence[str] | None = None, *,
                now: float | None = None) -> tuple[SearchFn, Mapping[str, float]]:
        """The search function screening calls, and each watchlist's threshold.

        `watchlists` restricts the search to those lists; `now` fixes the clock that
        decides expiry (default: the time of each search).
        """
        ...

"""API tokens: a random secret shown once, only its SHA-256 stored.

The secret has 256 bits of entropy, so a plain SHA-256 (no salt, no slow hash) is enough:
nobody can guess a preimage, and the digest can be the lookup key. A revoked token is
kept (who had access, and until when) but never accepted again.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import unicodedata

from sqlalchemy import select

from facescreen.alerts.store.base import StoreCore
from facescreen.alerts.store.models import NAME, TokenRow
from facescreen.alerts.store.records import ROLES, StoreError, TokenNotFound, TokenRecord

SECRET_PREFIX = "fst_"  # recognisable in leaked-secret scans
MAX_SECRET_CHARS = 256


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _record(row: TokenRow) -> TokenRecord:
    return TokenRecord(token_id=row.token_id, name=row.name, role=row.role,  # type: ignore[arg-type]
                       created_at=row.created_at, revoked_at=row.revoked_at)


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > NAME:
        raise StoreError(f"a token name has 1 to {NAME} characters")
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        raise StoreError("a token name may not contain control characters")
    return name


class TokenMixin(StoreCore):
    """Token methods of `AlertStore`."""

    def create_token(self, name: str, role: str) -> tuple[str, str]:
        """A new token: returns (token_id, secret). The secret is not kept; show it once."""
        if role not in ROLES:
            raise StoreError(f"role {role!r}: expected one of {', '.join(ROLES)}")
        name = _check_name(name)
        token_id = secrets.token_hex(8)
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        with self._tx() as session:
            session.add(TokenRow(token_id=token_id, name=name, role=role,
                                 secret_sha256=digest(secret), created_at=time.time()))
        return token_id, secret

    def check_token(self, secret: str) -> TokenRecord | None:
        """The token this secret belongs to, or None (unknown, malformed or revoked)."""
        if not isinstance(secret, str) or not 0 < len(secret) <= MAX_SECRET_CHARS:
            return None
        wanted = digest(secret)
        with self._tx() as session:
            row = session.scalars(select(TokenRow).where(TokenRow.secret_sha256 == wanted)).first()
        if row is None or row.revoked_at is not None:
            return None
        if not hmac.compare_digest(row.secret_sha256, wanted):
            return None
        return _record(row)

    def revoke_token(self, token_id: str) -> TokenRecord:
        """Refuse the token from now on (idempotent); TokenNotFound for an unknown id."""
        with self._tx() as session:
            row = session.get(TokenRow, token_id, with_for_update=True)
            if row is None:
                raise TokenNotFound(f"no token with id {token_id!r}")
            if row.revoked_at is None:
                row.revoked_at = time.time()
            return _record(row)

    def list_tokens(self, include_revoked: bool = True) -> list[TokenRecord]:
        """Every token, oldest first (never a secret: the store has none)."""
        query = select(TokenRow).order_by(TokenRow.created_at, TokenRow.token_id)
        if not include_revoked:
            query = query.where(TokenRow.revoked_at.is_(None))
        with self._tx() as session:
            return [_record(row) for row in session.scalars(query)]

"""Webhook routes: which URL receives the alerts of which watchlist, read from TOML.

    [webhooks.<watchlist>]
    url = "https://receiver.example/facescreen"
    secret_env = "FACESCREEN_WEBHOOK_SECRET_VIP"   # the variable's NAME, never the secret
    max_attempts = 5                               # optional, else the sender's default
    timeout_s = 10                                 # optional, else the sender's default

Secrets come from the environment only: a config file is copied, committed and shown on
screen far more often than a process environment, so an inline `secret` is refused rather
than accepted with a warning. The resolved secret is kept out of the route's repr so that
a logged or printed route never carries it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from facescreen.config.toml import read_toml

MIN_SECRET_LEN = 16
_KEYS = {"url", "secret_env", "max_attempts", "timeout_s"}


class WebhookConfigError(ValueError):
    """The webhook configuration cannot be used; the message says where and why (never a secret)."""


@dataclass(frozen=True)
class WebhookRoute:
    """Where one watchlist's alert events go, and the key that signs them."""

    watchlist: str
    url: str
    secret_env: str
    secret: bytes = field(repr=False, compare=False)
    max_attempts: int | None = None
    timeout_s: float | None = None


def _url(value: Any, here: str) -> str:
    if not isinstance(value, str):
        raise WebhookConfigError(f"{here}: url must be a string")
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise WebhookConfigError(f"{here}: url must be http(s)://host/...")
    return value


def _secret(name: Any, here: str, environ: Mapping[str, str]) -> bytes:
    if not isinstance(name, str) or not name.strip():
        raise WebhookConfigError(f"{here}: secret_env must name an environment variable")
    value = environ.get(name, "")
    if not value:
        raise WebhookConfigError(f"{here}: environment variable {name} is not set")
    if len(value) < MIN_SECRET_LEN:
        # Say how short, not what it is.
        raise WebhookConfigError(
            f"{here}: the secret in {name} is shorter than {MIN_SECRET_LEN} characters")
    return value.encode()


def _route(watchlist: str, item: Any, environ: Mapping[str, str]) -> WebhookRoute:
    here = f"webhooks.{watchlist}"
    if not watchlist.strip() or any(ord(c) < 32 for c in watchlist):
        raise WebhookConfigError(f"webhooks: watchlist name {watchlist!r} is blank or has control characters")
    if not isinstance(item, dict):
        raise WebhookConfigError(f"{here} is not a table")
    if "secret" in item:
        raise WebhookConfigError(
            f"{here}: an inline secret is refused; put it in an environment variable and name it "
            "with secret_env")
    unknown = set(item) - _KEYS
    if unknown:
        raise WebhookConfigError(f"{here}: unknown key(s) {sorted(unknown)}")
    attempts = item.get("max_attempts")
    if attempts is not None and (type(attempts) is not int or not 1 <= attempts <= 100):
        raise WebhookConfigError(f"{here}: max_attempts must be an integer 1-100")
    timeout = item.get("timeout_s")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                                or not 0 < timeout <= 300):
        raise WebhookConfigError(f"{here}: timeout_s must be a number in (0, 300]")
    return WebhookRoute(
        watchlist=watchlist, url=_url(item.get("url"), here), secret_env=str(item.get("secret_env")),
        secret=_secret(item.get("secret_env"), here, environ), max_attempts=attempts,
        timeout_s=None if timeout is None else float(timeout))


def parse_routes(data: Mapping[str, Any],
                 environ: Mapping[str, str] | None = None) -> dict[str, WebhookRoute]:
    """The routes of a parsed TOML document, by watchlist; {} when it has no `webhooks` table."""
    env = os.environ if environ is None else environ
    table = data.get("webhooks", {})
    if not isinstance(table, dict):
        raise WebhookConfigError("webhooks must be a table of [webhooks.<watchlist>] tables")
    return {name: _route(name, item, env) for name, item in table.items()}


def load_routes(path: Path, environ: Mapping[str, str] | None = None) -> dict[str, WebhookRoute]:
    """The routes in the TOML file at `path`, secrets resolved from `environ` (default os.environ)."""
    return parse_routes(read_toml(path, WebhookConfigError), environ)

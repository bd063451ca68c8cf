"""Moves watchlist audit entries from the store to the audit topic (an outbox relay).

Each store writes its audit entry in the same transaction as the change; the relay then
publishes entries after its cursor and advances the cursor only once Kafka has them, so
an entry is published at least once. Its `audit_id` derives from the entry id, so a
consumer can drop a repeat. A relay that follows the store (`relay_patiently`) retries a
broker that is away by policy (`facescreen.ops.retry`) instead of exiting; a one-shot run
fails fast, with the cursor where it was.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from facescreen.alerts.events import validator
from facescreen.ops.retry import call_sync, infrastructure
from facescreen.watchlist.base import WatchlistStore

AUDIT_NAMESPACE = uuid.UUID("0b5e7c1a-9f3d-4a61-8c2e-4d7a1f6b2e90")
_CORE = {"id", "time", "actor", "action", "reason", "subject", "watchlist"}


def to_audit_event(entry: Mapping[str, Any], store_id: str) -> dict[str, Any]:
    """The schema form of one store entry; non-scalar details are left out."""
    details = {k: v for k, v in entry.items() if k not in _CORE
               and (v is None or isinstance(v, (str, int, float, bool)))}
    event = {
        "schema_version": 1,
        "audit_id": str(uuid.uuid5(AUDIT_NAMESPACE, f"{store_id}|{entry['id']}")),
        "at": float(entry["time"]), "actor": str(entry["actor"]), "action": str(entry["action"]),
        "subject": entry.get("subject"), "watchlist": entry.get("watchlist"),
        "reason": str(entry.get("reason", "")), "details": details,
    }
    validator("audit").validate(event)
    return event


def pending(entries: Sequence[Mapping[str, Any]], cursor: str | None) -> list[Mapping[str, Any]]:
    """The entries after the one the cursor names (all of them without a cursor)."""
    if cursor is None:
        return list(entries)
    ids = [str(e["id"]) for e in entries]
    return list(entries[ids.index(cursor) + 1:]) if cursor in ids else list(entries)


def relay(store: WatchlistStore, store_id: str,
          publish: Callable[[dict[str, Any]], Callable[[], None]]) -> int:
    """Publish every unrelayed entry, wait for the broker to acknowledge each, then
    advance the cursor; returns the count.

    `publish` sends one event and returns a `confirm()` that blocks until the broker has
    it and raises if the send failed (a producer's `flush()` does not raise, so a lost
    send would otherwise move the cursor past an entry nobody received). On any failure
    the cursor stays where it was and the next run sends the batch again.
    """
    todo = pending(store.audit_log(), store.audit_cursor())
    confirmations = [publish(to_audit_event(entry, store_id)) for entry in todo]
    for confirm in confirmations:
        confirm()
    if todo:
        store.set_audit_cursor(str(todo[-1]["id"]))
    return len(todo)


def relay_patiently(store: WatchlistStore, store_id: str,
                    publish: Callable[[dict[str, Any]], Callable[[], None]],
                    transient: Callable[[BaseException], bool]) -> int:
    """`relay`, with failures that `transient` accepts (the broker away) retried with
    jittered back-off until the broker acknowledges; the cursor only moves on success."""
    policy = infrastructure(transient, name="broker")
    return call_sync(policy, "audit relay", lambda: relay(store, store_id, publish))

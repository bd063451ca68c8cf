"""`facescreen tokens create|revoke|list`: API tokens in the alert store.

`create` prints the secret once, alone on stdout (so `TOKEN=$(facescreen tokens create
...)` works); the store keeps only its SHA-256, so a lost secret is revoked and replaced,
never recovered. `list` never shows a secret: the store has none to show.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from facescreen.cli.alert_store_cmd import add_db_args, open_alert_store
from facescreen.cli.common import CommandError

ROLE_CHOICES = ("viewer", "reviewer", "admin")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("tokens", help="API tokens (viewer < reviewer < admin)")
    cmds = p.add_subparsers(dest="tokens_cmd", required=True)
    create = cmds.add_parser("create", help="a new token; prints its secret once")
    add_db_args(create)
    create.add_argument("--role", required=True, choices=ROLE_CHOICES)
    create.add_argument("--name", default=None, help="who or what holds it (default: ROLE)")
    create.set_defaults(handler=cmd_create)
    revoke = cmds.add_parser("revoke", help="refuse a token from now on")
    add_db_args(revoke)
    revoke.add_argument("token_id")
    revoke.set_defaults(handler=cmd_revoke)
    listing = cmds.add_parser("list", help="tokens and their state (no secrets)")
    add_db_args(listing)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(handler=cmd_list)


def _when(at: float | None) -> str:
    return "-" if at is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def cmd_create(args: argparse.Namespace) -> int:
    from facescreen.alerts.store import StoreError

    store = open_alert_store(args)
    try:
        token_id, secret = store.create_token(args.name or args.role, args.role)
    except StoreError as exc:
        raise CommandError(str(exc)) from None
    finally:
        store.close()
    print(f"token {token_id} ({args.role}) created; its secret is printed once, below",
          file=sys.stderr)
    print(secret)
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    from facescreen.alerts.store import StoreError

    store = open_alert_store(args)
    try:
        record = store.revoke_token(args.token_id)
    except StoreError as exc:
        raise CommandError(str(exc)) from None
    finally:
        store.close()
    print(f"token {record.token_id} ({record.name}, {record.role}) revoked at "
          f"{_when(record.revoked_at)}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from facescreen.alerts.store import StoreError

    store = open_alert_store(args)
    try:
        tokens = store.list_tokens()
    except StoreError as exc:
        raise CommandError(str(exc)) from None
    finally:
        store.close()
    for t in tokens:
        if args.json:
            print(json.dumps(t.model_dump(), sort_keys=True))
        else:
            print(f"{t.token_id}\t{t.role}\t{t.name}\tcreated {_when(t.created_at)}\t"
                  f"revoked {_when(t.revoked_at)}")
    return 0

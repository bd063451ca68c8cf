"""`facescreen alert-store` (the distributed consumer) and `facescreen alerts purge`, and how
every command names the alert store: `--db URL`, or `--data-dir D` for the embedded
default `sqlite:///D/alerts.db` (env FACESCREEN_ALERTS_DB for `--db`)."""

from __future__ import annotations

import argparse
import logging
import signal
import time
from pathlib import Path
from typing import Any

from facescreen.cli.common import CommandError
from facescreen.config.environment import environment

log = logging.getLogger("facescreen.alert_store")
DEFAULT_HTTP_PORT = 9104
DB_ENV = "FACESCREEN_ALERTS_DB"


def add_db_args(p: argparse.ArgumentParser, *, data_dir: bool = True) -> None:
    """`--db URL` or `--data-dir D` (one of them, unless $FACESCREEN_ALERTS_DB gives --db)."""
    db = environment().alerts_db
    env = None if db is None else db.get_secret_value()
    if not data_dir:
        p.add_argument("--db", default=env, required=env is None, metavar="URL",
                       help=f"alert store: postgresql+psycopg://... or sqlite:///PATH (env {DB_ENV})")
        return
    where = p.add_mutually_exclusive_group(required=env is None)
    where.add_argument("--db", default=env, metavar="URL",
                       help=f"alert store: postgresql+psycopg://... or sqlite:///PATH (env {DB_ENV})")
    where.add_argument("--data-dir", type=Path, help="embedded: the store is DATA_DIR/alerts.db")
    p.add_argument("--crops-dir", type=Path,
                   help="folder of the alerts' face crops, deleted with them (default: "
                        "DATA_DIR/crops when it exists)")


def open_alert_store(args: argparse.Namespace) -> Any:
    """The store the arguments name, migrated to the newest schema; errors as one line."""
    from facescreen.alerts.store import AlertStore, StoreError, sqlite_url

    data_dir: Path | None = getattr(args, "data_dir", None)
    if data_dir is not None and not data_dir.is_dir():
        raise CommandError(f"data directory {data_dir} does not exist")
    url = sqlite_url(data_dir) if data_dir is not None else args.db
    crops: Path | None = getattr(args, "crops_dir", None)
    if crops is None and data_dir is not None and (data_dir / "crops").is_dir():
        crops = data_dir / "crops"
    try:
        store = AlertStore(url, crops_dir=crops)
        store.upgrade()
    except StoreError as exc:
        raise CommandError(str(exc)) from None
    return store


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("alert-store", help="alerts topic -> alert store (distributed mode)")
    env = environment().bootstrap
    p.add_argument("--bootstrap", default=env, required=env is None, metavar="HOST:PORT[,...]",
                   help="Kafka bootstrap servers (env FACESCREEN_BOOTSTRAP)")
    add_db_args(p, data_dir=False)
    p.add_argument("--topics", type=Path, metavar="TOML", help="topic names (default: see docs)")
    p.add_argument("--topic-prefix", default=environment().topic_prefix,
                   help="prefix for every topic and consumer group name")
    p.add_argument("--group", help="consumer group (default: PREFIX + facescreen-alert-store)")
    p.add_argument("--session-timeout", type=float, default=10.0,
                   help="consumer group session timeout, seconds")
    p.add_argument("--http-host", default="127.0.0.1",
                   help="address of /metrics, /healthz, /readyz (0.0.0.0 in containers)")
    p.add_argument("--http-port", type=int, default=DEFAULT_HTTP_PORT,
                   help=f"port of /metrics, /healthz, /readyz (default {DEFAULT_HTTP_PORT})")
    p.add_argument("--webhooks", type=Path, metavar="FILE.toml",
                   help="deliver stored revisions to each watchlist's route ([webhooks.NAME] "
                        "url, secret_env), HMAC-signed, retried, recorded in the store")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.set_defaults(handler=cmd_alert_store)


def cmd_alert_store(args: argparse.Namespace) -> int:
    from facescreen.alerts.service import AlertStoreConsumer, ConsumerSettings
    from facescreen.bus.topics import BusConfig, TopicError, bootstrap_list, require_topics
    from facescreen.ops.health import HealthServer, Readiness
    from facescreen.ops.logs import setup_json_logging

    if args.session_timeout < 1:
        raise CommandError("--session-timeout must be >= 1 s")
    try:  # one line naming the file and the field (TopicsConfigError), or the flag
        bus = (BusConfig.from_toml(args.topics) if args.topics else BusConfig()).with_prefix(
            args.topic_prefix)
        bootstrap = bootstrap_list(args.bootstrap)
    except (ValueError, TopicError) as exc:
        raise CommandError(str(exc)) from None
    setup_json_logging("alert-store", getattr(logging, args.log_level))
    store = open_alert_store(args)
    readiness = Readiness("broker", "database")
    readiness.mark("database", True)
    try:
        health = HealthServer(readiness, args.http_host, args.http_port).start()
    except OSError as exc:
        raise CommandError(f"cannot serve health endpoints on {args.http_host}:"
                           f"{args.http_port}: {exc.strerror or exc}") from None
    hooks = None
    try:
        try:
            require_topics(args.bootstrap, bus, ("alerts", "dead_letter"))
        except TopicError as exc:
            raise CommandError(str(exc)) from None
        settings = ConsumerSettings(bootstrap=bootstrap, bus=bus,
                                    group=args.group or f"{args.topic_prefix}facescreen-alert-store",
                                    session_timeout_s=args.session_timeout)
        hooks = _webhooks(args.webhooks, store)
        consumer = AlertStoreConsumer(store, settings, readiness,
                                      on_stored=None if hooks is None else hooks.submit)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: consumer.stop.set())
        log.info("starting", extra={"fields": {"service": "alert-store", "db": store.url,
                                               "topic": bus.alerts.name,
                                               "http_port": health.port}})
        return consumer.run()
    finally:
        if hooks is not None:
            hooks.close()
        health.stop()
        store.close()


def _webhooks(path: Path | None, store: Any) -> Any:
    if path is None:
        return None
    from facescreen.alerts.webhook_dispatch import WebhookDispatcher
    from facescreen.alerts.webhook_routes import WebhookConfigError

    try:
        return WebhookDispatcher.from_file(path, store).start()
    except (WebhookConfigError, OSError) as exc:
        raise CommandError(f"--webhooks: {exc}") from None


def register_purge(cmds: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """`facescreen alerts purge`: added to the `alerts` command by `alerts_cmd`."""
    p = cmds.add_parser("purge", help="retention: delete alerts (and their reviews, deliveries "
                                      "and crops) older than an age, whatever their state")
    add_db_args(p)
    p.add_argument("--older-than", required=True, metavar="AGE",
                   help="e.g. 30d, 12h, 90m (units s, m, h, d, w)")
    p.set_defaults(handler=cmd_purge)


def cmd_purge(args: argparse.Namespace) -> int:
    from facescreen.alerts.store import StoreError
    from facescreen.alerts.store.retention import parse_age

    try:
        age = parse_age(args.older_than)
    except ValueError as exc:
        raise CommandError(f"--older-than: {exc}") from None
    store = open_alert_store(args)
    try:
        deleted = store.purge(age, time.time())
    except StoreError as exc:
        raise CommandError(str(exc)) from None
    finally:
        store.close()
    print(f"purged {deleted} alert(s) older than {args.older_than}")
    return 0

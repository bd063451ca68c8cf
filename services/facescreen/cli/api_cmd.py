"""`facescreen api`: the review API and dashboard as a service of their own (distributed mode).

The alert store is the one the `alert-store` consumer fills (PostgreSQL), so the API polls
it for changes to feed the live streams; the watchlist is Redis (or a data directory);
a reviewer's "not this person" is published on the feedback topic for the matcher that
holds the camera. Enrolment and search run the same models as the analyzer, in process.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from facescreen.cli.common import (
    CommandError,
    add_model_args,
    add_store_args,
    build_analyzer,
    open_store,
    secret_value,
)

log = logging.getLogger("facescreen.api.service")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("api", help="serve the review API and dashboard (distributed mode)")
    add_store_args(p, remote=True)
    add_model_args(p)
    p.add_argument("--db", required=True, metavar="URL",
                   help="the alert store (postgresql+psycopg://... or sqlite:///PATH; env:NAME "
                        "or file:PATH keep a password off the command line)")
    p.add_argument("--crops-dir", type=Path, help="folder of the alerts' face crops")
    p.add_argument("--bootstrap", metavar="HOST:PORT[,...]",
                   help="publish reviewers' rejections on this broker's feedback topic "
                        "(without it, rejections go to --data-dir's feedback log)")
    p.add_argument("--topic-prefix", default="")
    p.add_argument("--host", default="127.0.0.1", help="listen address (0.0.0.0 in containers)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--retention", metavar="AGE", help="purge alerts older than this (e.g. 30d)")
    p.add_argument("--camera-metrics", action="append", default=[], metavar="URL",
                   help="an ingest worker's /metrics, for camera status (repeatable)")
    p.add_argument("--poll", type=float, default=1.0,
                   help="seconds between looks at the store for changes made by other "
                        "processes (the live stream's delay)")
    p.set_defaults(handler=cmd_api)


def cmd_api(args: argparse.Namespace) -> int:
    from facescreen.alerts.store import AlertStore, StoreError
    from facescreen.alerts.store.retention import parse_age
    from facescreen.api.app import create_app
    from facescreen.api.context import ApiContext
    from facescreen.api.server import serve

    if not 0 < args.port < 65536:
        raise CommandError(f"--port must be a TCP port, got {args.port}")
    if not 0.05 <= args.poll <= 60:
        raise CommandError(f"--poll must be within 0.05..60 s, got {args.poll}")
    if args.bootstrap is None and args.data_dir is None:
        raise CommandError("rejections need somewhere to go: --bootstrap (the feedback topic) "
                           "or --data-dir (the embedded feedback log)")
    try:
        retention = parse_age(args.retention) if args.retention else None
        store = AlertStore(secret_value(args.db, "--db"), crops_dir=args.crops_dir)
        store.upgrade()
    except (StoreError, ValueError) as exc:
        raise CommandError(str(exc).splitlines()[0]) from None
    watchlists = open_store(args, remote=True)
    from facescreen.api.camera_status import MetricsCameraStatus

    ctx = ApiContext(alerts=store, watchlists=watchlists, analyzer=lambda: build_analyzer(args),
                     feedback=_feedback_sink(args), retention_s=retention,
                     poll_changes_s=args.poll,
                     cameras=MetricsCameraStatus(args.camera_metrics))
    log.info("serving", extra={"fields": {"host": args.host, "port": args.port}})
    try:
        serve(create_app(ctx), args.host, args.port)
    except OSError as exc:
        raise CommandError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    finally:
        store.close()
    return 0


def _feedback_sink(args: argparse.Namespace) -> Any:
    if args.bootstrap is not None:
        from facescreen.bus.feedback_publish import publish_feedback

        servers = args.bootstrap.split(",")
        return lambda feedback: publish_feedback(servers, args.topic_prefix, feedback)
    from facescreen.alerts.feedback import LocalFeedbackLog

    return LocalFeedbackLog(args.data_dir).append

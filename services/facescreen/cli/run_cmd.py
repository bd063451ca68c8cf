"""`facescreen run`: screen one or more sources against the watchlists of a data directory."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

from prometheus_client import start_http_server

from facescreen.alerts.events import AlertSink, JsonLinesSink
from facescreen.alerts.feedback import LocalFeedbackLog
from facescreen.alerts.store import StoreError
from facescreen.alerts.webhook_dispatch import WebhookDispatcher
from facescreen.alerts.webhook_routes import WebhookConfigError
from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.cli.common import (
    CommandError,
    add_model_args,
    add_store_args,
    build_analyzer,
    open_store,
    pipeline_config,
    secret_value,
)
from facescreen.core.screening import ScreeningPolicy, SearchFn
from facescreen.embedded.operator import (
    OperatorSurface,
    StoreSink,
    alerts_db_url,
    face_crop,
    start_operator_surface,
)
from facescreen.embedded.pipeline import EmbeddedPipeline, RunOptions, RunStats
from facescreen.ingest.sources import SourceSpec, parse_source
from facescreen.watchlist.base import WatchlistStore
from facescreen.watchlist.live import LiveLocalWatchlist
from facescreen.watchlist.store import LocalWatchlistStore

log = logging.getLogger("facescreen.run")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("run", help="screen video sources against the watchlists (embedded)")
    add_store_args(p, remote=True)
    add_model_args(p)
    p.add_argument("--source", action="append", required=True, metavar="NAME=URI",
                   help="video file, rtsp:// or http(s):// URL, or device index; repeatable")
    p.add_argument("--fps", type=float, help="process at most this many frames/s per source")
    p.add_argument("--alerts-out", type=Path, help="append alert JSON lines here (default stdout)")
    p.add_argument("--snapshots", type=Path, help="opt-in: save an annotated frame per alert")
    p.add_argument("--cooldown", type=float,
                   help="seconds before the same subject alerts again on a source "
                        "(default: [decision] cooldown_s of --config, 30)")
    p.add_argument("--min-faces", type=int,
                   help="quality faces a track needs before it may alert, unless its score is "
                        "far above the threshold (default: [decision] min_faces, 3)")
    p.add_argument("--batch", type=int, default=4, help="frames analysed together")
    p.add_argument("--max-reconnects", type=int, help="give up on a live source after N tries")
    p.add_argument("--max-frame-age", type=float, default=2.0,
                   help="drop live frames older than this many seconds instead of analysing "
                        "them late (default %(default)s)")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port")
    p.add_argument("--api", metavar="HOST:PORT",
                   help="also serve the review API (OpenAPI at /openapi.json) and the dashboard "
                        "at / ; keeps serving after file sources end, until Ctrl-C")
    p.add_argument("--alerts-db", metavar="URL",
                   help="with --api: the alert store (default sqlite:///DATA-DIR/alerts.db; "
                        "postgresql+psycopg://... ; env:NAME or file:PATH keep it off ps)")
    p.add_argument("--crops", action="store_true",
                   help="with --api, opt-in: keep each alert's best face crop (0600, in "
                        "DATA-DIR/crops, erased with the alert or the subject)")
    p.add_argument("--webhooks", type=Path, metavar="FILE.toml",
                   help="with --api: deliver alert revisions to each watchlist's route "
                        "([webhooks.NAME] url, secret_env), HMAC-signed, retried")
    p.add_argument("--allow-empty-watchlist", action="store_true",
                   help="run even though no watchlist exists yet (nothing can alert until one "
                        "is enrolled: the watchlist is live)")
    p.set_defaults(handler=cmd_run)


def check_run_args(args: argparse.Namespace) -> None:
    """Every numeric flag in range before anything starts (one line each, exit 2)."""
    if args.fps is not None and not 0 < args.fps < float("inf"):
        raise CommandError(f"--fps must be > 0, got {args.fps}")
    if args.batch < 1:
        raise CommandError(f"--batch must be >= 1, got {args.batch}")
    if not 0 < args.max_frame_age < float("inf"):
        raise CommandError(f"--max-frame-age must be > 0, got {args.max_frame_age}")
    if args.max_reconnects is not None and args.max_reconnects < 0:
        raise CommandError(f"--max-reconnects must be >= 0, got {args.max_reconnects}")
    if args.metrics_port is not None and not 0 < args.metrics_port < 65536:
        raise CommandError(f"--metrics-port must be a TCP port, got {args.metrics_port}")
    if args.data_dir is not None and not args.data_dir.is_dir():
        raise CommandError(f"data directory {args.data_dir} does not exist (enrol with "
                           "'facescreen watchlist add --data-dir ...' first)")


def parse_sources(args: argparse.Namespace) -> list[SourceSpec]:
    specs = []
    for i, text in enumerate(args.source):
        try:
            spec = parse_source(text, f"cam{i}")
            if args.fps is not None:
                spec = SourceSpec(spec.name, spec.uri, args.fps)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        specs.append(spec)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise CommandError(f"source names must be unique: {names}")
    return specs


def screening_policies(args: argparse.Namespace,
                       names: list[str]) -> tuple[ScreeningPolicy, dict[str, ScreeningPolicy]]:
    """The config file's [decision]/[tracking] (and a source's [cameras.NAME.*] tables),
    then the flags over every one of them."""
    config = pipeline_config(args)
    if args.cooldown is not None and not 0 <= args.cooldown < float("inf"):
        raise CommandError(f"--cooldown must be >= 0, got {args.cooldown}")
    if args.min_faces is not None and args.min_faces < 1:
        raise CommandError(f"--min-faces must be >= 1, got {args.min_faces}")

    def with_flags(policy: ScreeningPolicy) -> ScreeningPolicy:
        if args.cooldown is not None:
            policy = replace(policy, cooldown_s=args.cooldown)
        if args.min_faces is not None:
            policy = replace(policy, min_faces=args.min_faces)
        return policy

    return (with_flags(config.screening_policy()),
            {name: with_flags(config.screening_policy(name)) for name in names})


def open_watchlist(args: argparse.Namespace) -> tuple[WatchlistStore, SearchFn,
                                                     Mapping[str, float],
                                                     LocalFeedbackLog | None]:
    """A live search: a data directory is re-read when it changes or a subject expires; Redis
    is searched on every call. Reviewers' verdicts come from the data directory."""
    store = open_store(args, remote=True)
    if isinstance(store, LocalWatchlistStore):
        live = LiveLocalWatchlist(store)
        feedback = LocalFeedbackLog(store.data_dir)
        feedback.skip_existing()
        return store, live.search, live.thresholds, feedback
    search, thresholds = store.matcher()
    return store, search, thresholds, None


def parse_host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise CommandError(f"--api {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]"), int(port)


def cmd_run(args: argparse.Namespace) -> int:
    check_run_args(args)
    specs = parse_sources(args)
    policy, per_source = screening_policies(args, [s.name for s in specs])
    if args.api is None and (args.alerts_db or args.crops or args.webhooks):
        raise CommandError("--alerts-db, --crops and --webhooks go with --api")
    if args.crops and args.data_dir is None:
        raise CommandError("--crops needs --data-dir (the crops are kept beside the watchlist)")
    listen = parse_host_port(args.api) if args.api else None
    store, search, thresholds, feedback = open_watchlist(args)
    if not thresholds:
        if not args.allow_empty_watchlist:
            raise CommandError("no watchlist exists yet, so nothing could alert: enrol a "
                               "subject first, or pass --allow-empty-watchlist")
        log.warning("no watchlist exists yet: faces are analysed, nothing can alert")
    if args.metrics_port:
        try:
            start_http_server(args.metrics_port, addr="127.0.0.1")
        except OSError as exc:
            raise CommandError(f"--metrics-port {args.metrics_port}: {exc.strerror}") from None
    analyzer = build_analyzer(args)
    lines = JsonLinesSink(args.alerts_out)
    sink: AlertSink = lines
    options = RunOptions(sources=specs, batch_size=args.batch, screening=policy,
                         per_source=per_source,
                         snapshot_dir=args.snapshots, max_reconnects=args.max_reconnects,
                         feedback=feedback, max_frame_age_s=args.max_frame_age)
    surface = None
    pipelines: list[EmbeddedPipeline] = []
    if listen is not None:
        surface = _start_surface(args, listen, store, analyzer,
                                 lambda: pipelines[0].camera_status() if pipelines else [])
        sink = StoreSink(lines, surface.store, _webhooks(args, surface))
        if args.crops:
            keep = surface.store
            options.crops = lambda alert, frame: keep.save_crop(
                alert.alert_id, face_crop(frame.image, alert.box))
    pipeline = EmbeddedPipeline(analyzer, search, thresholds, sink, options)
    pipelines.append(pipeline)
    interrupted = threading.Event()
    try:
        stats = asyncio.run(_run_until_signal(pipeline, interrupted))
        if surface is not None and not interrupted.is_set():
            log.info("sources done (%s); serving %s until Ctrl-C", stats.line(), surface.url)
            _wait_for_signal(interrupted)
    finally:
        sink.close()
        if surface is not None:
            surface.stop()
    log.info("done: %s", stats.line())
    if stats.errors and (stats.frames == 0 or len(stats.errors) >= len(specs)):
        # every source failed (some may have delivered frames before they did)
        raise CommandError("; ".join(stats.errors))
    return 0


def _start_surface(args: argparse.Namespace, listen: tuple[str, int], store: WatchlistStore,
                   analyzer: FaceAnalyzer,
                   cameras: Callable[[], list[dict[str, object]]]) -> OperatorSurface:
    if args.data_dir is None and not args.alerts_db:
        raise CommandError("--api with --store needs --alerts-db (no data directory for it)")
    given = secret_value(args.alerts_db, "--alerts-db") if args.alerts_db else None
    try:
        surface = start_operator_surface(
            host=listen[0], port=listen[1], db_url=alerts_db_url(args.data_dir, given),
            data_dir=args.data_dir, watchlists=store, analyzer=lambda: analyzer,
            cameras=cameras, crops_dir=args.data_dir / "crops" if args.crops else None)
    except (StoreError, OSError, RuntimeError) as exc:
        raise CommandError(f"--api: {str(exc).splitlines()[0]}") from None
    print(f"dashboard: {surface.url}/  (API: {surface.url}/openapi.json)", file=sys.stderr,
          flush=True)
    return surface


def _webhooks(args: argparse.Namespace, surface: OperatorSurface) -> WebhookDispatcher | None:
    if args.webhooks is None:
        return None
    try:
        return WebhookDispatcher.from_file(args.webhooks, surface.store).start()
    except (WebhookConfigError, OSError) as exc:
        surface.stop()
        raise CommandError(f"--webhooks: {exc}") from None


async def _run_until_signal(pipeline: EmbeddedPipeline, interrupted: threading.Event) -> RunStats:
    loop = asyncio.get_running_loop()

    def stop() -> None:
        interrupted.set()
        pipeline.stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    return await pipeline.run()


def _wait_for_signal(interrupted: threading.Event) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: interrupted.set())
    while not interrupted.wait(0.5):
        pass

"""`facescreen topics|ingest|analyzer|matcher`: the distributed services, one process each.

Every service serves `/metrics`, `/healthz` and `/readyz` (`--http-port`), logs JSON lines
without biometric data, and on SIGTERM finishes what it holds and commits it.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from facescreen.cli.common import (
    CommandError,
    add_model_args,
    add_store_args,
    open_store,
    pipeline_config,
)
from facescreen.config.environment import environment
from facescreen.core.screening import SearchFn
from facescreen.ops.health import HealthServer, Readiness
from facescreen.ops.logs import quiet_clients, setup_json_logging

log = logging.getLogger("facescreen.services")
DEFAULT_PORTS = {"ingest": 9101, "analyzer": 9102, "matcher": 9103}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    topics = sub.add_parser("topics", help="create the Kafka topics (explicit partition counts)")
    topics.add_argument("action", choices=["create"])
    _bus_args(topics)
    topics.set_defaults(handler=cmd_topics)

    ingest = sub.add_parser("ingest", help="cameras -> frames topic (distributed mode)")
    ingest.add_argument("--config", type=Path, required=True, help="cameras TOML file")
    ingest.add_argument("--session", help="ingest session id (default: random)")
    ingest.add_argument("--max-reconnects", type=int,
                        help="give up on a live camera after N failed reconnections")
    _producer_args(ingest)
    _service_args(ingest, "ingest")
    ingest.set_defaults(handler=cmd_ingest)

    analyzer = sub.add_parser("analyzer", help="frames topic -> faces topic (Faust worker)")
    add_model_args(analyzer)
    analyzer.add_argument("--inference", default="onnx", metavar="onnx|triton://HOST:PORT",
                          help="ONNX Runtime in this process, or a Triton server (gRPC)")
    analyzer.add_argument("--batch", type=int, default=8, help="frames analysed together")
    analyzer.add_argument("--batch-wait", type=float, default=0.01,
                          help="seconds to wait for a batch to fill (every frame that does not "
                          "fill one waits up to this; default %(default)s)")
    analyzer.add_argument("--camera", action="append", metavar="NAME",
                          help="accept only these cameras (repeatable; default: any)")
    analyzer.add_argument("--cameras", type=Path, metavar="TOML",
                          help="accept only the cameras of this ingest config file")
    analyzer.add_argument("--max-frame-bytes", type=int, default=None,
                          help="dead-letter larger frames (default 900000)")
    analyzer.add_argument("--embedding-dtype", choices=["float32", "float16"],
                          default="float32", help="element type of embeddings on the bus")
    analyzer.add_argument("--max-frame-age", type=float, default=2.0, metavar="SECONDS",
                          help="skip live frames captured longer ago than this instead of "
                          "analysing them late (counted per camera; 0: off; default "
                          "%(default)s)")
    _service_args(analyzer, "analyzer", faust_app=True)
    analyzer.set_defaults(handler=cmd_analyzer)

    matcher = sub.add_parser("matcher", help="faces topic -> alerts topic (Faust worker)")
    add_store_args(matcher, remote=True)
    add_model_args(matcher)
    matcher.add_argument("--cooldown", type=float,
                         help="seconds before the same subject alerts again on a camera "
                         "(default: the config's [decision] table, else 30)")
    matcher.add_argument("--top-k", type=int, help="candidates per search (default 5)")
    matcher.add_argument("--max-faces", type=int, default=256,
                         help="dead-letter face events with more faces")
    matcher.add_argument("--max-event-bytes", type=int, default=1_048_576,
                         help="dead-letter larger face events")
    matcher.add_argument("--max-seq-jump", type=int, default=100,
                         help="dead-letter a seq this far past the camera's last one, unless "
                         "3 consecutive events agree on it")
    _service_args(matcher, "matcher", faust_app=True)
    matcher.set_defaults(handler=cmd_matcher)


def _bus_args(p: argparse.ArgumentParser) -> None:
    env = environment().bootstrap
    p.add_argument("--bootstrap", default=env, required=env is None, metavar="HOST:PORT[,...]",
                   help="Kafka bootstrap servers (env FACESCREEN_BOOTSTRAP)")
    p.add_argument("--topics", type=Path, metavar="TOML",
                   help="topic names, partitions and retention (default: see docs)")
    p.add_argument("--topic-prefix", default=environment().topic_prefix,
                   help="prefix for every topic and consumer group name")


def _service_args(p: argparse.ArgumentParser, name: str, faust_app: bool = False) -> None:
    _bus_args(p)
    p.add_argument("--http-host", default="127.0.0.1",
                   help="address of /metrics, /healthz, /readyz (0.0.0.0 in containers)")
    p.add_argument("--http-port", type=int, default=DEFAULT_PORTS[name],
                   help=f"port of /metrics, /healthz, /readyz (default {DEFAULT_PORTS[name]})")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    if faust_app:
        p.add_argument("--group", help=f"consumer group (default: PREFIX + facescreen-{name})")
        p.add_argument("--session-timeout", type=float, default=10.0,
                       help="consumer group session timeout, seconds")
        p.add_argument("--commit-interval", type=float, default=1.0,
                       help="seconds between offset commits (work redone after a crash)")
        p.add_argument("--send-timeout", type=float, default=10.0,
                       help="seconds per attempt (3 attempts) to put an output or dead letter "
                       "on the broker before the worker gives up and exits 1")
        p.add_argument("--fetch-wait", type=float, default=0.05, metavar="SECONDS",
                       help="longest the broker may hold a fetch that finds nothing new "
                       "(latency when idle; default %(default)s)")
        p.add_argument("--fetch-max-bytes", type=int, metavar="BYTES",
                       help="most bytes per partition and fetch (default: two of the largest "
                       "messages, at least 4 MiB)")
        p.add_argument("--max-poll-records", type=int, metavar="N",
                       help="most records handed over per poll (default: no limit)")
        _producer_args(p, batch_default=262_144)


def _producer_args(p: argparse.ArgumentParser, batch_default: int = 16_384) -> None:
    """Producer batching: linger adds latency to every message; 0 sends at once."""
    p.add_argument("--linger", type=float, default=0.0, metavar="SECONDS",
                   help="producer: wait this long to fill a batch (default %(default)s)")
    p.add_argument("--batch-bytes", type=int, default=batch_default, metavar="BYTES",
                   help="producer: largest batch per partition (default %(default)s)")


def _bus(args: argparse.Namespace) -> Any:
    from facescreen.bus.topics import BusConfig

    try:  # one line naming the file and the field (TopicsConfigError), or the prefix
        config = BusConfig.from_toml(args.topics) if args.topics else BusConfig()
        return config.with_prefix(args.topic_prefix)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _bootstrap(args: argparse.Namespace) -> list[str]:
    from facescreen.bus.topics import TopicError, bootstrap_list

    try:
        return bootstrap_list(args.bootstrap)
    except TopicError as exc:
        raise CommandError(str(exc)) from None


def _start(args: argparse.Namespace, service: str, *checks: str) -> tuple[Readiness,
                                                                       HealthServer]:
    setup_json_logging(service, getattr(logging, args.log_level))
    readiness = Readiness(*checks)
    try:
        health = HealthServer(readiness, args.http_host, args.http_port).start()
    except OSError as exc:
        raise CommandError(f"cannot serve health endpoints on {args.http_host}:"
                           f"{args.http_port}: {exc.strerror or exc}") from None
    log.info("starting", extra={"fields": {"service": service, "http_port": health.port}})
    return readiness, health


def _require(args: argparse.Namespace, bus: Any, roles: tuple[str, ...]) -> None:
    from facescreen.bus.topics import TopicError, require_topics

    try:
        require_topics(args.bootstrap, bus, roles)
    except TopicError as exc:
        raise CommandError(str(exc)) from None


def _tuning(args: argparse.Namespace) -> Any:
    from facescreen.bus.faustapp import FaustTuning

    if args.session_timeout < 1 or args.commit_interval <= 0 or args.send_timeout <= 0:
        raise CommandError("--session-timeout must be >= 1 s, --commit-interval and "
                           "--send-timeout > 0")
    try:
        return FaustTuning(session_timeout_s=args.session_timeout,
                           commit_interval_s=args.commit_interval,
                           send_timeout_s=args.send_timeout, fetch_wait_s=args.fetch_wait,
                           fetch_partition_bytes=args.fetch_max_bytes,
                           max_poll_records=args.max_poll_records, linger_s=args.linger,
                           producer_batch_bytes=args.batch_bytes)
    except ValueError as exc:
        raise CommandError(f"--fetch-wait, --fetch-max-bytes, --max-poll-records, --linger, "
                           f"--batch-bytes: {exc}") from None


def cmd_topics(args: argparse.Namespace) -> int:
    from facescreen.bus.topics import TopicError, create_topics

    bus = _bus(args)
    _bootstrap(args)
    quiet_clients()
    try:
        outcome = create_topics(args.bootstrap, bus)
    except TopicError as exc:
        raise CommandError(str(exc)) from None
    for role, spec in bus.topics().items():
        print(f"{spec.name}\t{role}\t{spec.partitions} partitions\t"
              f"retention {spec.retention_ms} ms\t{outcome[spec.name]}")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from facescreen.bus.watch import watch_topics
    from facescreen.ingest.config import ConfigError, IngestConfig
    from facescreen.ingest.service import IngestService, make_producer

    try:
        config = IngestConfig.from_toml(args.config)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
    if not 0 <= args.linger <= 5 or args.batch_bytes < 1:
        raise CommandError("--linger must be within [0, 5] s and --batch-bytes >= 1")
    bus = _bus(args)
    bootstrap = _bootstrap(args)
    readiness, health = _start(args, "ingest", "broker")
    try:
        _require(args, bus, ("frames",))
        watch_topics(bootstrap, [bus.frames], "ingest", readiness)  # the `topics` check
        producer = make_producer(bootstrap, config.max_frame_bytes,
                                 linger_ms=round(args.linger * 1000),
                                 batch_bytes=args.batch_bytes)
        service = IngestService(config, producer, bus.frames.name, readiness=readiness,
                                session=args.session, max_reconnects=args.max_reconnects)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: service.stop.set())
        try:
            results = service.run()
        finally:
            producer.close(10)
    finally:
        health.stop()
    failed = [r for r in results if r.error]
    return 1 if failed else 0


def _cameras(args: argparse.Namespace) -> frozenset[str] | None:
    names = set(args.camera or [])
    if args.cameras is not None:
        from facescreen.ingest.config import ConfigError, camera_names

        try:
            names.update(camera_names(args.cameras))
        except ConfigError as exc:
            raise CommandError(str(exc)) from None
    return frozenset(names) if names else None


def cmd_analyzer(args: argparse.Namespace) -> int:
    from facescreen.analyzer.analyzer import FaceAnalyzer
    from facescreen.analyzer.service import (
        AnalyzerSettings,
        FrameBatchAnalyzer,
        build_app,
        build_backend,
    )
    from facescreen.bus.entry import DEFAULT_MAX_FRAME_BYTES, FramePolicy
    from facescreen.bus.faustapp import run_worker

    if args.batch < 1 or args.batch_wait <= 0:
        raise CommandError("--batch must be >= 1 and --batch-wait > 0")
    bus = _bus(args)
    bootstrap = _bootstrap(args)
    config = pipeline_config(args)
    if not 0 <= args.max_frame_age < float("inf"):
        raise CommandError(f"--max-frame-age must be >= 0 (0: off), got {args.max_frame_age}")
    policy = FramePolicy(max_bytes=args.max_frame_bytes or DEFAULT_MAX_FRAME_BYTES,
                         cameras=_cameras(args), max_age_s=args.max_frame_age)
    settings = AnalyzerSettings(
        bootstrap=bootstrap, bus=bus, group=args.group or f"{args.topic_prefix}"
        "facescreen-analyzer", batch_size=args.batch, batch_wait_s=args.batch_wait,
        policy=policy, embedding_dtype=args.embedding_dtype, tuning=_tuning(args))
    readiness, health = _start(args, "analyzer", "broker", "inference")
    try:
        _require(args, bus, ("frames", "faces", "dead_letter"))
        try:
            backend = build_backend(args.inference, config, args.models_root, args.threads)
        except (ValueError, RuntimeError) as exc:  # RuntimeUnavailableError included
            raise CommandError(str(exc)) from None
        work = FrameBatchAnalyzer(FaceAnalyzer(backend, config), policy, args.embedding_dtype)
        return run_worker(build_app(settings, work, readiness), args.log_level.lower())
    finally:
        health.stop()


def _at_least(value: float, low: float, flag: str) -> float:
    if value < low:
        raise ValueError(f"{flag} must be >= {low:g}, got {value:g}")
    return value


def cmd_matcher(args: argparse.Namespace) -> int:
    from facescreen.bus.entry import FaceEventPolicy
    from facescreen.bus.faustapp import run_worker
    from facescreen.matcher.search import PatientSearch
    from facescreen.matcher.service import MatcherSettings, build_app
    from facescreen.matcher.state import SeqPolicy
    from facescreen.matcher.work import FaceEventMatcher
    from facescreen.watchlist.live import LiveLocalWatchlist

    bus = _bus(args)
    bootstrap = _bootstrap(args)
    config = pipeline_config(args)
    policy = config.screening_policy()
    try:
        limits = FaceEventPolicy(max_bytes=args.max_event_bytes, max_faces=args.max_faces)
        seq = SeqPolicy(max_jump=args.max_seq_jump)
        if args.cooldown is not None:
            policy = replace(policy, cooldown_s=_at_least(args.cooldown, 0.0, "--cooldown"))
        if args.top_k is not None:
            policy = replace(policy, top_k=int(_at_least(args.top_k, 1, "--top-k")))
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    settings = MatcherSettings(bootstrap=bootstrap, bus=bus, tuning=_tuning(args),
                               group=args.group or f"{args.topic_prefix}facescreen-matcher")
    readiness, health = _start(args, "matcher", "broker", "watchlist")
    try:
        _require(args, bus, ("faces", "alerts", "dead_letter", "feedback", "matcher_state"))
        store = open_store(args, remote=True)
        search: SearchFn
        thresholds: Mapping[str, float]
        if getattr(args, "store", None) is None:
            live = LiveLocalWatchlist(store)  # type: ignore[arg-type]  # a data directory
            search, thresholds = live.search, live.thresholds
        else:
            search, thresholds = store.matcher()
        readiness.mark("watchlist", True)
        stopping = threading.Event()
        work = FaceEventMatcher(PatientSearch(search, readiness, stopping), thresholds,
                                embedder=config.embedder.name, dim=config.embedder.dim,
                                policy=policy, limits=limits, seq=seq)
        return run_worker(build_app(settings, work, readiness, stopping),
                          args.log_level.lower())
    finally:
        health.stop()

"""`facescreen watchlist ...`: enrol, list, remove, set thresholds, calibrate, audit."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from facescreen.cli.common import (
    CommandError,
    actor,
    add_model_args,
    add_store_args,
    build_analyzer,
    open_store,
)
from facescreen.config.environment import environment
from facescreen.core.calibration import (
    DEFAULT_MAX_GROWTH,
    DEFAULT_RULE,
    RULES,
    InsufficientImpostorsError,
)
from facescreen.ingest.sources import mask_uri
from facescreen.watchlist.audit_relay import relay, relay_patiently
from facescreen.watchlist.calibrate import calibrate_list, collect_impostors, impostor_images
from facescreen.watchlist.enrol import enrol_images
from facescreen.watchlist.store import Watchlist, calibration_stale, gallery_size


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    wl = sub.add_parser("watchlist", help="manage watchlists and enrolled subjects")
    cmds = wl.add_subparsers(dest="watchlist_cmd", required=True)

    add = cmds.add_parser("add", help="enrol a subject's images on a watchlist")
    add_store_args(add, remote=True)
    add_model_args(add)
    add.add_argument("--watchlist", required=True)
    add.add_argument("--subject", required=True, help="subject id (a name or case number)")
    add.add_argument("--face", help="with several faces in an image: 'largest' or an index")
    add.add_argument("--expires", help="ISO date after which the subject is deleted")
    add.add_argument("--reason", default="", help="why (kept in the audit log)")
    add.add_argument("--actor", help="who (default: $FACESCREEN_ACTOR or the login name)")
    add.add_argument("images", nargs="+", type=Path)
    add.set_defaults(handler=cmd_add)

    ls = cmds.add_parser("list", help="list watchlists and subjects")
    add_store_args(ls, remote=True)
    add_model_args(ls)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=cmd_list)

    rm = cmds.add_parser("remove", help="remove a subject (and every template of it)")
    add_store_args(rm, remote=True)
    add_model_args(rm)
    rm.add_argument("--subject", required=True)
    rm.add_argument("--watchlist", help="only take the subject off this watchlist")
    rm.add_argument("--reason", default="")
    rm.add_argument("--actor")
    rm.set_defaults(handler=cmd_remove)

    st = cmds.add_parser("set", help="create a watchlist or set its threshold")
    add_store_args(st, remote=True)
    add_model_args(st)
    st.add_argument("--watchlist", required=True)
    st.add_argument("--threshold", type=float)
    st.add_argument("--description")
    st.add_argument("--reason", default="")
    st.add_argument("--actor")
    st.set_defaults(handler=cmd_set)

    cal = cmds.add_parser("calibrate", help="set a watchlist's threshold for a target FPIR "
                          "from images of people not on it")
    add_store_args(cal, remote=True)
    add_model_args(cal)
    cal.add_argument("--watchlist", required=True)
    cal.add_argument("--impostors", type=Path, required=True,
                     help="folder of face images of people NOT on the watchlist")
    cal.add_argument("--target-fpir", type=float, default=0.01)
    cal.add_argument("--track", type=int, default=3, metavar="K",
                     help="decide pseudo-tracks of K photos of each impostor person folder "
                          "(DIR/<person>/<image>), as the matcher decides a track (default 3;"
                          " 1 = single faces); images directly in DIR are single faces")
    cal.add_argument("--max-tracks", type=int, default=100, metavar="N",
                     help="at most N pseudo-tracks per impostor person (default 100)")
    cal.add_argument("--rule", choices=RULES, default=DEFAULT_RULE,
                     help="point = the lowest threshold at which the impostors' FPIR is at most "
                          "the target; upper = the lowest at which its one-sided 95%% bound, "
                          "resampling impostor persons, is (allows for few impostor people; "
                          f"default {DEFAULT_RULE})")
    cal.add_argument("--max-growth", type=float, default=DEFAULT_MAX_GROWTH, metavar="SHARE",
                     help="the calibration is stale once the list has grown by more than this "
                          f"share (default {DEFAULT_MAX_GROWTH:g})")
    cal.add_argument("--reason", default="calibration")
    cal.add_argument("--actor")
    cal.set_defaults(handler=cmd_calibrate)

    relay_p = cmds.add_parser("audit-relay", help="publish new audit entries to the audit topic")
    add_store_args(relay_p, remote=True)
    add_model_args(relay_p)
    relay_p.add_argument("--bootstrap", default=environment().bootstrap,
                         required=environment().bootstrap is None,
                         help="Kafka bootstrap servers (env FACESCREEN_BOOTSTRAP)")
    relay_p.add_argument("--topic-prefix", default=environment().topic_prefix)
    relay_p.add_argument("--follow", type=float, metavar="SECONDS",
                         help="keep relaying, polling this often (default: once, then exit)")
    relay_p.set_defaults(handler=cmd_audit_relay)

    au = cmds.add_parser("audit", help="print the audit log")
    add_store_args(au, remote=True)
    add_model_args(au)
    au.set_defaults(handler=cmd_audit)

    px = cmds.add_parser("purge-expired", help="delete subjects past their expiry")
    add_store_args(px, remote=True)
    add_model_args(px)
    px.add_argument("--actor")
    px.set_defaults(handler=cmd_purge)


def _expiry(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(f"--expires {text!r} is not an ISO date like 2027-01-31") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def cmd_add(args: argparse.Namespace) -> int:
    store = open_store(args, remote=True)
    expires = _expiry(args.expires)
    faces = enrol_images(build_analyzer(args), args.images, args.face)
    subject = store.add_subject(
        args.subject, args.watchlist, [(f.label, f.quality, f.embedding) for f in faces],
        actor=actor(args), reason=args.reason, expires=expires)
    print(f"enrolled {len(faces)} image(s) for {subject.subject_id!r} on {args.watchlist!r} "
          f"({len(subject.images)} in all)")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    store = open_store(args, remote=True)
    lists, subjects = store.watchlists(), store.subjects()
    sizes = {n: gallery_size(subjects, n) for n in lists}
    if args.json:
        print(json.dumps({
            "watchlists": {n: {"threshold": w.threshold, "description": w.description,
                               "calibration": w.calibration or None,
                               "gallery_size": sizes[n],
                               "calibration_stale": calibration_stale(w, sizes[n])}
                           for n, w in lists.items()},
            "subjects": {sid: {"watchlists": s.watchlists, "images": len(s.images),
                               "expires": s.expires} for sid, s in subjects.items()},
        }, indent=1))
        return 0
    for name, wl in sorted(lists.items()):
        members = sorted(sid for sid, s in subjects.items() if name in s.watchlists)
        print(f"{name}  threshold={wl.threshold:.4f}  subjects={len(members)}")
        if wl.calibration:
            print(f"  {_calibration_line(wl, sizes[name])}")
        for sid in members:
            print(f"  {sid}  images={len(subjects[sid].images)}")
    return 0


def _calibration_line(wl: Watchlist, size: int) -> str:
    """What a list's calibration promises, and whether it still holds."""
    c = wl.calibration
    when = datetime.fromtimestamp(c["calibrated_at"], UTC).strftime("%Y-%m-%d") \
        if "calibrated_at" in c else "earlier"
    text = f"calibrated {when} for FPIR {c.get('target_fpir')} ({c.get('rule', 'point')} rule"
    text += ")" if c.get("fpir_upper") is None else f", person-bootstrap bound {c['fpir_upper']:.4f})"
    if "fpir_ci" in c:
        lo, hi = c["fpir_ci"]
        text += (f" (95% CI {lo:.4f}-{hi:.4f}, {c['impostor_decisions']} decisions, "
                 f"tracks of {c.get('track_k', 1)})")
    calibrated = c.get("gallery_size", c.get("subjects"))
    text += f" at {calibrated} templates, now {size}"
    if calibration_stale(wl, size):
        text += f": STALE (grew by more than {100 * c.get('max_growth', DEFAULT_MAX_GROWTH):g}%;"
        text += " recalibrate)"
    if "threshold" in c and abs(c["threshold"] - wl.threshold) > 1e-9:
        text += f"; threshold since set by hand (calibrated {c['threshold']:.4f})"
    return text


def cmd_remove(args: argparse.Namespace) -> int:
    store = open_store(args, remote=True)
    store.remove_subject(args.subject, actor=actor(args), reason=args.reason,
                         watchlist=args.watchlist)
    where = f" from {args.watchlist!r}" if args.watchlist else " and all its templates"
    print(f"removed {args.subject!r}{where}")
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    store = open_store(args, remote=True)
    wl = store.set_watchlist(args.watchlist, actor=actor(args), reason=args.reason,
                             threshold=args.threshold, description=args.description)
    print(f"{wl.name}  threshold={wl.threshold:.4f}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    if not 0.0 < args.target_fpir < 1.0:
        raise CommandError(f"--target-fpir {args.target_fpir} is not between 0 and 1")
    if args.track < 1 or args.max_tracks < 1 or args.max_growth < 0:
        raise CommandError("--track and --max-tracks must be at least 1, --max-growth >= 0")
    if not args.impostors.is_dir():
        raise CommandError(f"impostor folder {args.impostors} does not exist")
    store = open_store(args, remote=True)
    size = gallery_size(store.subjects(), args.watchlist)
    if size == 0:
        raise CommandError(f"watchlist {args.watchlist!r} has no enrolled subject")
    if not impostor_images(args.impostors):
        raise CommandError(f"no images under {args.impostors}")
    impostors = collect_impostors(build_analyzer(args), args.impostors, args.track,
                                  args.max_tracks)
    search, _ = store.matcher([args.watchlist])
    try:
        record = calibrate_list(search, impostors, args.target_fpir, track_k=args.track,
                                gallery_size=size, max_growth=args.max_growth,
                                embedder=store.embedder, rule=args.rule)
    except InsufficientImpostorsError as exc:
        raise CommandError(f"{exc}; {impostors.images} image(s) read") from None
    store.set_watchlist(args.watchlist, actor=actor(args), reason=args.reason,
                        threshold=record["threshold"], calibration=record)
    lo, hi = record["fpir_ci"]
    plo, phi = record["fpir_ci_persons"]
    print(f"{args.watchlist}: threshold {record['threshold']:.4f} for FPIR {args.target_fpir:g} "
          f"({args.rule} rule; one-sided 95% bound resampling persons "
          f"{record['fpir_upper']:.4f}) "
          f"from {record['impostor_decisions']} impostor decisions "
          f"({record['impostor_decisions'] - impostors.loose_faces} tracks of {args.track} from "
          f"{impostors.persons} person folders, {impostors.loose_faces} single faces of loose "
          "images) against "
          f"{size} templates; expected FPIR {record['impostor_alerts']}/"
          f"{record['impostor_decisions']}, 95% CI {lo:.4f}-{hi:.4f} "
          f"(resampling persons: {plo:.4f}-{phi:.4f})")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    for entry in open_store(args, remote=True).audit_log():
        print(json.dumps(entry, sort_keys=True))
    return 0


def cmd_audit_relay(args: argparse.Namespace) -> int:
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    from facescreen.bus.security import kafka_options
    from facescreen.bus.topics import BusConfig, bootstrap_list

    store = open_store(args, remote=True)
    store_id = mask_uri(args.store) if getattr(args, "store", None) else str(
        Path(args.data_dir).resolve())
    topic = BusConfig().with_prefix(args.topic_prefix).audit.name
    try:
        producer = KafkaProducer(bootstrap_servers=bootstrap_list(args.bootstrap), acks="all",
                                 allow_auto_create_topics=False, max_block_ms=10_000,
                                 client_id="facescreen-audit-relay", **kafka_options())
    except KafkaError as exc:
        raise CommandError(f"audit relay: broker {args.bootstrap} unreachable "
                           f"({type(exc).__name__}); the cursor was not moved") from None

    def publish(event: dict[str, Any]) -> Callable[[], None]:
        key = str(event.get("subject") or event.get("watchlist") or "").encode()
        future = producer.send(topic, key=key, value=json.dumps(event, sort_keys=True).encode())
        return lambda: future.get(timeout=30)  # raises if the broker did not take it

    try:
        while True:
            try:
                count = (relay(store, store_id, publish) if args.follow is None else
                         relay_patiently(store, store_id, publish,
                                         lambda exc: isinstance(exc, KafkaError)))
            except KafkaError as exc:
                raise CommandError(f"audit relay: the broker did not acknowledge an entry "
                                   f"({type(exc).__name__}); the cursor was not moved") from None
            print(f"relayed {count} audit entr{'y' if count == 1 else 'ies'} to {topic}",
                  flush=True)
            if args.follow is None:
                return 0
            time.sleep(args.follow)
    finally:
        producer.close(timeout=5)


def cmd_purge(args: argparse.Namespace) -> int:
    gone = open_store(args, remote=True).purge_expired(actor=actor(args))
    print(f"deleted {len(gone)} expired subject(s)")
    return 0

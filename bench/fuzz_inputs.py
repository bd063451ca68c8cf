"""Malformed or random events on every other input topic, each through its worker's handling.

- frames -> `FrameBatchAnalyzer.check` then `.analyze`, in batches of 8 as the analyzer's
  agent takes them, with the real models in this process (`make_backend`, the default
  `PipelineConfig`). Hostile headers (from the frame schema, then known triggers) or
  hostile bodies (tests/fuzz/frame_cases.py), interleaved with real frames of a real face.
- feedback -> `FaceEventMatcher.feedback`, with face events interleaved so cameras hold
  open alerts, and valid verdicts on those alerts among schema mutants and raw bytes.
- alerts -> `alerts.service.store_message` into a real AlertStore on SQLite (a temporary
  folder): real alert revisions (new, replayed, older), schema instances, mutants, bytes.

Each message must end as a result (face event, stale, applied, stored, ...) or a dead
letter with a reason. Anything else raised is counted as `uncaught:<type>` with its first
traceback (the services would dead-letter it as internal_error, a defect) and the script
exits 1. Peak RSS is sampled as it goes, to show memory stays bounded.

    .venv/bin/python bench/fuzz_inputs.py --events 100000 --json docs/figures/fuzz_inputs.json
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from facescreen.alerts.service import store_message
from facescreen.alerts.store import AlertStore, sqlite_url
from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.analyzer.runtime import make_backend
from facescreen.analyzer.service import FrameBatchAnalyzer, Stale
from facescreen.bus.codecs import FrameMeta, dumps
from facescreen.bus.deadletter import DeadLetter, MessageRef
from facescreen.bus.entry import FramePolicy
from facescreen.core.alignment import l2_normalise
from facescreen.core.matching import GalleryIndex
from facescreen.core.specs import PipelineConfig
from facescreen.matcher.work import FaceEventMatcher
from fuzz_matcher import DIM, EMBEDDER, valid_event  # bench/ is on sys.path
from sqlalchemy import text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the generators are shared with tests/fuzz
from tests.alerts.factory import alert_event  # noqa: E402
from tests.fuzz.frame_cases import hostile_body, hostile_headers, jpeg, run_batch  # noqa: E402
from tests.fuzz.schema_strategies import instance, load, mutate  # noqa: E402

BATCH = 8
TRIGGERS = (b"", b"null", b"[]", b"{}", b'"x"', b"1e999", b"NaN", b"[" * 100_000 + b"]" * 100_000,
            b"[" * 5_000 + b"]" * 5_000, b"\xff\xfe{}", b'{"schema_version": 1}')


class Tally:
    """Outcomes, timings and the first traceback of each kind of uncaught exception."""

    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()
        self.kinds: Counter[str] = Counter()
        self.by_input: dict[str, Counter[str]] = {}
        self.tracebacks: dict[str, str] = {}
        self.busy_s = 0.0
        self.slowest_s = 0.0
        self.slowest_kind = ""
        self.rss_mib: list[tuple[int, float]] = []  # (messages done, RSS), ten times a topic

    def tick(self, done: int, total: int) -> None:
        if done % max(1, total // 10) == 0 or done == total:
            self.rss_mib.append((done, round(psutil.Process().memory_info().rss / 2**20, 1)))

    def run(self, kind: str, call: Callable[[], str], weight: int = 1) -> None:
        """`call` returns the outcome of one message (or `weight` messages together)."""
        began = time.perf_counter()
        try:
            outcome = call()
        except DeadLetter as letter:
            outcome = f"dead:{letter.reason}"
        except Exception as exc:
            outcome = f"uncaught:{type(exc).__name__}"
            self.tracebacks.setdefault(outcome, f"[{kind}] " + traceback.format_exc()[-3000:])
        spent = time.perf_counter() - began
        self.busy_s += spent
        if spent / weight > self.slowest_s:
            self.slowest_s, self.slowest_kind = spent / weight, kind
        self.count(kind, outcome)

    def count(self, kind: str, outcome: str) -> None:
        self.outcomes[outcome] += 1
        self.kinds[kind] += 1
        self.by_input.setdefault(kind, Counter())[outcome] += 1

    def report(self, events: int) -> dict[str, Any]:
        return {"events": events, "busy_s": round(self.busy_s, 1),
                "events_per_s": round(events / max(self.busy_s, 1e-9)),
                "slowest_ms": round(self.slowest_s * 1000, 1), "slowest_kind": self.slowest_kind,
                "outcomes": dict(sorted(self.outcomes.items())),
                "inputs": dict(sorted(self.kinds.items())),
                "outcomes_by_input": {k: dict(sorted(v.items()))
                                      for k, v in sorted(self.by_input.items())},
                "rss_mib": self.rss_mib,
                "uncaught": sum(n for k, n in self.outcomes.items() if k.startswith("uncaught")),
                "tracebacks": self.tracebacks}


def _result(result: Any) -> str:
    if isinstance(result, DeadLetter):
        return f"dead:{result.reason}"
    if isinstance(result, Stale):
        return "stale"
    return "face_event" if result["faces"] else "face_event_no_face"


def fuzz_frames(events: int, real_frames: int, odd_sizes: int, rng: random.Random,
                tally: Tally) -> int:
    """Frame batches through check + analyze; returns the faces found in the real frames.

    The odd-size frames are valid; each makes the backend compile its models for a new
    input shape (OpenVINO keeps a bounded LRU of them), which is what memory must survive.
    """
    config = PipelineConfig()
    work = FrameBatchAnalyzer(FaceAnalyzer(make_backend(config, REPO, 2), config), FramePolicy())
    work.warm_up()
    every = max(1, events // max(1, real_frames))
    odd_every = max(2, events // max(1, odd_sizes))
    real_faces = 0
    batch: list[tuple[str, MessageRef]] = []
    for n in range(events):
        size = rng.choice([(64, 48), (160, 120)])
        meta = FrameMeta(f"cam{n % 8}", "s1", n, n, time.time(), *size)
        key: bytes | None = meta.camera.encode()
        if n % every == 0:
            kind, size = "real", (320, 240)
            meta = FrameMeta(meta.camera, "s1", n, n, time.time(), *size)
            value, headers = jpeg(*size), meta.headers()
        elif n % odd_every == odd_every // 2:  # a valid frame of a size not seen before
            kind, size = "odd_size", (rng.randrange(8, 1280), rng.randrange(8, 960))
            meta = FrameMeta(meta.camera, "s1", n, n, time.time(), *size)
            value, headers = jpeg(*size), meta.headers()
        elif rng.random() < 0.5:
            kind, value = hostile_body(rng, jpeg(*size))
            kind, headers = f"body:{kind}", meta.headers()
        else:
            kind, key, headers = hostile_headers(rng, meta)
            kind, value = f"headers:{kind}", jpeg(*size)
        batch.append((kind, MessageRef("facescreen.frames", n % 8, n, key, value, headers)))
        tally.tick(n + 1, events)
        if len(batch) == BATCH or n == events - 1:
            real_faces += _frame_batch(work, batch, tally)
            batch = []
    return real_faces


def _frame_batch(work: FrameBatchAnalyzer, batch: list[tuple[str, MessageRef]],
                 tally: Tally) -> int:
    refs = [ref for _, ref in batch]
    began = time.perf_counter()
    try:
        results = run_batch(work, refs, time.time())
    except Exception:  # find the culprit frame by frame, as the agent does
        for kind, ref in batch:
            tally.run(kind, partial(_alone, work, ref))
        return 0
    spent = time.perf_counter() - began
    tally.busy_s += spent
    if spent > tally.slowest_s:
        tally.slowest_s, tally.slowest_kind = spent, "batch of " + ",".join(k for k, _ in batch)
    faces = 0
    for (kind, _), result in zip(batch, results, strict=True):
        tally.count(kind, _result(result))
        if kind == "real":
            faces += len(result["faces"]) if isinstance(result, dict) else 0
    return faces


def _alone(work: FrameBatchAnalyzer, ref: MessageRef) -> str:
    return _result(run_batch(work, [ref], time.time())[0])


def _feedback_outcome(matcher: FaceEventMatcher, ref: MessageRef) -> str:
    outcome = matcher.feedback(ref)
    if outcome.letter is not None:
        return f"dead:{outcome.letter.reason}"
    return "applied" if outcome.applied else "not_applied"


def fuzz_feedback(events: int, rng: random.Random, tally: Tally) -> int:
    """Feedback messages, with a face event every tenth message; returns alerts opened."""
    person = l2_normalise(np.random.default_rng(0).normal(size=DIM).astype(np.float32))
    index = GalleryIndex(("alice",), ("vip",), person[None])
    matcher = FaceEventMatcher(index.search, {"vip": 0.9}, embedder=EMBEDDER, dim=DIM)
    schema, t0, seqs = load("feedback"), time.time() - 3600, [0] * 8
    open_alerts: list[tuple[str, str]] = []
    for n in range(events):
        camera = rng.randrange(8)
        name = f"cam{camera}"
        if n % 10 == 0:  # screening traffic: keeps tracks and alerts live
            ref = MessageRef("facescreen.faces", camera, n, name.encode(),
                             dumps(valid_event(name, seqs[camera], person, t0)), [])
            seqs[camera] += 1
            outcome = matcher.process(ref)
            open_alerts += [(name, a.alert_id) for a in outcome.alerts if a.state == "open"]
        alert_camera, alert_id = rng.choice(open_alerts or [(name, str(uuid.uuid4()))])
        verdict = {"schema_version": 1, "feedback_id": str(uuid.uuid4()), "alert_id": alert_id,
                   "camera": alert_camera, "verdict": "reject", "actor": "reviewer",
                   "comment": "not them", "created_at": time.time()}
        key: bytes | None = alert_camera.encode()
        roll = rng.random()
        if roll < 0.2:
            kind, value = "valid_open_alert", dumps(verdict)
        elif roll < 0.3:
            doc = instance(schema, rng)
            kind, value = "schema_instance", json.dumps(doc).encode()
            key = doc["camera"].encode("utf-8", "surrogatepass") if doc["camera"] else key
        elif roll < 0.85:
            mutant = mutate(verdict, schema, rng)
            kind, value = f"mutant:{mutant.kind}", mutant.encode()
        elif roll < 0.9:
            kind, value = "key_mismatch", dumps(verdict)
            key = rng.choice([None, b"", b"other", b"\xff"])
        elif roll < 0.95:
            kind, value = "random_bytes", rng.randbytes(rng.randrange(1, 4096))
        else:
            kind, value = "trigger", rng.choice(TRIGGERS)
        ref = MessageRef("facescreen.feedback", camera, n, key, value, [])
        tally.run(kind, partial(_feedback_outcome, matcher, ref))
        tally.tick(n + 1, events)
    return len(open_alerts)


def fuzz_alerts(events: int, rng: random.Random, tally: Tally, folder: Path) -> int:
    """Alert messages into a real SQLite store; returns the alerts it holds at the end."""
    store = AlertStore(sqlite_url(folder))
    store.upgrade()
    schema = load("alert")
    known: list[tuple[str, int]] = []
    for n in range(events):
        seen = bool(known) and rng.random() < 0.5
        alert_id, revision = rng.choice(known) if seen else (str(uuid.uuid4()), 0)
        roll = rng.random()
        if roll < 0.25:
            step = rng.choice([1, 1, 0, -1]) if seen else 0  # newer, replay, older
            revision = max(0, revision + step)
            doc = alert_event(alert_id, revision, source=f"cam{int(alert_id[:2], 16) % 8}")
            known.append((alert_id, revision))
            kind, value = "valid_revision", dumps(doc)
        elif roll < 0.35:
            kind, value = "schema_instance", json.dumps(instance(schema, rng)).encode()
        elif roll < 0.9:
            mutant = mutate(alert_event(alert_id, revision), schema, rng)
            kind, value = f"mutant:{mutant.kind}", mutant.encode()
        elif roll < 0.95:
            kind, value = "random_bytes", rng.randbytes(rng.randrange(1, 4096))
        else:
            kind, value = "trigger", rng.choice(TRIGGERS)
        ref = MessageRef("facescreen.alerts", n % 8, n, f"cam{n % 8}".encode(), value, [])

        def one(ref: MessageRef = ref) -> str:
            return "stored" if store_message(store, ref) is not None else "unchanged"

        tally.run(kind, one)
        tally.tick(n + 1, events)
    with store.engine.connect() as connection:
        held = int(connection.execute(text("SELECT count(*) FROM alerts")).scalar_one())
    store.close()
    return held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="in total, all topics")
    parser.add_argument("--frames-share", type=float, default=0.3)
    parser.add_argument("--real-frames", type=int, default=300)
    parser.add_argument("--odd-sizes", type=int, default=100, help="valid frames, new sizes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    frames = int(args.events * args.frames_share)
    feedback = (args.events - frames) // 2
    alerts = args.events - frames - feedback
    process = psutil.Process()
    rss: list[tuple[str, float]] = [("start", process.memory_info().rss / 2**20)]
    topics: dict[str, Any] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        for topic, count, job in (
                ("frames", frames, lambda t: {"real_frame_faces": fuzz_frames(
                    frames, args.real_frames, args.odd_sizes, random.Random(args.seed), t)}),
                ("feedback", feedback, lambda t: {"alerts_opened": fuzz_feedback(
                    feedback, random.Random(args.seed + 1), t)}),
                ("alerts", alerts, lambda t: {"alerts_held": fuzz_alerts(
                    alerts, random.Random(args.seed + 2), t, Path(folder))})):
            tally = Tally()
            extra = job(tally)
            topics[topic] = tally.report(count) | extra
            rss.append((f"after {topic}", process.memory_info().rss / 2**20))
    uncaught = sum(t["uncaught"] for t in topics.values())
    report = {
        "events": args.events, "seed": args.seed, "seconds": round(time.perf_counter() - started),
        "topics": topics, "uncaught_exceptions": uncaught,
        "rss_mib": {label: round(mib, 1) for label, mib in rss},
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    sys.exit(1 if uncaught else 0)


if __name__ == "__main__":
    main()

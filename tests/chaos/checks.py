"""What a chaos run is judged by, computed after the run from what is on the topics.

- Frames: every frame published has a face event (after dedup by camera and seq); a
  frame with two events was redelivered (analysed again after an analyzer restart).
- Alerts: the alert revisions on the alerts topic against an undisturbed reference, the
  embedded core on the very frames of the topic. Alert ids are deterministic (source,
  the track's first frame and time, subject, watchlist), so the reference predicts every
  id and revision. An alert is *lost* when a reference (id, revision) is missing; an
  alert is *duplicated* when an id or (id, revision) appears that the reference does not
  have (a second id for one track passage: the matcher lost its camera state), or when
  one (id, revision) is published twice with different content. The same (id, revision)
  published again with the same content (a matcher killed between publishing and saving
  its state does the event again) is an idempotent upsert: counted, allowed.
- Recovery: kill -> the first output of the broken stage that the restarted component
  made possible (a face event for the analyzer and Triton, a saved camera state for the
  matcher and valkey), read from the topics' own timestamps.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.bus.codecs import frame_meta, headers_as_text, typed_frame_headers
from facescreen.core.screening import SourceScreener
from facescreen.core.specs import PipelineConfig
from facescreen.core.types import Face
from facescreen.ingest.images import decode_image
from facescreen.watchlist.store import LocalWatchlistStore

from tests.chaos.stack import Outage

Key = tuple[str, int]  # (camera, seq)
Revision = tuple[str, int]  # (alert_id, revision)


@dataclass
class FrameAccount:
    published: int
    events: int
    lost: list[Key]
    unexpected: list[Key]
    redelivered: dict[Key, list[float]]  # analysed_at of each of its events

    def redelivered_across(self, when: float) -> int:
        """Frames analysed both before and after `when` (redone after a kill then)."""
        return sum(1 for times in self.redelivered.values()
                   if min(times) < when < max(times))


def account_frames(published: Iterable[Key], events: list[dict[str, Any]]) -> FrameAccount:
    times: dict[Key, list[float]] = defaultdict(list)
    for event in events:
        times[(event["camera"], event["seq"])].append(event["analyzed_at"])
    want = set(published)
    return FrameAccount(published=len(want), events=len(events),
                        lost=sorted(want - set(times)), unexpected=sorted(set(times) - want),
                        redelivered={k: sorted(v) for k, v in times.items() if len(v) > 1})


def reference_alerts(analyzer: FaceAnalyzer, frames: list[Any], local_data: Path,
                     ) -> dict[Revision, dict[str, Any]]:
    """The embedded core on the frames of the topic, each camera in seq order; each
    distinct JPEG is analysed once (cameras replay the same clip)."""
    config = PipelineConfig()
    search, thresholds = LocalWatchlistStore(local_data, embedder=config.embedder.name,
                                             dim=config.embedder.dim).matcher()
    policy = config.screening_policy()
    digests = [hashlib.sha256(r.value).hexdigest() for r in frames]
    faces: dict[str, list[Face]] = {}
    todo = list(dict.fromkeys(digests))
    first = {d: r for d, r in zip(digests, frames, strict=True)}
    for start in range(0, len(todo), 4):
        chunk = todo[start:start + 4]
        for digest, found in zip(chunk, analyzer.analyze(
                [decode_image(first[d].value) for d in chunk]), strict=True):
            faces[digest] = list(found)
    by_camera: dict[str, list[tuple[Any, str]]] = defaultdict(list)
    for record, digest in zip(frames, digests, strict=True):
        meta = frame_meta(typed_frame_headers(headers_as_text(record.headers)))
        by_camera[meta.camera].append((meta, digest))
    out: dict[Revision, dict[str, Any]] = {}
    for camera, items in by_camera.items():
        screener = SourceScreener(camera, search, thresholds, policy)
        for meta, digest in sorted(items, key=lambda item: item[0].seq):
            for alert in screener.screen(faces[digest], meta.frame_index,
                                         meta.captured_at)[1]:
                out[(alert.alert_id, alert.revision)] = {
                    "state": alert.state, "subject_id": alert.subject_id,
                    "watchlist": alert.watchlist, "frame_index": alert.frame_index,
                    "score": alert.score, "source": alert.source}
    return out


@dataclass
class AlertAccount:
    expected: int
    alert_ids: int
    lost: list[Revision]
    extra_ids: list[str]  # ids the reference does not have: a second id for a passage
    extra_revisions: list[Revision]
    conflicting: list[Revision]  # one (id, revision), two different contents
    reemitted: int  # one (id, revision) published again with the same content
    differing: list[tuple[Revision, dict[str, Any], dict[str, Any]]] = field(
        default_factory=list)  # present in both, but not what the reference says

    @property
    def duplicates(self) -> int:
        return len(self.extra_ids) + len(self.extra_revisions) + len(self.conflicting)


def account_alerts(expected: dict[Revision, dict[str, Any]],
                   published: list[dict[str, Any]]) -> AlertAccount:
    contents: dict[Revision, list[dict[str, Any]]] = defaultdict(list)
    for doc in published:
        contents[(doc["alert_id"], doc["revision"])].append(
            {k: v for k, v in doc.items() if k != "emitted_at"})
    conflicting = sorted(k for k, docs in contents.items()
                         if any(d != docs[0] for d in docs[1:]))
    reemitted = sum(len(docs) - 1 for k, docs in contents.items() if k not in conflicting)
    want_ids = {alert_id for alert_id, _ in expected}
    extra = sorted(set(contents) - set(expected))
    differing = []
    for key in sorted(set(contents) & set(expected)):
        got, want = contents[key][0], expected[key]
        same = all(got[k] == want[k] for k in want if k != "score")
        if not same or abs(got["score"] - want["score"]) > 1e-4:
            differing.append((key, {k: got[k] for k in want}, want))
    return AlertAccount(
        expected=len(expected), alert_ids=len({k[0] for k in contents}),
        lost=sorted(set(expected) - set(contents)),
        extra_ids=sorted({k[0] for k in extra} - want_ids),
        extra_revisions=[k for k in extra if k[0] in want_ids],
        conflicting=conflicting, reemitted=reemitted, differing=differing)


def first_after(times: Iterable[float], after: float) -> float | None:
    later = [t for t in times if t > after]
    return min(later) if later else None


def recovery_s(outage: Outage, face_times: list[float], state_times: list[float],
               after: float | None = None) -> float | None:
    """Kill -> the first output of the stage `outage` broke made after `after` (default:
    when the restart began).

    Nothing the restarted component makes possible can come before its restart, and the
    dead one's last work is acknowledged within the down time, so 'after the restart'
    tells the two apart. A caller that saw the dependent service fail later than that
    (a dependency's outage noticed at the next request) passes that time instead."""
    since = outage.restarted_at if after is None else max(after, outage.restarted_at)
    times = face_times if outage.component in ("analyzer", "triton") else state_times
    first = first_after(times, since)
    return None if first is None else first - outage.killed_at


def alert_docs(records: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in records]

"""Camera status for the distributed API, read from the ingest services' own `/metrics`.

The ingest workers already export, per camera, whether the source is up, frames captured,
published and reconnects (`facescreen_source_up`, `facescreen_frames_captured_total`, ...);
the API scrapes those endpoints (a short timeout each, so a dead worker shows as such
rather than stalling the page) instead of keeping a second record of camera health.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger("facescreen.api.cameras")
_SAMPLES = {
    "facescreen_source_up": "up",
    "facescreen_frames_captured_total": "frames_captured",
    "facescreen_ingest_frames_published_total": "frames_published",
    "facescreen_ingest_frames_stale_total": "frames_stale",
    "facescreen_source_reconnects_total": "reconnects",
}


def cameras_from_metrics(text: str, endpoint: str) -> dict[str, dict[str, Any]]:
    """Per camera, the figures one ingest worker reports in its metrics text."""
    out: dict[str, dict[str, Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            field = _SAMPLES.get(sample.name)
            name = sample.labels.get("source") or sample.labels.get("camera")
            if field is None or not name:
                continue
            camera = out.setdefault(name, {"name": name, "endpoint": endpoint})
            camera[field] = camera.get(field, 0) + sample.value
    for camera in out.values():
        camera["state"] = "up" if camera.get("up", 0) >= 1 else "down"
    return out


class MetricsCameraStatus:
    """A `CameraStatus` for `ApiContext`: scrape each endpoint, merge by camera name."""

    def __init__(self, endpoints: Sequence[str], timeout_s: float = 2.0) -> None:
        self.endpoints = list(endpoints)
        self._timeout_s = timeout_s

    def __call__(self) -> list[dict[str, Any]]:
        cameras: dict[str, dict[str, Any]] = {}
        for endpoint in self.endpoints:
            try:
                reply = httpx.get(endpoint, timeout=self._timeout_s)
                reply.raise_for_status()
            except httpx.HTTPError as exc:
                log.warning("camera metrics unreachable: %s (%s)", endpoint, type(exc).__name__)
                cameras[f"?{endpoint}"] = {"name": None, "endpoint": endpoint,
                                           "state": "unknown", "error": type(exc).__name__}
                continue
            cameras.update(cameras_from_metrics(reply.text, endpoint))
        return sorted(cameras.values(), key=lambda c: str(c["name"]))

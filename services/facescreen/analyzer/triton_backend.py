"""Triton clients behind the analyzer's seams (gRPC; sync for threads, asyncio for Faust).

Two ways to use one server:
- `TritonBackend` / `AsyncTritonBackend`: the `InferenceBackend` protocol, raw model outputs;
  the client letterboxes, decodes, aligns and scores (FaceAnalyzer runs unchanged on top).
- `TritonPipelineBackend` / `AsyncTritonPipelineBackend`: JPEG frames in, `Face` objects out;
  all of that runs inside the server (`face_pipeline`), saving the float32 round trips.

A server that is down, gone or unreachable raises `InferenceUnavailable` (a RuntimeError
with the address and gRPC status), never a raw gRPC error, so callers can back off and retry;
a request the server rejects raises `InferenceError`.

Tensor names come from the pipeline configuration (`ModelNames.from_specs`) or, where left
out, from the model's metadata; each batch goes out as one request when the model's
`max_batch_size` allows (see `triton_names`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

from facescreen.analyzer.triton_common import (
    _CHANNEL_ARGS,
    InferenceError,
    InferenceUnavailable,
    _input,
    _translate,
)
from facescreen.analyzer.triton_names import (
    ServedModel,
    request_slices,
    served_model,
    single_output,
)
from facescreen.analyzer.triton_pipeline import (
    PIPELINE_OUTPUTS,
    AsyncTritonPipelineBackend,
    PipelineFrame,
    TritonPipelineBackend,
    UnreadableFrameError,
)
from facescreen.core.specs import DetectorSpec, EmbedderSpec
from facescreen.core.types import FloatArray

__all__ = ["DETECTOR_OUTPUTS", "PIPELINE_OUTPUTS", "AsyncTritonBackend",
           "AsyncTritonPipelineBackend", "InferenceError", "InferenceUnavailable", "ModelNames",
           "PipelineFrame", "TritonBackend", "TritonPipelineBackend", "UnreadableFrameError"]

DETECTOR_OUTPUTS = ("heatmap", "scale", "offset", "landmarks")  # the repository's CenterFace



@dataclass(frozen=True)
class ModelNames:
    """Model and tensor names on the server. A tensor name left None is read from the
    model's metadata; a batch limit left None is the model's `max_batch_size`."""

    detector: str = "detector"
    embedder: str = "embedder"
    pipeline: str = "face_pipeline"
    detector_input: str | None = None
    embedder_input: str | None = None
    embedder_output: str | None = None
    detector_max_batch: int | None = None
    embedder_max_batch: int | None = None

    @classmethod
    def from_specs(cls, detector: DetectorSpec, embedder: EmbedderSpec) -> ModelNames:
        """The names the pipeline configuration gives (`[detector]`, `[embedder]`)."""
        return cls(detector_input=detector.input_name, embedder_input=embedder.input_name,
                   embedder_output=embedder.output_name)


class _Base:
    def __init__(self, url: str, timeout_s: float, names: ModelNames | None) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.names = names or ModelNames()
        self._served: dict[str, ServedModel] = {}

    def _resolve(self, role: str, metadata: dict[str, Any],
                 config: dict[str, Any]) -> ServedModel:
        n = self.names
        if role == "detector":
            served = served_model(n.detector, metadata, config, input_name=n.detector_input)
            cap = n.detector_max_batch
        else:
            served = served_model(n.embedder, metadata, config, input_name=n.embedder_input,
                                  output_names=single_output(n.embedder, metadata,
                                                             n.embedder_output))
            cap = n.embedder_max_batch
        if cap is not None:
            served = ServedModel(served.model, served.input, served.outputs,
                                 max(1, min(cap, served.max_batch)))
        self._served[role] = served
        return served

    def _model_name(self, role: str) -> str:
        return self.names.detector if role == "detector" else self.names.embedder


def _request(served: ServedModel, batch: FloatArray) -> tuple[list[Any], list[Any]]:
    inputs = [_input(served.input, np.ascontiguousarray(batch, np.float32), "FP32")]
    return inputs, [grpcclient.InferRequestedOutput(n) for n in served.outputs]


def _joined(parts: list[dict[str, FloatArray]]) -> dict[str, FloatArray]:
    return {k: np.concatenate([p[k] for p in parts]).astype(np.float32, copy=False)
            for k in parts[0]}


class TritonBackend(_Base):
    """`InferenceBackend` over Triton's gRPC API (synchronous, thread-safe per call)."""

    def __init__(self, url: str, *, timeout_s: float = 10.0,
                 names: ModelNames | None = None) -> None:
        super().__init__(url, timeout_s, names)
        self._client = grpcclient.InferenceServerClient(url, channel_args=_CHANNEL_ARGS)

    def served(self, role: str) -> ServedModel:
        """The `detector` or `embedder` as the server has it (asked once, then kept)."""
        if role in self._served:
            return self._served[role]
        model = self._model_name(role)
        try:
            metadata = self._client.get_model_metadata(model, as_json=True,
                                                       client_timeout=self.timeout_s)
            config = self._client.get_model_config(model, as_json=True,
                                                   client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            raise _translate(exc, self.url, model) from None
        return self._resolve(role, metadata, config)

    def _run(self, role: str, batch: FloatArray) -> dict[str, FloatArray]:
        served = self.served(role)
        parts = []
        for part in request_slices(len(batch), served.max_batch):
            inputs, outputs = _request(served, batch[part])
            try:
                result = self._client.infer(served.model, inputs, outputs=outputs,
                                            client_timeout=self.timeout_s)
            except InferenceServerException as exc:
                raise _translate(exc, self.url, served.model) from None
            parts.append({k: result.as_numpy(k) for k in served.outputs})
        return _joined(parts)

    def detect(self, batch: FloatArray) -> dict[str, FloatArray]:
        return self._run("detector", batch)

    def embed(self, batch: FloatArray) -> FloatArray:
        served = self.served("embedder")
        return self._run("embedder", batch)[served.outputs[0]]

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

    async def served(self, role: str) -> ServedModel:
        if role in self._served:
            return self._served[role]
        model = self._model_name(role)
        try:
            metadata = await self._client.get_model_metadata(model, as_json=True,
                                                             client_timeout=self.timeout_s)
            config = await self._client.get_model_config(model, as_json=True,
                                                         client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            raise _translate(exc, self.url, model) from None
        return self._resolve(role, metadata, config)

    async def _run(self, role: str, batch: FloatArray) -> dict[str, FloatArray]:
        served = await self.served(role)
        parts = []
        for part in request_slices(len(batch), served.max_batch):
            inputs, outputs = _request(served, batch[part])
            try:
                result = await self._client.infer(served.model, inputs, outputs=outputs,
                                                  client_timeout=self.timeout_s)
            except InferenceServerException as exc:
                raise _translate(exc, self.url, served.model) from None
            parts.append({k: result.as_numpy(k) for k in served.outputs})
        return _joined(parts)

    async def detect(self, batch: FloatArray) -> dict[str, FloatArray]:
        return await self._run("detector", batch)

    async def embed(self, batch: FloatArray) -> FloatArray:
        served = await self.served("embedder")
        return (await self._run("embedder", batch))[served.outputs[0]]

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

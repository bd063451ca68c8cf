"""Tensor names and batch limits of a Triton model: from the configuration or the server.

Why: the analyzer must talk to whatever detector/embedder pair an operator deploys (say
SCRFD with ArcFace, input `input.1`, output `683`), not only to the repository's own. Names
written in the pipeline configuration are used as given and checked against the model's
metadata; names left out are read from it (a model with one input and one output needs no
names at all). The server's `max_batch_size` sets how many rows one request may carry, so
a batch goes out as one request whenever the model allows it.

Pure functions over the JSON forms of Triton's ModelMetadataResponse and ModelConfigResponse
(`as_json=True`), so both the sync and the asyncio client share them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class TensorNameError(ValueError):
    """The configured names do not fit the model the server has."""


@dataclass(frozen=True)
class ServedModel:
    """What a client needs to call one model: its input, its outputs, its batch limit."""

    model: str
    input: str
    outputs: tuple[str, ...]
    max_batch: int  # rows per request (0 in Triton's config: no batch dimension; 1 here)


def _names(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    return [str(e["name"]) for e in entries]


def served_model(model: str, metadata: Mapping[str, Any], config: Mapping[str, Any], *,
                 input_name: str | None = None,
                 output_names: Sequence[str] | None = None) -> ServedModel:
    """Resolve names against `metadata` (given ones checked, missing ones read).

    `output_names` None means every output the model has, in the model's order.
    """
    inputs = _names(metadata.get("inputs", []))
    outputs = _names(metadata.get("outputs", []))
    if input_name is None:
        if len(inputs) != 1:
            raise TensorNameError(f"model {model!r} has inputs {inputs}: name the one to use "
                                  "in the configuration")
        input_name = inputs[0]
    elif input_name not in inputs:
        raise TensorNameError(f"model {model!r} has no input {input_name!r} (it has {inputs})")
    wanted = list(outputs if output_names is None else output_names)
    absent = [n for n in wanted if n not in outputs]
    if absent or not wanted:
        raise TensorNameError(f"model {model!r} has no output(s) {absent} (it has {outputs})")
    body = config.get("config", config)
    max_batch = int(body.get("max_batch_size", 0) or 0)
    return ServedModel(model, input_name, tuple(wanted), max(1, max_batch))


def single_output(model: str, metadata: Mapping[str, Any],
                  configured: str | None) -> list[str]:
    """The embedder's one output: the configured name, or the model's only output."""
    if configured is not None:
        return [configured]
    outputs = _names(metadata.get("outputs", []))
    if len(outputs) != 1:
        raise TensorNameError(f"model {model!r} has outputs {outputs}: name the embedding "
                              "output in the configuration")
    return outputs


def request_slices(rows: int, max_batch: int) -> list[slice]:
    """One slice when the batch fits the model's limit, else the fewest that do."""
    if rows <= max_batch:
        return [slice(0, rows)]
    return [slice(s, min(rows, s + max_batch)) for s in range(0, rows, max_batch)]

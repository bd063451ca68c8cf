"""Triton python-backend model: ONNX Runtime on the CPU over the `model.onnx` its config names.

This is the CPU form of a model that production serves with Triton's `onnxruntime` backend on
a GPU: the same ONNX file, the same input and output names and dims, dynamic batching on. It
exists because the tritonserver shipped in PyPI's nvidia-pytriton has only the python backend.

config.pbtxt parameters (all `string_value`):
  onnx_model         path of the ONNX file, relative to the version folder (default model.onnx)
  intra_op_threads   ONNX Runtime's intra-op threads (default 2)

`devstack.triton.build_cpu_repository` copies this file to `<model>/1/model.py`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


def _parameters(config: dict[str, Any]) -> dict[str, str]:
    return {k: str(v.get("string_value", "")) for k, v in config.get("parameters", {}).items()}


class TritonPythonModel:
    """One ONNX Runtime session; each `execute` runs the whole dynamic batch at once."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = _parameters(config)
        version_dir = Path(args["model_repository"]) / args["model_version"]
        path = Path(params.get("onnx_model") or "model.onnx")
        if not path.is_absolute():
            path = version_dir / path
        if not path.is_file():
            raise pb_utils.TritonModelException(f"{args['model_name']}: ONNX file {path} is missing")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads") or 2)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        graph_in = {i.name for i in self.session.get_inputs()}
        graph_out = {o.name for o in self.session.get_outputs()}
        missing = sorted((set(self.inputs) - graph_in) | (set(self.outputs) - graph_out))
        if missing:
            raise pb_utils.TritonModelException(
                f"{args['model_name']}: config names {missing} are not in {path.name} "
                f"(inputs {sorted(graph_in)}, outputs {sorted(graph_out)})")

    def execute(self, requests: list[Any]) -> list[Any]:
        """Run requests of equal input shapes as one ONNX Runtime call, then split the outputs.

        Triton's dynamic batcher hands the python backend a list of requests rather than one
        tensor; concatenating them is what makes the batching pay off.
        """
        arrays = [{n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.inputs}
                  for r in requests]
        groups: dict[tuple[tuple[int, ...], ...], list[int]] = {}
        for i, feeds in enumerate(arrays):
            key = tuple(feeds[n].shape[1:] for n in self.inputs)
            groups.setdefault(key, []).append(i)
        responses: list[Any] = [None] * len(requests)
        for members in groups.values():
            sizes = [arrays[i][self.inputs[0]].shape[0] for i in members]
            feeds = {n: np.concatenate([arrays[i][n] for i in members]) for n in self.inputs}
            try:
                results = self.session.run(self.outputs, feeds)
            except Exception as exc:  # an ONNX Runtime error fails these requests, not the server
                error = pb_utils.TritonError(f"ONNX Runtime: {exc}")
                for i in members:
                    responses[i] = pb_utils.InferenceResponse(output_tensors=[], error=error)
                continue
            start = 0
            for i, size in zip(members, sizes, strict=True):
                tensors = [pb_utils.Tensor(name, np.ascontiguousarray(value[start:start + size]))
                           for name, value in zip(self.outputs, results, strict=True)]
                responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
                start += size
        return responses

    def finalize(self) -> None:
        self.session = None

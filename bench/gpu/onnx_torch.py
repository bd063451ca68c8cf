"""The project's two ONNX graphs run as PyTorch modules, for the GPU bench.

Why not a converter package: the GPU machine has PyTorch and CUDA but no registry, and the
two graphs use a dozen plain operators (convolutions, pooling, batch norm, elementwise),
so a small interpreter is less to carry than a wheel and its dependencies. Weights become
buffers, the node list runs in order, so `torch.compile` and CUDA graph capture see one
static sequence of kernels.

A graph is read with the `onnx` package where it is installed, else from a bundle that
`export_bundle` wrote beside the repository (JSON node list + NPZ weights), so the GPU
machine needs neither `onnx` nor `onnxruntime`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - PyTorch's convention

Node = dict[str, Any]  # {"op", "inputs", "outputs", "attrs"}


def read_onnx(path: Path) -> tuple[list[Node], dict[str, np.ndarray], list[str], list[str]]:
    """(nodes, weights, graph inputs, graph outputs) of an ONNX file (needs `onnx`)."""
    import onnx
    from onnx import helper, numpy_helper

    graph = onnx.load(str(path)).graph
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    nodes = []
    for n in graph.node:
        attrs = {}
        for a in n.attribute:
            value = helper.get_attribute_value(a)
            attrs[a.name] = value.decode() if isinstance(value, bytes) else (
                list(value) if isinstance(value, Sequence) and not isinstance(value, str)
                else value)
        nodes.append({"op": n.op_type, "inputs": list(n.input), "outputs": list(n.output),
                      "attrs": attrs})
    inputs = [i.name for i in graph.input if i.name not in weights]
    return nodes, weights, inputs, [o.name for o in graph.output]


def export_bundle(onnx_path: Path, out: Path) -> None:
    """Write `out.json` + `out.npz`: the graph without the `onnx` package."""
    nodes, weights, inputs, outputs = read_onnx(onnx_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"nodes": nodes, "inputs": inputs,
                                                    "outputs": outputs}))
    # positional arrays are stored as arr_0 (the names), arr_1, ... (the weights, in order)
    np.savez(out.with_suffix(".npz"), np.array(list(weights), dtype=object), *weights.values())


def read_bundle(path: Path) -> tuple[list[Node], dict[str, np.ndarray], list[str], list[str]]:
    spec = json.loads(path.with_suffix(".json").read_text())
    data = np.load(path.with_suffix(".npz"), allow_pickle=True)
    weights = {str(n): data[f"arr_{i + 1}"] for i, n in enumerate(data["arr_0"])}
    return spec["nodes"], weights, spec["inputs"], spec["outputs"]


def _pads2d(attrs: dict[str, Any]) -> tuple[int, int, int, int]:
    t, left, b, r = (attrs.get("pads") or [0, 0, 0, 0])
    return int(t), int(left), int(b), int(r)


def _conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None,
          a: dict[str, Any]) -> torch.Tensor:
    t, left, bottom, r = _pads2d(a)
    if (t, left) != (bottom, r):
        x, t, left = F.pad(x, (left, r, t, bottom)), 0, 0
    return F.conv2d(x, w, b, stride=tuple(a.get("strides", [1, 1])), padding=(t, left),
                    dilation=tuple(a.get("dilations", [1, 1])), groups=int(a.get("group", 1)))


def _conv_t(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None,
            a: dict[str, Any]) -> torch.Tensor:
    t, left, _, _ = _pads2d(a)
    return F.conv_transpose2d(x, w, b, stride=tuple(a.get("strides", [1, 1])),
                              padding=(t, left),
                              output_padding=tuple(a.get("output_padding", [0, 0])),
                              groups=int(a.get("group", 1)),
                              dilation=tuple(a.get("dilations", [1, 1])))


def _pool(kind: str) -> Callable[[list[Any], dict[str, Any]], torch.Tensor]:
    def run(i: list[Any], a: dict[str, Any]) -> torch.Tensor:
        t, left, b, r = _pads2d(a)
        x = i[0]
        if (t, left) != (b, r):
            raise NotImplementedError("asymmetric pooling pads")
        k, s = tuple(a["kernel_shape"]), tuple(a.get("strides", [1, 1]))
        ceil = bool(a.get("ceil_mode", 0))
        if kind == "max":
            return F.max_pool2d(x, k, s, (t, left), ceil_mode=ceil)
        return F.avg_pool2d(x, k, s, (t, left), ceil_mode=ceil,
                            count_include_pad=bool(a.get("count_include_pad", 0)))
    return run


def _pad(i: list[Any], a: dict[str, Any]) -> torch.Tensor:
    x, pads = i[0], a["_pads"]  # read once at load: no device sync inside a CUDA graph
    if a.get("mode", "constant") != "constant":
        raise NotImplementedError(f"Pad mode {a.get('mode')}")
    n = len(pads) // 2
    order: list[int] = []
    for d in reversed(range(n)):  # torch wants the last dimension first
        order += [pads[d], pads[d + n]]
    return F.pad(x, tuple(order), value=float(a.get("_value", 0.0)))


OPS: dict[str, Callable[[list[Any], dict[str, Any]], torch.Tensor]] = {
    "Conv": lambda i, a: _conv(i[0], i[1], i[2] if len(i) > 2 else None, a),
    "ConvTranspose": lambda i, a: _conv_t(i[0], i[1], i[2] if len(i) > 2 else None, a),
    "BatchNormalization": lambda i, a: F.batch_norm(i[0], i[3], i[4], i[1], i[2], False, 0.0,
                                                    float(a.get("epsilon", 1e-5))),
    "Relu": lambda i, a: F.relu(i[0]),
    "Sigmoid": lambda i, a: torch.sigmoid(i[0]),
    "Add": lambda i, a: i[0] + i[1],
    "Sub": lambda i, a: i[0] - i[1],
    "Mul": lambda i, a: i[0] * i[1],
    "MatMul": lambda i, a: torch.matmul(i[0], i[1]),
    "Identity": lambda i, a: i[0],
    "Flatten": lambda i, a: torch.flatten(i[0], int(a.get("axis", 1))),
    "GlobalAveragePool": lambda i, a: i[0].mean(dim=(2, 3), keepdim=True),
    "MaxPool": _pool("max"),
    "AveragePool": _pool("avg"),
    "Pad": _pad,
}


class OnnxModule(torch.nn.Module):  # type: ignore[misc,unused-ignore]  # Any without torch
    """One ONNX graph as a module: `forward(x)` returns the graph's outputs by name."""

    def __init__(self, nodes: list[Node], weights: dict[str, np.ndarray], inputs: list[str],
                 outputs: list[str]) -> None:
        super().__init__()
        unknown = sorted({n["op"] for n in nodes} - set(OPS))
        if unknown:
            raise NotImplementedError(f"operators not supported: {unknown}")
        self.nodes = []
        for node in nodes:
            node = {**node, "attrs": dict(node["attrs"])}
            if node["op"] == "Pad":  # shape-like inputs become plain numbers
                node["attrs"]["_pads"] = [int(v) for v in weights[node["inputs"][1]]]
                if len(node["inputs"]) > 2 and node["inputs"][2]:
                    node["attrs"]["_value"] = float(weights[node["inputs"][2]])
                node["inputs"] = node["inputs"][:1]
            self.nodes.append(node)
        self.input_names, self.output_names = inputs, outputs
        used = {n for node in self.nodes for n in node["inputs"]}
        self._keys = {name: f"w{i}" for i, name in enumerate(weights) if name in used}
        for name, key in self._keys.items():
            self.register_buffer(key, torch.from_numpy(np.array(weights[name])))

    @classmethod
    def load(cls, onnx_path: Path, bundle: Path | None = None) -> OnnxModule:
        try:
            return cls(*read_onnx(onnx_path))
        except ImportError:
            if bundle is None:
                raise
            return cls(*read_bundle(bundle))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        env: dict[str, Any] = {self.input_names[0]: x}
        for node in self.nodes:
            args = [env[n] if n in env else getattr(self, self._keys[n]) if n else None
                    for n in node["inputs"]]
            env[node["outputs"][0]] = OPS[node["op"]](args, node["attrs"])
        return {n: env[n] for n in self.output_names}

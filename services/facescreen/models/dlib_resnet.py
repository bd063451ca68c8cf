"""Rebuild dlib's face-recognition ResNet (`dlib_face_recognition_resnet_model_v1.dat`) as ONNX.

dlib stores a network in its own binary serialisation, not in any exchange format, so the
weights are read here straight from that stream and the graph is rebuilt node by node.

How the stream is laid out (learned from dlib's `serialize.h`, `dnn/core.h`, `dnn/tensor.h`,
`dnn/layers.h`, `dnn/input.h` and `dnn/loss.h`):

* integers are compact: one control byte (low nibble = byte count, 0x80 = negative) and then
  that many little-endian magnitude bytes; bools are the characters '1' / '0'; strings are a
  compact length and raw bytes; floats are a compact int64 mantissa and int16 exponent;
* a tensor is version 2, then n, k, nr, nc and n*k*nr*nc little-endian float32 values; an
  "alias" (a view into a layer's parameter tensor) is version 1 and its four dimensions;
* each wrapper writes its version and then its inner network *before* its own state, so the
  file opens with the loss layer and a run of nested version numbers (2 = a layer, 1 = a tag
  or skip marker) and then lists the layers' contents input-first, ending at the fc layer.

Tag and skip markers carry no id and `add_prev_` does not name the tag it adds, so the
wiring cannot be read from the file. It comes from the network definition in dlib's
`dnn_face_recognition_ex.cpp` (see `_expected_roles`); the file's sequence of layer kinds
must match it exactly, which is also what rejects any other network.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

__all__ = ["convert_dlib_resnet"]

Array = NDArray[np.float32]

INPUT_NAME = "image"
OUTPUT_NAME = "embedding"
INPUT_SIZE = 150
EMBEDDING_DIM = 128
OPSET = 17
# IR 8 is the version that introduced opset 17, so older runtimes can still load the file.
IR_VERSION = 8

_FLOAT_SPECIALS = {32000: math.inf, 32001: -math.inf, 32002: math.nan}  # dlib float_details


# --------------------------------------------------------------------------------------------
# dlib primitives


class DlibReader:
    """Cursor over a dlib-serialised byte stream; every malformed read raises ValueError."""

    def __init__(self, data: bytes, origin: str) -> None:
        self._data = data
        self._pos = 0
        self._origin = origin

    def fail(self, what: str) -> ValueError:
        return ValueError(f"{self._origin}: not a dlib network of the expected shape: "
                          f"{what} (at byte {self._pos})")

    def _take(self, count: int) -> bytes:
        if count < 0 or self._pos + count > len(self._data):
            raise self.fail(f"file ends early (wanted {count} more bytes)")
        chunk = self._data[self._pos:self._pos + count]
        self._pos += count
        return chunk

    def integer(self) -> int:
        """A compact integer: control byte, then up to 8 little-endian magnitude bytes."""
        control = self._take(1)[0]
        size = control & 0x0F
        if control & 0x70 or size > 8:
            raise self.fail(f"bad integer control byte 0x{control:02x}")
        value = int.from_bytes(self._take(size), "little")
        return -value if control & 0x80 else value

    def boolean(self) -> bool:
        char = self._take(1)
        if char not in (b"0", b"1"):
            raise self.fail(f"bad bool byte {char!r}")
        return char == b"1"

    def string(self) -> str:
        length = self.integer()
        return self._take(length).decode("latin-1")

    def peek_string(self) -> str:
        """The string that starts here, or "" if none could; the cursor does not move."""
        start = self._pos
        try:
            return self.string()
        except ValueError:
            return ""
        finally:
            self._pos = start

    def real(self) -> float:
        """dlib's portable float: value = mantissa * 2**exponent (with inf/nan sentinels)."""
        mantissa = self.integer()
        exponent = self.integer()
        if exponent in _FLOAT_SPECIALS:
            return _FLOAT_SPECIALS[exponent]
        return math.ldexp(mantissa, exponent)

    def dims(self, expected_version: int, what: str) -> tuple[int, int, int, int]:
        version = self.integer()
        if version != expected_version:
            raise self.fail(f"{what} has version {version}, expected {expected_version}")
        n, k, nr, nc = (self.integer() for _ in range(4))
        if min(n, k, nr, nc) < 0:
            raise self.fail(f"{what} has negative dimensions {(n, k, nr, nc)}")
        return n, k, nr, nc

    def tensor(self) -> Array:
        """A resizable_tensor, shaped (n, k, nr, nc)."""
        shape = self.dims(2, "tensor")
        count = math.prod(shape)
        raw = self._take(4 * count)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)

    def alias(self) -> tuple[int, int, int, int]:
        """An alias_tensor: the shape of a view into a layer's parameter tensor."""
        return self.dims(1, "alias tensor")

    def at_end(self) -> bool:
        return self._pos == len(self._data)


def _split_params(reader: DlibReader, params: Array,
                  *views: tuple[int, int, int, int]) -> list[Array]:
    """Cut a layer's flat parameter tensor into its consecutive alias views."""
    flat = params.reshape(-1)
    if sum(math.prod(v) for v in views) != flat.size:
        raise reader.fail(f"parameter tensor of {flat.size} values does not hold views {views}")
    out: list[Array] = []
    offset = 0
    for view in views:
        size = math.prod(view)
        out.append(flat[offset:offset + size].reshape(view))
        offset += size
    return out


# --------------------------------------------------------------------------------------------
# layer records and one reader per layer kind


@dataclass(frozen=True)
class InputRGB:
    mean: tuple[float, float, float]
    rows: int
    cols: int


@dataclass(frozen=True)
class Conv:
    weight: Array  # (out, in, kh, kw)
    bias: Array  # (out,)
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass(frozen=True)
class Affine:
    gamma: Array  # (channels,)
    beta: Array  # (channels,)


@dataclass(frozen=True)
class Relu:
    pass


@dataclass(frozen=True)
class Pool:
    kind: str  # "max" or "avg"
    window: tuple[int, int]  # (0, 0) = the whole input
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass(frozen=True)
class AddPrev:
    pass


@dataclass(frozen=True)
class FullyConnected:
    weight: Array  # (inputs, outputs): dlib computes x @ W
    bias: Array | None


@dataclass(frozen=True)
class Marker:
    """A tag or skip wrapper; the file says neither which nor its id."""


Layer = Conv | Affine | Relu | Pool | AddPrev | FullyConnected | Marker


def read_con(r: DlibReader, version: str) -> Conv:
    params = r.tensor()
    filters, rows, cols = r.integer(), r.integer(), r.integer()
    stride = (r.integer(), r.integer())
    padding = (r.integer(), r.integer())
    weight_view, bias_view = r.alias(), r.alias()
    for _ in range(4):  # learning-rate and weight-decay multipliers: training only
        r.real()
    if weight_view[0] != filters or weight_view[2:] != (rows, cols):
        raise r.fail(f"con filters {weight_view} disagree with {filters}x{rows}x{cols}")
    weight, bias = _split_params(r, params, weight_view, bias_view)
    return Conv(weight, bias.reshape(-1), stride, padding)


def read_affine(r: DlibReader, version: str) -> Affine:
    params = r.tensor()
    gamma_view, beta_view = r.alias(), r.alias()
    mode = r.integer()
    if version == "affine_2":
        r.boolean()  # "disabled" flag, only ever set when fusing layers in memory
    if mode != 0 or gamma_view[2:] != (1, 1):
        raise r.fail("affine layer is not per-channel (CONV_MODE)")
    gamma, beta = _split_params(r, params, gamma_view, beta_view)
    return Affine(gamma.reshape(-1), beta.reshape(-1))


def read_relu(r: DlibReader, version: str) -> Relu:
    return Relu()


def read_pool(r: DlibReader, version: str) -> Pool:
    window = (r.integer(), r.integer())
    stride = (r.integer(), r.integer())
    padding = (r.integer(), r.integer())
    return Pool("max" if version.startswith("max") else "avg", window, stride, padding)


def read_add_prev(r: DlibReader, version: str) -> AddPrev:
    return AddPrev()


def read_fc(r: DlibReader, version: str) -> FullyConnected:
    outputs, inputs = r.integer(), r.integer()
    params = r.tensor()
    weight_view, bias_view = r.alias(), r.alias()
    has_bias = r.integer() == 0  # dlib: FC_HAS_BIAS = 0, FC_NO_BIAS = 1
    for _ in range(4):
        r.real()
    if math.prod(weight_view) != inputs * outputs:
        raise r.fail(f"fc weights {weight_view} do not hold {inputs}x{outputs}")
    views = (weight_view, bias_view) if has_bias else (weight_view,)
    parts = _split_params(r, params, *views)
    bias = parts[1].reshape(-1) if has_bias else None
    return FullyConnected(parts[0].reshape(inputs, outputs), bias)


_LAYER_READERS: dict[str, Callable[[DlibReader, str], Layer]] = {
    "con_4": read_con,
    "affine_": read_affine,
    "affine_2": read_affine,
    "relu_": read_relu,
    "max_pool_2": read_pool,
    "avg_pool_2": read_pool,
    "add_prev_": read_add_prev,
    "fc_2": read_fc,
}


def read_layer_details(r: DlibReader) -> Layer:
    kind = r.string()
    reader = _LAYER_READERS.get(kind)
    if reader is None:
        raise r.fail(f"unsupported layer type {kind!r}")
    return reader(r, kind)


def read_input_rgb_sized(r: DlibReader) -> InputRGB:
    kind = r.string()
    if kind != "input_rgb_image_sized":
        raise r.fail(f"input layer is {kind!r}, expected 'input_rgb_image_sized'")
    mean = (r.real(), r.real(), r.real())
    return InputRGB(mean, r.integer(), r.integer())


def read_loss_metric(r: DlibReader) -> None:
    kind = r.string()
    if kind != "loss_metric_2":
        raise r.fail(f"loss layer is {kind!r}, expected 'loss_metric_2'")
    r.real()  # margin
    r.real()  # distance threshold


def _skip_layer_state(r: DlibReader, tensors: int) -> None:
    """Skip an add_layer's cached training state (three flags, then buffers)."""
    for _ in range(3):
        r.boolean()
    for _ in range(tensors):
        r.tensor()


# --------------------------------------------------------------------------------------------
# the whole file


@dataclass(frozen=True)
class DlibNetwork:
    input_layer: InputRGB
    layers: list[Layer]  # input-first, tag/skip wrappers as Marker


def parse_dlib_network(data: bytes, origin: str = "<bytes>") -> DlibNetwork:
    """Read a `loss_metric<...<input_rgb_image_sized>>` network, input-first."""
    r = DlibReader(data, origin)
    if r.integer() != 1:
        raise r.fail("does not start with an add_loss_layer (version 1)")
    read_loss_metric(r)

    # The run of nested wrapper versions, outermost first, down to the input layer.
    wrappers: list[str] = []
    while True:
        version = r.integer()
        if r.peek_string().startswith("input_"):
            if version not in (2, 3):
                raise r.fail(f"first layer has version {version}, expected 2 or 3")
            break
        if version == 2:
            wrappers.append("layer")
        elif version == 1:
            wrappers.append("marker")
        else:
            raise r.fail(f"unexpected wrapper version {version}")
        if len(wrappers) > 10_000:
            raise r.fail("no input layer found")

    # The layer over the input holds grad_final and, from version 3, an expansion factor.
    net_input = read_input_rgb_sized(r)
    layers: list[Layer] = [read_layer_details(r)]
    _skip_layer_state(r, tensors=3)
    if version == 3:
        r.integer()

    for wrapper in reversed(wrappers):
        if wrapper == "marker":
            layers.append(Marker())
        else:
            layers.append(read_layer_details(r))
            _skip_layer_state(r, tensors=3)  # x_grad, cached output, parameter gradient
    if not r.at_end():
        raise r.fail("trailing bytes after the network")
    return DlibNetwork(net_input, layers)


# --------------------------------------------------------------------------------------------
# the network definition the file must match


def _expected_roles() -> list[str]:
    """Input-first layer roles of dlib's `anet_type` (dnn_face_recognition_ex.cpp)."""
    block = ["con", "affine", "relu", "con", "affine"]
    res = ["tag1", *block, "add_prev1", "relu"]
    res_down = ["tag1", *block, "tag2", "skip1", "avg_pool", "add_prev2", "relu"]
    stages = [
        [res, res, res],  # 32 channels
        [res_down, res, res, res],  # 64
        [res_down, res, res],  # 128
        [res_down, res, res],  # 256
        [res_down],  # 256
    ]
    roles = ["con", "affine", "relu", "max_pool"]
    for stage in stages:
        for unit in stage:
            roles.extend(unit)
    roles.extend(["avg_pool_everything", "fc"])
    return roles


def _kind_of(layer: Layer) -> str:
    if isinstance(layer, Pool):
        if layer.window == (0, 0):
            return "avg_pool_everything" if layer.kind == "avg" else "max_pool_everything"
        return f"{layer.kind}_pool"
    names: dict[type, str] = {Conv: "con", Affine: "affine", Relu: "relu", AddPrev: "add_prev",
                              FullyConnected: "fc", Marker: "marker"}
    return names[type(layer)]


def _role_kind(role: str) -> str:
    if role.startswith(("tag", "skip")):
        return "marker"
    return role.rstrip("0123456789")


# --------------------------------------------------------------------------------------------
# ONNX graph


class _GraphBuilder:
    """Appends ONNX nodes while tracking each value's static (channels, rows, cols)."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self._counter = 0

    def name(self, hint: str) -> str:
        self._counter += 1
        return f"{hint}_{self._counter}"

    def const(self, hint: str, value: NDArray[np.float32] | NDArray[np.int64]) -> str:
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str, **attrs: Any) -> str:
        out = self.name(hint)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out


@dataclass
class _Value:
    name: str
    shape: tuple[int, int, int]  # (channels, rows, cols), batch excluded


def _pool_out(size: int, window: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - window) // stride + 1


def _emit_conv(g: _GraphBuilder, x: _Value, conv: Conv, affine: Affine | None) -> _Value:
    """Conv with the following affine folded in: gamma*(W*x + b) + beta."""
    out_ch, in_ch, kh, kw = conv.weight.shape
    if in_ch != x.shape[0]:
        raise ValueError(f"con expects {in_ch} channels but receives {x.shape[0]}")
    weight, bias = conv.weight.astype(np.float64), conv.bias.astype(np.float64)
    if affine is not None:
        if affine.gamma.shape != (out_ch,):
            raise ValueError(f"affine of {affine.gamma.shape} after a {out_ch}-filter con")
        weight = weight * affine.gamma[:, None, None, None]
        bias = bias * affine.gamma + affine.beta
    (sy, sx), (py, px) = conv.stride, conv.padding
    name = g.op("Conv", [x.name, g.const("conv_w", weight.astype(np.float32)),
                         g.const("conv_b", bias.astype(np.float32))], "conv",
                kernel_shape=[kh, kw], strides=[sy, sx], pads=[py, px, py, px])
    return _Value(name, (out_ch, _pool_out(x.shape[1], kh, sy, py),
                         _pool_out(x.shape[2], kw, sx, px)))


def _emit_pool(g: _GraphBuilder, x: _Value, pool: Pool) -> _Value:
    channels, rows, cols = x.shape
    if pool.window == (0, 0):
        op = "GlobalAveragePool" if pool.kind == "avg" else "GlobalMaxPool"
        return _Value(g.op(op, [x.name], "global_pool"), (channels, 1, 1))
    (wy, wx), (sy, sx), (py, px) = pool.window, pool.stride, pool.padding
    if pool.kind == "avg" and (py, px) != (0, 0):
        raise ValueError("padded average pooling is not part of this network")
    op = "MaxPool" if pool.kind == "max" else "AveragePool"
    name = g.op(op, [x.name], f"{pool.kind}_pool", kernel_shape=[wy, wx], strides=[sy, sx],
                pads=[py, px, py, px])
    return _Value(name, (channels, _pool_out(rows, wy, sy, py), _pool_out(cols, wx, sx, px)))


def _pad_to(g: _GraphBuilder, x: _Value, shape: tuple[int, int, int]) -> str:
    """Zero-pad channels and bottom/right edges up to `shape`, as dlib's add does."""
    extra = [want - have for want, have in zip(shape, x.shape, strict=True)]
    if not any(extra):
        return x.name
    pads = np.array([0, 0, 0, 0, 0, *extra], dtype=np.int64)
    return g.op("Pad", [x.name, g.const("pads", pads)], "pad", mode="constant")


def _emit_add(g: _GraphBuilder, a: _Value, b: _Value) -> _Value:
    """dlib's add_prev: the sum over the larger shape, missing entries counting as zero."""
    shape = (max(a.shape[0], b.shape[0]), max(a.shape[1], b.shape[1]),
             max(a.shape[2], b.shape[2]))
    return _Value(g.op("Add", [_pad_to(g, a, shape), _pad_to(g, b, shape)], "add"), shape)


def _emit_input(g: _GraphBuilder, net_input: InputRGB) -> _Value:
    """dlib's input layer: (pixel - channel mean) / 256, on RGB 0..255."""
    mean = np.array(net_input.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    centred = g.op("Sub", [INPUT_NAME, g.const("rgb_mean", mean)], "centred")
    scale = np.array(1.0 / 256.0, dtype=np.float32)
    scaled = g.op("Mul", [centred, g.const("rgb_scale", scale)], "scaled")
    return _Value(scaled, (3, net_input.rows, net_input.cols))


def _emit_fc(g: _GraphBuilder, x: _Value, fc: FullyConnected) -> str:
    inputs = math.prod(x.shape)
    if fc.weight.shape[0] != inputs:
        raise ValueError(f"fc expects {fc.weight.shape[0]} inputs but receives {inputs}")
    flat = g.op("Flatten", [x.name], "flatten", axis=1)
    out = g.op("MatMul", [flat, g.const("fc_w", fc.weight)], "fc")
    if fc.bias is not None:
        out = g.op("Add", [out, g.const("fc_b", fc.bias)], "fc_bias")
    return out


def _steps(roles: list[str], layers: list[Layer]) -> Iterator[tuple[str, Layer, Affine | None]]:
    """(role, layer, affine to fold into it): each con absorbs the affine right after it."""
    index = 0
    while index < len(layers):
        layer = layers[index]
        following = layers[index + 1] if index + 1 < len(layers) else None
        if isinstance(layer, Conv) and isinstance(following, Affine):
            yield roles[index], layer, following
            index += 2
        else:
            yield roles[index], layer, None
            index += 1


def _check_layout(net: DlibNetwork, roles: list[str]) -> None:
    """Reject anything but the face ResNet: same layer kinds in the same order, same ends."""
    found = [_kind_of(layer) for layer in net.layers]
    wanted = [_role_kind(role) for role in roles]
    if found != wanted:
        first = next((i for i, (a, b) in enumerate(zip(found, wanted, strict=False)) if a != b),
                     min(len(found), len(wanted)))
        raise ValueError(f"not dlib's face-recognition ResNet: layer {first} (input-first) is "
                         f"{found[first:first + 1]}, expected {wanted[first:first + 1]} "
                         f"({len(found)} layers, expected {len(wanted)})")
    source = net.input_layer
    if (source.rows, source.cols) != (INPUT_SIZE, INPUT_SIZE):
        raise ValueError(f"input is {source.rows}x{source.cols}, expected "
                         f"{INPUT_SIZE}x{INPUT_SIZE}")
    head = net.layers[-1]
    if not isinstance(head, FullyConnected) or head.weight.shape[1] != EMBEDDING_DIM:
        raise ValueError(f"network does not end in a {EMBEDDING_DIM}-wide fc layer")


def build_onnx(net: DlibNetwork) -> onnx.ModelProto:
    """Lay the parsed layers onto the known wiring and emit an ONNX model."""
    roles = _expected_roles()
    _check_layout(net, roles)

    g = _GraphBuilder()
    x = _emit_input(g, net.input_layer)
    tags: dict[str, _Value] = {}
    output = ""
    for role, layer, affine in _steps(roles, net.layers):
        if role.startswith("tag"):
            tags[role[len("tag"):]] = x
        elif role.startswith("skip"):
            x = tags[role[len("skip"):]]
        elif isinstance(layer, Conv):
            x = _emit_conv(g, x, layer, affine)
        elif isinstance(layer, Affine):
            raise ValueError("affine layer without a con before it")
        elif isinstance(layer, Relu):
            x = _Value(g.op("Relu", [x.name], "relu"), x.shape)
        elif isinstance(layer, Pool):
            x = _emit_pool(g, x, layer)
        elif isinstance(layer, AddPrev):
            x = _emit_add(g, x, tags[role[len("add_prev"):]])
        elif isinstance(layer, FullyConnected):
            output = _emit_fc(g, x, layer)
    g.nodes.append(helper.make_node("Identity", [output], [OUTPUT_NAME], name=OUTPUT_NAME))

    graph = helper.make_graph(
        g.nodes, "dlib_face_recognition_resnet_model_v1",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT,
                                       ["N", 3, INPUT_SIZE, INPUT_SIZE])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", EMBEDDING_DIM])],
        initializer=g.initializers,
    )
    model = helper.make_model(graph, producer_name="facescreen",
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    model.doc_string = ("dlib_face_recognition_resnet_model_v1 rebuilt from dlib's .dat. "
                        "Input: RGB 0..255, NCHW, 150x150 aligned chip. Output: raw 128-D "
                        "descriptor (not L2-normalised).")
    onnx.checker.check_model(model)
    return model


def convert_dlib_resnet(dat_path: Path, onnx_path: Path) -> None:
    """Write the ONNX: input 'image' float32 [N,3,150,150] RGB 0..255 (symbolic N), output
    'embedding' float32 [N,128] (raw, not L2-normalised). opset 17."""
    net = parse_dlib_network(Path(dat_path).read_bytes(), str(dat_path))
    try:
        model = build_onnx(net)
    except ValueError as err:
        raise ValueError(f"{dat_path}: {err}") from err
    onnx_path = Path(onnx_path)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{onnx_path.name}.", suffix=".part",
                               dir=onnx_path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(model.SerializeToString())
        os.replace(tmp, onnx_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

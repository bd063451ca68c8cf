"""The int8 embedder: reproducible build, what stays float, and the range rounding."""

from __future__ import annotations

import math

import onnx
from facescreen.models.build import INT8_ROLES, int8_model_path, model_path, pinned_sums
from facescreen.models.quantize import QUANTISED_OPS, edge_nodes, round_outward
from facescreen.models.sources import sha256_of

from tests.conftest import REPO


def test_built_int8_models_match_their_pins() -> None:
    pins = pinned_sums(REPO, "SHA256SUMS.int8")
    assert set(pins) == set(INT8_ROLES) == {"embedder"}
    for role in INT8_ROLES:
        assert sha256_of(int8_model_path(REPO, role)) == pins[role]
    assert "detector" in pinned_sums(REPO)  # the fp32 pins are read apart


def test_round_outward_widens_to_a_coarse_grid() -> None:
    for low, high in ((-3.217, 5.91), (0.0, 1e-3), (-0.5, 0.0), (-1e4, 7.0)):
        lo, hi = round_outward(low, high)
        assert lo <= low and hi >= high
        for x, r in ((low, lo), (high, hi)):
            if x != 0.0:
                assert abs(r - x) <= abs(x) / 32 and math.log2(abs(r)) < math.log2(abs(x)) + 1
    # values a hair apart (float noise between CPUs) land on the same grid point
    assert round_outward(-1.2345678, 6.5432101) == round_outward(-1.2345679, 6.5432100)


def test_embedder_ends_stay_float_and_the_rest_is_int8() -> None:
    fp32 = onnx.load(str(model_path(REPO, "embedder")))
    named = list(fp32.graph.node)
    for k, node in enumerate(named):
        node.name = node.name or f"{node.op_type.lower()}_{k}"
    kept = edge_nodes(fp32, inputs=True, outputs=True)
    ops = {n.name: n.op_type for n in named}
    assert sorted(ops[k] for k in kept) == ["Conv", "MatMul"]  # first conv, the fc layer
    int8 = onnx.load(str(int8_model_path(REPO, "embedder")))
    dq = [n for n in int8.graph.node if n.op_type == "DequantizeLinear"]
    convs = sum(1 for n in fp32.graph.node if n.op_type in QUANTISED_OPS)
    assert len(dq) >= 2 * (convs - len(kept))  # weights and activations of every inner conv

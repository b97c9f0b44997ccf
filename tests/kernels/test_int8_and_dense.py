"""The int8 per-row layer and the dense bf16 layer against their references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ollamapy.loading.gguf_rows import gguf_rows, rows_from_gguf
from ollamapy.loading.quants import dequantize
from ollamapy_kernels.dense_linear import DenseLinear, DenseLinearReference
from ollamapy_kernels.int8_linear import Int8Linear, Int8LinearReference
from ollamapy_kernels.policy import int8_layer, pack
from ollamapy_kernels.requantize import to_bf16, to_int8
from ollamapy_kernels.rows import Int8Rows
from tests.kernels.helpers import BF16_EPS, layer_bound, linear_bound, random_gguf

REQUANTIZED = ["Q5_0", "Q5_1", "Q8_0", "Q6_K", "F16", "BF16", "F32", "IQ4_NL", "IQ4_XS",
               "MXFP4"]
SUPER_BLOCK = {"Q6_K", "IQ4_XS"}  # 256-weight blocks: K a multiple of 256


def test_int8_op_is_codes_times_row_scale() -> None:
    q = torch.randint(-127, 128, (40, 96), dtype=torch.int8)
    scales = (torch.rand(40) * 0.01).to(torch.bfloat16)
    a = torch.randn(5, 96).to(torch.bfloat16)
    y = torch.ops.aten._weight_int8pack_mm(a, q, scales)
    w = q.float() * scales.float().unsqueeze(-1)
    expected = F.linear(a.float(), w)
    assert y.dtype == torch.bfloat16
    assert ((y.float() - expected).abs() <= linear_bound(a, w, expected, True)).all()
    with pytest.raises(RuntimeError, match="BFloat16"):  # scales must match the activations
        torch.ops.aten._weight_int8pack_mm(a, q, scales.float())


@pytest.mark.parametrize("type_name", REQUANTIZED)
@pytest.mark.parametrize("m", [1, 4, 7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_kernel_matches_reference(type_name: str, m: int, dtype: torch.dtype) -> None:
    shape = (96, 512) if type_name in SUPER_BLOCK else (100, 576)
    rows = rows_from_gguf(random_gguf(type_name, shape, seed=m), type_name, shape, "int8")
    assert isinstance(rows, Int8Rows)
    layer, ref = Int8Linear(rows), Int8LinearReference(rows)
    x = torch.randn(m, shape[1]).to(dtype)
    y, y_ref = layer(x), ref(x.float())
    assert y.dtype == dtype and y.shape == (m, shape[0])
    bound = linear_bound(x, ref.weight, y_ref, input_rounded=dtype == torch.bfloat16)
    assert ((y.float() - y_ref).abs() <= bound).all()


@pytest.mark.parametrize("type_name", ["IQ4_NL", "IQ4_XS", "MXFP4"])
def test_iq4_and_mxfp4_weights_take_the_int8_path(type_name: str) -> None:
    """The default policy's rows of these types (dequantized, then int8 per row) multiply
    like the file's exact float weights, within the kernel's rounding plus one int8 step per
    weight (`test_int8_requantization_is_within_one_step_per_row`)."""
    shape = (64, 512)
    raw = random_gguf(type_name, shape, seed=7)
    rows = gguf_rows(raw, type_name, shape)
    assert isinstance(rows, Int8Rows)
    layer = pack(rows)
    assert isinstance(layer, int8_layer("cpu"))
    exact = dequantize(raw, type_name, shape)  # (N, K) float32, bit-exact to gguf-py
    x = torch.randn(3, shape[1]).to(torch.bfloat16)
    y, y_exact = layer(x), F.linear(x.float(), exact)
    step = x.float().abs().sum(-1, keepdim=True) * rows.scales.float()  # (M, N)
    kernel = linear_bound(x, exact, y_exact, input_rounded=True) if isinstance(layer, Int8Linear) \
        else layer_bound(layer, x.float(), exact, y_exact)
    bound = kernel + step * (1 + 2 * BF16_EPS)
    assert ((y.float() - y_exact).abs() <= bound).all()


def test_int8_requantization_is_within_one_step_per_row() -> None:
    """Round to nearest under a bf16-rounded scale: within half a step, except where the
    rounded scale is smaller than max|w| / 127 and the largest weights clamp at ±127
    (at most 127 * 2^-8 steps more), so within one step."""
    w = torch.randn(64, 200) * 0.05
    rows = to_int8(w)
    err = (rows.dequantize() - w).abs()
    assert (err <= rows.scales.unsqueeze(-1)).all()
    assert int(rows.q.abs().max()) <= 127
    zero_row = to_int8(torch.zeros(1, 32))
    assert torch.equal(zero_row.dequantize(), torch.zeros(1, 32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dense_matches_reference(dtype: torch.dtype) -> None:
    w = torch.randn(50, 96) * 0.05
    bias = torch.randn(50)
    layer, ref = DenseLinear(to_bf16(w), bias), DenseLinearReference(to_bf16(w), bias)
    x = torch.randn(3, 96).to(dtype)
    y, y_ref = layer(x), ref(x.float())
    assert y.dtype == dtype
    # bf16 F.linear: the bias is added before the output rounding
    bound = linear_bound(x, ref.weight, y_ref, dtype == torch.bfloat16) + 2.0**-8 * bias.abs()
    assert ((y.float() - y_ref).abs() <= bound).all()


def test_dequantized_layers_equal_rounded_rows() -> None:
    raw = random_gguf("Q8_0", (32, 64))
    exact = dequantize(raw, "Q8_0", (32, 64))
    int8 = rows_from_gguf(raw, "Q8_0", (32, 64), "int8")
    assert torch.equal(Int8Linear(int8).dequantize(), int8.rounded().dequantize())
    assert Int8Linear(int8).nbytes == 32 * 64 + 32 * 2
    dense = rows_from_gguf(raw, "Q8_0", (32, 64), "bf16")
    assert torch.equal(DenseLinear(dense).dequantize(), exact.to(torch.bfloat16).float())


@pytest.mark.parametrize(("m", "n", "k", "fused"), [
    (1, 8192, 576, True), (1, 8192, 4096, True), (1, 8192, 4608, False), (2, 8192, 576, False),
    (1, 300, 576, False)])
def test_one_row_in_a_compiled_step_takes_the_fused_route(m: int, n: int, k: int,
                                                          fused: bool) -> None:
    """One row of activations through N >= ROW_MIN_N rows of K <= ROW_MAX_K, inside a compiled
    function: the product is a
    multiply and a sum that inductor fuses, not the aten kernel, and it is within the aten
    kernel's bound of the exact product (inductor may skip the bf16 round trips and be closer).
    Other shapes keep the aten kernel."""
    layer = Int8Linear(Int8Rows(torch.randint(-127, 128, (n, k), dtype=torch.int8),
                                torch.rand(n) / 100))
    graphs: list[str] = []

    def capture(gm: torch.fx.GraphModule, _inputs: list) -> object:
        graphs.append(str(gm.graph))
        return gm.forward

    x = torch.randn(m, k)
    torch._dynamo.reset()
    with torch.no_grad():
        got = torch.compile(layer, backend=capture, fullgraph=True)(x)
        inductor = torch.compile(layer, fullgraph=True)(x)
        eager = layer(x)  # the aten kernel
    (graph,) = graphs
    assert ("_weight_int8pack_mm" not in graph) == fused
    w = layer.dequantize()
    exact = F.linear(x, w)
    for y in (got, inductor, eager):
        assert y.shape == (m, n) and y.dtype == x.dtype
        assert ((y - exact).abs() <= linear_bound(x, w, exact, False)).all()

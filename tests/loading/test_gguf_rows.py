"""GGUF bytes → the kernels' forms (`loading/gguf_rows.py`): the lossless Q4 repack against
the GGUF dequantization, the layer the default policy gives each type, and the embedding."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ollamapy.engine.kernels import DEFAULT_POLICY, Policy, rows_from_dense
from ollamapy.loading.gguf_rows import (
    _CHUNK_ROWS,
    gguf_embedding,
    int4_rows_from_q4,
    quantize_head,
    quantize_linear,
    rows_from_gguf,
)
from ollamapy.loading.quants import Q4_GROUPS, dequantize
from ollamapy_kernels.dense_linear import DenseLinear
from ollamapy_kernels.int4_linear import Int4Linear
from ollamapy_kernels.kquant_vnni import KQuantVnniLinear, takes
from ollamapy_kernels.policy import int4_layer, int8_layer
from tests.kernels.helpers import random_gguf

INT4, INT8 = int4_layer("cpu"), int8_layer("cpu")
# K-quants stay in their blocks where the kernel runs (K = 256 in the test below)
Q4_K, Q6_K = ((KQuantVnniLinear if takes(kind, 256) else form)
              for kind, form in (("Q4_K", INT4), ("Q6_K", INT8)))
EXPECTED = {"Q4_0": INT4, "Q4_1": INT4, "Q4_K": Q4_K, "Q5_0": INT8,
            "Q5_1": INT8, "Q6_K": Q6_K, "Q8_0": INT8, "F16": DenseLinear,
            "BF16": DenseLinear, "F32": DenseLinear, "IQ4_NL": INT8, "IQ4_XS": INT8,
            "MXFP4": INT8}


# -- the lossless repack ---------------------------------------------------------------------

@pytest.mark.parametrize("type_name", list(Q4_GROUPS))
@pytest.mark.parametrize("shape", [(48, 256), (100, 576), (16, 1536)])
def test_repacked_weight_is_the_gguf_one_up_to_bf16_scale_and_zero(
        type_name: str, shape: tuple[int, int]) -> None:
    """The kernel's weight, read back through the kernel, against ggml's dequantization.
    Codes are kept, so the only change is scale and zero rounded to bf16 (relative error at
    most 2^-8 each): |Δw| ≤ 2^-8 (|q - 8| |scale| + |zero|), plus fp32 rounding in forming
    zero = low + 8 scale and in ggml's own sum (a few 2^-24 of the terms)."""
    raw = random_gguf(type_name, shape, seed=2)
    exact = dequantize(raw, type_name, shape)
    rows = int4_rows_from_q4(raw, type_name, shape)
    layer = Int4Linear(rows)
    got = layer.dequantize()
    assert torch.equal(got, rows.rounded().dequantize())  # the probe reads the codes back
    scale = rows.scales.repeat_interleave(32, dim=1)
    zero = rows.zeros.repeat_interleave(32, dim=1)
    codes = rows.q.float() - 8
    bound = 2.0**-8 * (codes.abs() * scale.abs() + zero.abs()) \
        + 2.0**-21 * (16 * scale.abs() + zero.abs() + exact.abs())
    assert ((got - exact).abs() <= bound).all()


def test_q4_0_zero_is_exactly_zero() -> None:
    rows = int4_rows_from_q4(random_gguf("Q4_0", (16, 64)), "Q4_0", (16, 64))
    assert torch.equal(rows.zeros, torch.zeros_like(rows.zeros))


# -- the layer each type gets ----------------------------------------------------------------

@pytest.mark.parametrize(("type_name", "layer_type"), EXPECTED.items())
def test_default_policy_per_type(type_name: str, layer_type: type) -> None:
    shape = (64, 256)
    bias = torch.randn(64)
    layer = quantize_linear(random_gguf(type_name, shape), type_name, shape, bias=bias)
    assert type(layer) is layer_type
    assert layer(torch.randn(2, 5, 256)).shape == (2, 5, 64)
    assert layer.nbytes < 64 * 256 * 4


def test_head_is_int8_and_a_policy_can_change_it() -> None:
    shape = (96, 128)
    raw = random_gguf("Q8_0", shape)
    assert isinstance(quantize_head(raw, "Q8_0", shape), INT8)
    fast = Policy(head="int4", default="int8")
    assert isinstance(quantize_head(raw, "Q8_0", shape, policy=fast), INT4)
    assert fast.target("F16") == "int8" and DEFAULT_POLICY.target("F16") == "bf16"


def test_non_matrix_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="2-D"):
        quantize_linear(random_gguf("Q8_0", (1, 64)), "Q8_0", (64,))  # type: ignore[arg-type]


# -- the embedding ---------------------------------------------------------------------------

def test_embedding_of_an_undequantizable_type_is_refused() -> None:
    with pytest.raises(NotImplementedError, match="cannot dequantize IQ2_XXS"):
        gguf_embedding(torch.zeros(2 * 66, dtype=torch.uint8), "IQ2_XXS", (2, 256))


def test_embedding_keeps_the_stored_bytes() -> None:
    raw = random_gguf("Q8_0", (10, 64))
    emb = gguf_embedding(raw, "Q8_0", (10, 64))
    assert emb.rows.shape == (10, 2 * 34) and emb.nbytes == raw.numel()
    assert emb.rows.data_ptr() == raw.data_ptr()  # a view: no copy of the table
    assert torch.equal(emb(torch.arange(10)), dequantize(raw, "Q8_0", (10, 64)))


@pytest.mark.parametrize("target", ["int8", "bf16"])
def test_rows_requantized_in_slices_equal_the_whole(target: str) -> None:
    """A weight taller than one slice (a vocabulary-sized head) is requantized a slice of rows
    at a time, int8 rows written in place: the same rows as requantizing it whole."""
    n = _CHUNK_ROWS * 2 + 100
    raw = random_gguf("Q8_0", (n, 64))
    got = rows_from_gguf(raw, "Q8_0", (n, 64), target)
    want = rows_from_dense(dequantize(raw, "Q8_0", (n, 64)), target)
    assert type(got) is type(want)
    for a, b in zip(dataclasses.astuple(got), dataclasses.astuple(want), strict=True):
        assert torch.equal(a, b)

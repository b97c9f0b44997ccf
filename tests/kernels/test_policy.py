"""The engine-facing functions: which layer each GGUF type gets, heads, dense weights."""

from __future__ import annotations

import pytest
import torch

from ollamapy_kernels.dense_linear import DenseLinear, DenseLinearReference
from ollamapy_kernels.int4_linear import Int4Linear, Int4LinearReference
from ollamapy_kernels.int8_linear import Int8Linear, Int8LinearReference
from ollamapy_kernels.policy import (
    DEFAULT_POLICY,
    Policy,
    from_dense,
    pack,
    pack_reference,
    quantize_head,
    quantize_linear,
)
from ollamapy_kernels.rows import DenseRows, Int4Rows, Int8Rows
from tests.kernels.helpers import random_gguf

EXPECTED = {"Q4_0": Int4Linear, "Q4_1": Int4Linear, "Q4_K": Int4Linear, "Q5_0": Int8Linear,
            "Q5_1": Int8Linear, "Q6_K": Int8Linear, "Q8_0": Int8Linear, "F16": DenseLinear,
            "BF16": DenseLinear, "F32": DenseLinear, "IQ4_NL": Int8Linear, "IQ4_XS": Int8Linear,
            "MXFP4": Int8Linear}


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
    assert isinstance(quantize_head(raw, "Q8_0", shape), Int8Linear)
    fast = Policy(head="int4", default="int8")
    assert isinstance(quantize_head(raw, "Q8_0", shape, policy=fast), Int4Linear)
    assert fast.target("F16") == "int8" and DEFAULT_POLICY.target("F16") == "bf16"


def test_from_dense_targets_and_int4_fallback_for_odd_widths() -> None:
    w = torch.randn(32, 96)
    assert isinstance(from_dense(w, "int4"), Int4Linear)
    assert isinstance(from_dense(w, "int8"), Int8Linear)
    assert isinstance(from_dense(w, "bf16"), DenseLinear)
    assert isinstance(from_dense(torch.randn(32, 40), "int4"), Int8Linear)  # 40 % 32 != 0
    with pytest.raises(ValueError, match="unknown target"):
        from_dense(w, "int3")  # type: ignore[arg-type]


def test_pack_and_its_reference_pair_up_by_device() -> None:
    int4 = Int4Rows(torch.zeros(16, 32, dtype=torch.uint8), torch.ones(16, 1), torch.zeros(16, 1))
    int8 = Int8Rows(torch.zeros(16, 32, dtype=torch.int8), torch.ones(16))
    dense = DenseRows(torch.zeros(16, 32))
    assert isinstance(pack_reference(int4), Int4LinearReference)
    assert isinstance(pack_reference(int8), Int8LinearReference)
    assert isinstance(pack_reference(dense), DenseLinearReference)
    # devices without an int kernel fall back to bf16 (meta stands in for such a device)
    assert isinstance(pack(int8, device="meta"), DenseLinear)
    assert isinstance(pack(int4, device="meta"), DenseLinear)
    assert isinstance(pack_reference(int4, device="meta"), DenseLinearReference)


def test_non_matrix_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="2-D"):
        quantize_linear(random_gguf("Q8_0", (1, 64)), "Q8_0", (64,))  # type: ignore[arg-type]

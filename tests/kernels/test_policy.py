"""Rows → layers: which layer each row form gets on each device, dense weights. (Which form
each GGUF type gets, end to end from its bytes: tests/loading/test_gguf_rows.py.)"""

from __future__ import annotations

import pytest
import torch

from ollamapy_kernels.dense_linear import DenseLinear, DenseLinearReference
from ollamapy_kernels.int4_linear import Int4LinearReference
from ollamapy_kernels.int8_linear import Int8LinearReference
from ollamapy_kernels.policy import from_dense, int4_layer, int8_layer, pack, pack_reference
from ollamapy_kernels.rows import DenseRows, Int4Rows, Int8Rows


def test_from_dense_targets_and_int4_fallback_for_odd_widths() -> None:
    w = torch.randn(32, 96)
    assert isinstance(from_dense(w, "int4"), int4_layer("cpu"))
    assert isinstance(from_dense(w, "int8"), int8_layer("cpu"))
    assert isinstance(from_dense(w, "bf16"), DenseLinear)
    assert isinstance(from_dense(torch.randn(32, 40), "int4"), int8_layer("cpu"))  # 40 % 32 != 0
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

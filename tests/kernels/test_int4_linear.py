"""The int4 layer: torch's CPU op semantics checked by experiment, and the kernel against its
plain-torch reference (the lossless Q4 repack is the loader's: tests/loading/test_gguf_rows.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ollamapy.loading.gguf_rows import rows_from_gguf
from ollamapy_kernels.int4_linear import Int4Linear, Int4LinearReference, scales_and_zeros
from ollamapy_kernels.requantize import to_int4
from ollamapy_kernels.rows import Int4Rows
from tests.kernels.helpers import linear_bound, random_gguf


def _random_rows(n: int, k: int, seed: int = 0) -> Int4Rows:
    g = torch.Generator().manual_seed(seed)
    return Int4Rows(torch.randint(0, 16, (n, k), generator=g, dtype=torch.uint8),
                    torch.rand(n, k // 32, generator=g) * 0.01 + 1e-3,
                    torch.randn(n, k // 32, generator=g) * 0.01)


# -- what the ops do (verified, not taken from the docs) -------------------------------------

def test_cpu_op_computes_code_minus_8_times_scale_plus_zero_scale_first() -> None:
    n, k = 64, 128
    rows = _random_rows(n, k).rounded()
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(rows.q.to(torch.int32), 2)
    sz = scales_and_zeros(rows)  # (K/32, N, 2): [..., 0] scale, [..., 1] zero
    assert packed.shape == (n, k // 2) and packed.dtype == torch.uint8
    a = torch.randn(3, k).to(torch.bfloat16)
    y = torch.ops.aten._weight_int4pack_mm_for_cpu(a, packed, 32, sz)
    expected = F.linear(a.float(), rows.dequantize())
    assert y.dtype == torch.bfloat16
    assert ((y.float() - expected).abs() <= linear_bound(a, rows.dequantize(), expected,
                                                         True)).all()
    swapped = Int4Rows(rows.q, rows.zeros, rows.scales).dequantize()
    assert not torch.allclose(y.float(), F.linear(a.float(), swapped), atol=1e-3)


def test_cpu_packing_ignores_inner_k_tiles_and_splits_into_64_row_blocks() -> None:
    q = torch.randint(0, 16, (192, 96), dtype=torch.int32)
    packs = [torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, t) for t in (1, 2, 4, 8)]
    assert all(torch.equal(packs[0], p) for p in packs)
    by_blocks = torch.cat([torch.ops.aten._convert_weight_to_int4pack_for_cpu(
        q[i:i + 64].contiguous(), 2) for i in range(0, 192, 64)])
    assert torch.equal(by_blocks, packs[0])  # so packing in 4096-row slices is exact


def test_cpu_op_needs_n_multiple_of_16_and_scales_of_the_activation_dtype() -> None:
    with pytest.raises(RuntimeError, match="dividable by 16"):
        torch.ops.aten._convert_weight_to_int4pack_for_cpu(
            torch.zeros(24, 64, dtype=torch.int32), 2)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(
        torch.zeros(16, 64, dtype=torch.int32), 2)
    with pytest.raises(RuntimeError, match="BFloat16"):
        torch.ops.aten._weight_int4pack_mm_for_cpu(torch.zeros(1, 64, dtype=torch.bfloat16),
                                                   packed, 32, torch.zeros(2, 16, 2))


# -- kernel against reference ----------------------------------------------------------------

@pytest.mark.parametrize("m", [1, 4, 7])
@pytest.mark.parametrize("shape", [(576, 576), (1536, 576), (576, 1536), (100, 96)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_matches_reference(m: int, shape: tuple[int, int], dtype: torch.dtype) -> None:
    rows = rows_from_gguf(random_gguf("Q4_1", shape, seed=m), "Q4_1", shape, "int4")
    layer, ref = Int4Linear(rows), Int4LinearReference(rows)
    x = torch.randn(m, shape[1], generator=torch.Generator().manual_seed(3)).to(dtype)
    y = layer(x)
    assert y.dtype == dtype and y.shape == (m, shape[0])
    y_ref = ref(x.float())
    bound = linear_bound(x, ref.weight, y_ref, input_rounded=dtype == torch.bfloat16)
    assert ((y.float() - y_ref).abs() <= bound).all()


def test_batched_input_and_bias() -> None:
    rows = _random_rows(48, 64)
    bias = torch.randn(48)
    layer, ref = Int4Linear(rows, bias), Int4LinearReference(rows, bias)
    x = torch.randn(2, 3, 64, generator=torch.Generator().manual_seed(4))
    y, y_ref = layer(x), ref(x)
    assert y.shape == (2, 3, 48) and y.dtype == torch.float32
    # the bias is added in fp32 after the bf16-rounded product: the bound of the product holds
    bound = linear_bound(x.view(6, 64), ref.weight, (y_ref - bias).view(6, 48), False)
    assert ((y - y_ref).view(6, 48).abs() <= bound).all()


def test_padding_rows_and_nbytes() -> None:
    rows = _random_rows(100, 64)  # padded to 112 rows inside
    layer = Int4Linear(rows)
    assert layer(torch.randn(1, 64)).shape == (1, 100)
    assert layer.nbytes == 112 * 64 // 2 + (64 // 32) * 112 * 2 * 2
    assert torch.equal(layer.dequantize(), rows.rounded().dequantize())


def test_requantized_int4_is_within_half_a_step() -> None:
    """Float → int4: each weight is within half a step of its group, plus the bf16 rounding
    of scale and zero (the codes are chosen against the rounded values, so the extra error
    only appears where the rounded range stops short of the group's min or max)."""
    w = torch.randn(64, 128) * 0.05
    rows = to_int4(w)
    err = (rows.dequantize() - w).abs()
    scale = rows.scales.repeat_interleave(32, dim=1)
    zero = rows.zeros.repeat_interleave(32, dim=1)
    assert (err <= 0.5 * scale + 2.0**-8 * (zero.abs() + 16 * scale) + 1e-9).all()
    assert torch.equal(rows.scales, rows.rounded().scales)  # already bf16 values


def test_constant_group_is_exact() -> None:
    w = torch.full((16, 32), 0.25)
    assert torch.equal(to_int4(w).dequantize(), w)

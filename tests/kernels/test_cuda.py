"""The CUDA path: the int4 layer packed for the GPU's tensor-core kernel, and the bf16
fallback for int8 rows. Runs only where a CUDA GPU is present."""

from __future__ import annotations

import pytest
import torch

from ollamapy.loading.gguf_rows import rows_from_gguf
from ollamapy_kernels.dense_linear import DenseLinear
from ollamapy_kernels.int4_linear import Int4Linear
from ollamapy_kernels.policy import pack, pack_reference
from tests.kernels.helpers import linear_bound, random_gguf

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (none present)")


@pytest.mark.parametrize("type_name", ["Q4_0", "Q4_1", "Q4_K"])
@pytest.mark.parametrize("shape", [(576, 512), (100, 1536), (3072, 768)])
@pytest.mark.parametrize("m", [1, 4, 7, 33])
def test_int4_cuda_matches_reference(type_name: str, shape: tuple[int, int], m: int) -> None:
    rows = rows_from_gguf(random_gguf(type_name, shape), type_name, shape, "int4")
    layer = pack(rows, device="cuda")
    assert isinstance(layer, Int4Linear) and layer.on_cuda
    assert layer.packed.dtype == torch.int32 and layer.packed.dim() == 4
    assert torch.equal(layer.dequantize().cpu(), rows.rounded().dequantize())
    ref = pack_reference(rows, device="cuda")
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(m, shape[1], device="cuda").to(dtype)
        y, y_ref = layer(x), ref(x.float())
        assert y.dtype == dtype and y.shape == (m, shape[0])
        # the CUDA kernel also rounds each dequantized weight to bf16 (2^-8 of sum |x||w|)
        bound = linear_bound(x, ref.weight, y_ref, False) \
            + 2.0**-8 * (x.float().abs() @ ref.weight.abs().T)
        assert ((y.float() - y_ref).abs() <= bound).all()


def test_int8_rows_fall_back_to_bf16_on_cuda() -> None:
    shape = (64, 256)
    rows = rows_from_gguf(random_gguf("Q8_0", shape), "Q8_0", shape, "int8")
    layer = pack(rows, device="cuda")
    assert isinstance(layer, DenseLinear) and layer.weight.is_cuda
    x = torch.randn(3, 256, device="cuda")
    ref = pack_reference(rows, device="cuda")
    y, y_ref = layer(x), ref(x)
    assert ((y - y_ref).abs() <= linear_bound(x, ref.weight, y_ref, False)).all()

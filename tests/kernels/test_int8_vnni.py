"""The AVX-512 VNNI int8 layer: the exact arithmetic of its kernel (signed codes times signed
activations through an unsigned-by-signed instruction), batch invariance, compiled use, and
that it keeps the loader's codes without a copy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ollamapy_kernels import native
from ollamapy_kernels.int8_linear import Int8LinearReference
from ollamapy_kernels.int8_vnni import Int8VnniLinear
from ollamapy_kernels.rows import Int8Rows
from tests.kernels.helpers import int8_activation_bound
from tests.kernels.test_int4_vnni import int8_activations

pytestmark = pytest.mark.skipif(not native.load(),
                                reason="needs an x86-64 CPU with AVX-512 VNNI and a C++ compiler")


def _rows(n: int, k: int, seed: int = 0) -> Int8Rows:
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int8)
    q[0, :32] = 127  # the extremes, against extreme activations below
    q[1, :32] = -127
    return Int8Rows(q, torch.rand(n, generator=g) * 0.01 + 1e-4)


def _x(m: int, k: int, seed: int = 1) -> torch.Tensor:
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(seed))
    x[:, :32] = torch.where(torch.arange(32) % 2 == 0, 3.0, -3.0)  # codes ±127 in group 0
    return x


@pytest.mark.parametrize("m", [1, 3, 4, 9, 70])
@pytest.mark.parametrize("shape", [(40, 64), (100, 576), (33, 640), (300, 2048), (20, 96)])
def test_kernel_is_the_product_with_int8_activations(m: int, shape: tuple[int, int]) -> None:
    rows = _rows(*shape)
    layer, ref = Int8VnniLinear(rows), Int8LinearReference(rows)
    assert torch.equal(layer.dequantize(), ref.weight)
    x = _x(m, shape[1])
    y = layer(x)
    assert y.dtype == torch.float32 and y.shape == (m, shape[0])
    xq = int8_activations(F.pad(x, (0, -shape[1] % 32)))[:, :shape[1]]
    mag = xq.abs() @ ref.weight.abs().T
    assert ((y - ref(xq)).abs() <= 2.0**-16 * mag).all()
    assert ((y - ref(x)).abs() <= int8_activation_bound(x, ref.weight)).all()


def test_each_row_is_the_same_alone_or_in_any_batch() -> None:
    layer = Int8VnniLinear(_rows(200, 640))
    x = _x(12, 640)
    alone = torch.cat([layer(x[i:i + 1]) for i in range(12)])
    for m in (2, 4, 5, 12):  # and chunks of a prompt alike
        assert torch.equal(layer(x[:m]), alone[:m]), m


def test_codes_are_not_copied_and_bias_is_added() -> None:
    rows = _rows(64, 256)
    bias = torch.randn(64, generator=torch.Generator().manual_seed(5))
    layer = Int8VnniLinear(rows, bias)
    assert layer.codes.data_ptr() == rows.q.data_ptr()  # K % 64 == 0: the loader's tensor
    x = _x(3, 256)
    assert torch.equal(layer(x), Int8VnniLinear(rows)(x) + bias)


def test_compiled_layer_gives_the_eager_result() -> None:
    layer = Int8VnniLinear(_rows(96, 576))
    x = _x(1, 576)
    compiled = torch.compile(lambda t: F.silu(layer(t * 2)), fullgraph=True)
    assert torch.equal(compiled(x), F.silu(layer(x * 2)))

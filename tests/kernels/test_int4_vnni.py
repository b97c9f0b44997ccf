"""The AVX-512 VNNI int4 layer: its layout, the exact arithmetic of its kernel, batch
invariance (decode rows and prompt chunks alike), compiled use, and how the native build
fails."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ollamapy_kernels import int4_vnni, native
from ollamapy_kernels.int4_linear import Int4LinearReference
from ollamapy_kernels.rows import Int4Rows
from tests.kernels.helpers import int8_activation_bound

pytestmark = pytest.mark.skipif(not native.load(),
                                reason="needs an x86-64 CPU with AVX-512 VNNI and a C++ compiler")


def _rows(n: int, k: int, seed: int = 0) -> Int4Rows:
    g = torch.Generator().manual_seed(seed)
    return Int4Rows(torch.randint(0, 16, (n, k), generator=g, dtype=torch.uint8),
                    torch.rand(n, k // 32, generator=g) * 0.01 + 1e-3,
                    torch.randn(n, k // 32, generator=g) * 0.01)


def _x(m: int, k: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(m, k, generator=torch.Generator().manual_seed(seed))


def int8_activations(x: torch.Tensor) -> torch.Tensor:
    """x as the kernels see it: per row and group of 32, d = max|x| / 127, s = x * (1 / d),
    a = round(s), b = min(round((s - a) * 256), 127) (nearest, ties to even), x ≈ d / 256 *
    (256 a + b), in fp32 operations in the kernels' order."""
    m, k = x.shape
    xg = x.float().view(m, k // 32, 32)
    d = xg.abs().amax(-1, keepdim=True) / 127
    s = xg * torch.where(d > 0, 1 / d, torch.zeros_like(d))
    a = torch.round(s)
    b = torch.round((s - a) * 256).clamp(max=127)
    return ((256 * a + b) * (d / 256)).view(m, k)


@pytest.mark.parametrize("shape", [(48, 128), (100, 576), (33, 640), (16, 1024), (5, 32),
                                   (7, 96)])
def test_layout_round_trip_and_dequantize(shape: tuple[int, int]) -> None:
    rows = _rows(*shape)
    layer = int4_vnni.Int4VnniLinear(rows)
    assert layer.blocks.shape == (shape[0], shape[1] // 32 * 20)  # 5 bits per weight, unpadded
    back = int4_vnni.unpack_blocks(layer.blocks)
    assert torch.equal(back.q, rows.q)
    assert torch.equal(back.scales, rows.rounded().scales)
    assert torch.equal(layer.dequantize(), rows.rounded().dequantize())
    assert layer.nbytes == layer.blocks.nbytes


@pytest.mark.parametrize("m", [1, 3, 4, 7, 16, 130])
@pytest.mark.parametrize("shape", [(48, 128), (100, 576), (300, 2048), (20, 32), (20, 96)])
def test_kernel_is_the_product_with_int8_activations(m: int, shape: tuple[int, int]) -> None:
    """Against x rounded exactly as the kernel rounds it, the product is the float one up to
    fp32 summation order; against the exact x, within the activations' rounding bound."""
    rows = _rows(*shape)
    layer, ref = int4_vnni.Int4VnniLinear(rows), Int4LinearReference(rows)
    x = _x(m, shape[1])
    y = layer(x)
    assert y.dtype == torch.float32 and y.shape == (m, shape[0])
    exact_xq = ref(int8_activations(x))
    mag = int8_activations(x).abs() @ ref.weight.abs().T
    assert ((y - exact_xq).abs() <= 2.0**-16 * mag).all()
    assert ((y - ref(x)).abs() <= int8_activation_bound(x, ref.weight)).all()


def test_each_row_is_the_same_alone_or_in_any_batch() -> None:
    layer = int4_vnni.Int4VnniLinear(_rows(200, 640))
    x = _x(70, 640)
    alone = torch.cat([layer(x[i:i + 1]) for i in range(70)])
    for m in (2, 3, 4, 5, 8, 16, 70):
        assert torch.equal(layer(x[:m]), alone[:m]), m
    assert torch.equal(layer(x.flip(0)).flip(0), alone)  # any slot
    assert torch.equal(torch.cat([layer(x[:33]), layer(x[33:])]), alone)  # any chunks


def test_bias_batch_dims_and_dtypes() -> None:
    rows = _rows(48, 64)
    bias = torch.randn(48, generator=torch.Generator().manual_seed(6))
    layer = int4_vnni.Int4VnniLinear(rows, bias)
    x = _x(6, 64).view(2, 3, 64)
    y = layer(x)
    assert y.shape == (2, 3, 48)
    assert torch.equal(y, (layer.forward(x.view(6, 64)).view(2, 3, 48)))
    assert torch.equal(y, int4_vnni.Int4VnniLinear(rows)(x) + bias)
    assert layer(x.to(torch.bfloat16)).dtype == torch.bfloat16


def test_compiled_layer_gives_the_eager_result() -> None:
    layer = int4_vnni.Int4VnniLinear(_rows(96, 576))
    x = _x(1, 576)
    compiled = torch.compile(lambda t: F.silu(layer(t * 2)), fullgraph=True)
    assert torch.equal(compiled(x), F.silu(layer(x * 2)))


def test_a_failed_build_raises_with_the_compiler_message(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("OLLAMAPY_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "/bin/false")
    with pytest.raises(RuntimeError, match="failed"):
        native.build()
    assert not list(tmp_path.glob("native/*/*.so"))  # nothing half-built left to load

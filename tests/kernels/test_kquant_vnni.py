"""The K-quant layer: GGUF's Q4_K and Q6_K blocks read as stored. Its product against the
file's own dequantization (quants.py, the loader's decoder), batch invariance, compiled use,
the rows it takes, and the loader keeping the blocks (a tied head sharing its embedding's)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ollamapy.loading.gguf_rows import block_rows, gguf_embedding, gguf_rows, quantize_head
from ollamapy_kernels import native
from ollamapy_kernels.kquant_vnni import (
    KQuantVnniLinear,
    q4k_file_order,
    q4k_kernel_order,
    takes,
)
from ollamapy_kernels.policy import DEFAULT_POLICY, pack, pack_reference
from ollamapy_kernels.reference_linear import LinearReference
from ollamapy_kernels.rows import BlockRows, Int4Rows, Int8Rows, concat_rows
from tests.kernels.helpers import int8_activation_bound, random_gguf
from tests.kernels.test_int4_vnni import int8_activations

pytestmark = pytest.mark.skipif(not native.load(),
                                reason="needs an x86-64 CPU with AVX-512 VNNI and a C++ compiler")

KINDS = ("Q4_K", "Q6_K")


def _rows(kind: str, n: int, k: int, seed: int = 0) -> BlockRows:
    return block_rows(random_gguf(kind, (n, k), seed), kind, (n, k))


def _x(m: int, k: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(m, k, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("m", [1, 3, 4, 9])
@pytest.mark.parametrize("shape", [(7, 256), (40, 768), (130, 2048)])
def test_kernel_is_the_product_of_the_files_weight(kind: str, m: int,
                                                   shape: tuple[int, int]) -> None:
    """Against x rounded exactly as the kernel rounds it, the product with the file's weight
    (nothing rounded on the weight's side) up to fp32 summation order; against the exact x,
    within the activations' rounding bound."""
    rows = _rows(kind, *shape)
    layer, ref = KQuantVnniLinear(rows), LinearReference(rows)
    assert torch.equal(ref.weight, rows.dequantize())  # the reference takes the file's weight
    x = _x(m, shape[1])
    y = layer(x)
    assert y.dtype == torch.float32 and y.shape == (m, shape[0])
    xq = int8_activations(x)
    mag = xq.abs() @ ref.weight.abs().T
    assert ((y - ref(xq)).abs() <= 2.0**-16 * mag).all()
    assert ((y - ref(x)).abs() <= int8_activation_bound(x, ref.weight)).all()


@pytest.mark.parametrize("kind", KINDS)
def test_each_row_is_the_same_alone_or_in_any_batch(kind: str) -> None:
    layer = KQuantVnniLinear(_rows(kind, 100, 512))
    x = _x(40, 512)
    alone = torch.cat([layer(x[i:i + 1]) for i in range(40)])
    for m in (2, 3, 4, 5, 8, 40):
        assert torch.equal(layer(x[:m]), alone[:m]), m
    assert torch.equal(layer(x.flip(0)).flip(0), alone)  # any slot
    assert torch.equal(torch.cat([layer(x[:13]), layer(x[13:])]), alone)  # any chunks


def test_bias_batch_dims_dtypes_and_compiled_use() -> None:
    rows = _rows("Q4_K", 48, 256)
    bias = torch.randn(48, generator=torch.Generator().manual_seed(6))
    layer = KQuantVnniLinear(rows, bias)
    x = _x(6, 256).view(2, 3, 256)
    assert torch.equal(layer(x), KQuantVnniLinear(rows)(x) + bias)
    assert layer(x.to(torch.bfloat16)).dtype == torch.bfloat16
    compiled = torch.compile(lambda t: F.silu(layer(t * 2)), fullgraph=True)
    assert torch.equal(compiled(x), F.silu(layer(x * 2)))
    assert layer.nbytes == rows.blocks.nbytes + bias.nbytes
    assert torch.equal(layer.dequantize(), rows.dequantize())


@pytest.mark.parametrize("kind", KINDS)
def test_a_step_compiled_ahead_through_the_layer_is_saved_and_loaded(kind: str, tmp_path
                                                                      ) -> None:
    """What engine/compiled.py does with a model's decode step: aot_compile, save whole
    (which needs every guard to pickle), load in place of tracing again."""
    layer, x = KQuantVnniLinear(_rows(kind, 32, 512)), _x(2, 512)
    step = torch.compile(lambda module, t: F.silu(module(t)), fullgraph=True)
    step.aot_compile(((layer, x), {})).save_compiled_function(str(tmp_path / "step.bin"))
    with (tmp_path / "step.bin").open("rb") as f:
        loaded = torch.compiler.load_compiled_function(f)
    assert loaded.guard_check(layer, x)
    assert torch.equal(loaded(layer, x), F.silu(layer(x)))


@pytest.mark.parametrize("kind", KINDS)
def test_the_layer_holds_the_files_bytes(kind: str) -> None:
    """Q6_K's blocks as given (no copy); Q4_K's with the codes of each block reordered: the
    same bytes, the same size, the headers untouched, and the file's order back on demand."""
    rows = _rows(kind, 20, 768)
    layer = KQuantVnniLinear(rows)
    assert layer.blocks.shape == rows.blocks.shape  # 144 or 210 bytes per 256 weights
    if kind == "Q6_K":
        assert layer.blocks.data_ptr() == rows.blocks.data_ptr()
        return
    assert not torch.equal(layer.blocks, rows.blocks)
    assert torch.equal(q4k_file_order(layer.blocks), rows.blocks)
    blocks, kernel = rows.blocks.reshape(-1, 144), layer.blocks.reshape(-1, 144)
    assert torch.equal(blocks[:, :16], kernel[:, :16])  # d, dmin, scales and mins
    # a sub-block's 32 codes, file order (low nibbles of run 0) = kernel order (its 16 bytes)
    file_codes = blocks[:, 16:48] & 0x0F
    kernel_codes = torch.cat([kernel[:, 16:32] & 0x0F, kernel[:, 16:32] >> 4], dim=1)
    assert torch.equal(file_codes, kernel_codes)
    assert torch.equal(q4k_kernel_order(q4k_file_order(layer.blocks)), layer.blocks)


def test_what_it_takes() -> None:
    assert takes("Q4_K", 512) and takes("Q6_K", 256)
    assert not takes("Q4_K", 640)  # K-quant rows are whole 256-weight blocks
    assert not takes("Q8_0", 512) and not takes("Q4_K", 512, "meta")
    with pytest.raises(ValueError, match="K = 640"):
        KQuantVnniLinear(BlockRows(torch.zeros(2, 360, dtype=torch.uint8), "Q4_K", 640,
                                   lambda b: b))


def test_rows_permute_concatenate_and_refuse_other_forms() -> None:
    a, b = _rows("Q4_K", 6, 512, 1), _rows("Q4_K", 4, 512, 2)
    both = concat_rows([a, b])
    assert torch.equal(both.dequantize(), torch.cat([a.dequantize(), b.dequantize()]))
    index = torch.tensor([3, 0, 5, 1, 2, 4])
    assert torch.equal(a.permute_rows(index).dequantize(), a.dequantize()[index])
    with pytest.raises(TypeError, match="Q6_K"):
        concat_rows([a, _rows("Q6_K", 4, 512)])


@pytest.mark.parametrize("kind", KINDS)
def test_the_loader_keeps_the_blocks_where_the_kernel_runs(kind: str) -> None:
    raw = random_gguf(kind, (32, 512))
    kept = gguf_rows(raw, kind, (32, 512), DEFAULT_POLICY, "cpu")
    assert isinstance(kept, BlockRows) and kept.blocks.data_ptr() == raw.data_ptr()  # no copy
    assert isinstance(pack(kept), KQuantVnniLinear)
    assert isinstance(pack_reference(kept), LinearReference)
    # without a device, or where the kernel cannot run: the forms of before
    assert isinstance(gguf_rows(raw, kind, (32, 512)), Int4Rows if kind == "Q4_K" else Int8Rows)
    assert not isinstance(gguf_rows(raw, kind, (32, 512), DEFAULT_POLICY, "meta"), BlockRows)
    # rows packed for a device without the kernel become int8, the same weight up to rounding
    assert not isinstance(pack(kept, device="meta"), KQuantVnniLinear)


def test_a_tied_q6_k_head_reads_the_embeddings_own_table() -> None:
    shape = (300, 256)
    raw = random_gguf("Q6_K", shape)
    embedding = gguf_embedding(raw, "Q6_K", shape)
    head = quantize_head(raw, "Q6_K", shape)
    assert isinstance(head, KQuantVnniLinear)
    assert head.blocks.data_ptr() == embedding.rows.data_ptr()  # one table, not two
    ids = torch.tensor([0, 7, 299])
    assert torch.equal(head.dequantize()[ids], embedding(ids))

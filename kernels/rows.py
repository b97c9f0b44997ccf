"""Weights between the file and the kernel: quantized rows that can still be reordered and
stacked.

A linear layer's weight is (N, K): N output rows of K inputs. Before it is packed into a
kernel's private layout it lives here in one of four forms:

    Int4Rows   w[n, k] = (q[n, k] - 8) * scales[n, k // 32] + zeros[n, k // 32]   q in 0..15
    Int8Rows   w[n, k] = q[n, k] * scales[n]                                      q in -127..127
    DenseRows  w[n, k] = weight[n, k]
    BlockRows  w = decode(blocks): a file's own blocks (GGUF's Q4_K, Q6_K), whole per row

(the int4 form is the convention of torch's int4 kernels: `zero` is the value of code 8).
Every form can `permute_rows` (llama's q/k un-permutation, or a tensor-parallel rank's rows),
`concat_rows` (fused q/k/v or gate/up) and take `columns` (a rank's share of the inputs, in
whole groups or blocks) without touching a value, so a fused, un-permuted or split weight is
exactly as precise as its parts. Scales are kept in float32 here; packing rounds them to the
kernel's dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

GROUP = 32  # weights per int4 group: a GGUF 32-weight block, or a K-quant sub-block
BLOCK = 256  # weights per K-quant block (`BlockRows`)

# (n, row_bytes) uint8 → (n, K) float32, K from the row bytes (so a slice of whole blocks
# decodes with the same decoder)
RowDecoder = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True, slots=True)
class Int4Rows:
    q: torch.Tensor  # (N, K) uint8, 0..15
    scales: torch.Tensor  # (N, K // GROUP) float32
    zeros: torch.Tensor  # (N, K // GROUP) float32, the value of code 8

    @property
    def shape(self) -> tuple[int, int]:
        return self.q.shape[0], self.q.shape[1]

    def permute_rows(self, index: torch.Tensor) -> Int4Rows:
        """Row n of the result is row index[n] of self."""
        return Int4Rows(self.q[index], self.scales[index], self.zeros[index])

    def rounded(self, dtype: torch.dtype = torch.bfloat16) -> Int4Rows:
        """The same codes with scales and zeros rounded to `dtype` (what a kernel sees)."""
        return Int4Rows(self.q, self.scales.to(dtype).float(), self.zeros.to(dtype).float())

    def dequantize(self) -> torch.Tensor:
        """→ (N, K) float32."""
        n, k = self.shape
        q = self.q.view(n, k // GROUP, GROUP).float() - 8.0
        return (q * self.scales.unsqueeze(-1) + self.zeros.unsqueeze(-1)).view(n, k)


@dataclass(frozen=True, slots=True)
class Int8Rows:
    q: torch.Tensor  # (N, K) int8, -127..127
    scales: torch.Tensor  # (N,) float32

    @property
    def shape(self) -> tuple[int, int]:
        return self.q.shape[0], self.q.shape[1]

    def permute_rows(self, index: torch.Tensor) -> Int8Rows:
        return Int8Rows(self.q[index], self.scales[index])

    def rounded(self, dtype: torch.dtype = torch.bfloat16) -> Int8Rows:
        return Int8Rows(self.q, self.scales.to(dtype).float())

    def dequantize(self) -> torch.Tensor:
        return self.q.float() * self.scales.unsqueeze(-1)


@dataclass(frozen=True, slots=True)
class DenseRows:
    weight: torch.Tensor  # (N, K) float32, bfloat16 or float16

    @property
    def shape(self) -> tuple[int, int]:
        return self.weight.shape[0], self.weight.shape[1]

    def permute_rows(self, index: torch.Tensor) -> DenseRows:
        return DenseRows(self.weight[index])

    def rounded(self, dtype: torch.dtype = torch.bfloat16) -> DenseRows:
        return DenseRows(self.weight.to(dtype).float())

    def dequantize(self) -> torch.Tensor:
        return self.weight.float()


@dataclass(frozen=True, slots=True)
class BlockRows:
    """A weight kept in the blocks its file stores, for a kernel that reads them as they are
    (`kquant_vnni`). `kind` names the block layout; `decode` is the file format's own
    dequantization (the loader's), exact, which the reference and conversions use."""

    blocks: torch.Tensor  # (N, row_bytes) uint8, each row a whole number of blocks
    kind: str  # "Q4_K" or "Q6_K"
    k: int
    decode: RowDecoder

    @property
    def shape(self) -> tuple[int, int]:
        return self.blocks.shape[0], self.k

    def permute_rows(self, index: torch.Tensor) -> BlockRows:
        return BlockRows(self.blocks[index], self.kind, self.k, self.decode)

    def rounded(self, dtype: torch.dtype = torch.bfloat16) -> BlockRows:
        return self  # the kernel reads the file's own scales: nothing is rounded

    def dequantize(self) -> torch.Tensor:
        return self.decode(self.blocks)


QuantRows = Int4Rows | Int8Rows | DenseRows | BlockRows


def form(rows: QuantRows) -> tuple[type, str]:
    """What rows must share to be concatenated: their class, and for blocks their layout."""
    return type(rows), rows.kind if isinstance(rows, BlockRows) else ""


def columns(rows: QuantRows, start: int, stop: int) -> QuantRows:
    """Inputs [start, stop) of every row: (N, K) → (N, stop - start). Int4 rows split only
    between groups and blocks only between blocks (their scales cover whole ones)."""
    n, k = rows.shape
    if not 0 <= start < stop <= k:
        raise ValueError(f"columns [{start}, {stop}) of a weight of {k} inputs")
    if isinstance(rows, Int8Rows):  # one scale per row: any columns
        return Int8Rows(rows.q[:, start:stop].contiguous(), rows.scales)
    if isinstance(rows, DenseRows):
        return DenseRows(rows.weight[:, start:stop].contiguous())
    unit = GROUP if isinstance(rows, Int4Rows) else BLOCK
    if start % unit or stop % unit:
        raise ValueError(f"columns [{start}, {stop}) split a {unit}-weight "
                         f"{'group' if unit == GROUP else 'block'}")
    if isinstance(rows, Int4Rows):
        g = slice(start // GROUP, stop // GROUP)
        return Int4Rows(rows.q[:, start:stop].contiguous(), rows.scales[:, g].contiguous(),
                        rows.zeros[:, g].contiguous())
    per_block = rows.blocks.shape[1] // (k // BLOCK)  # bytes
    cut = rows.blocks[:, start // BLOCK * per_block:stop // BLOCK * per_block].contiguous()
    return BlockRows(cut, rows.kind, stop - start, rows.decode)


def concat_rows(parts: Sequence[QuantRows]) -> QuantRows:
    """Stack weights of one form along N (q, k, v → qkv): (N_i, K) each → (sum N_i, K).
    Parts of different forms are refused; bring them to one form first (`convert_rows`)."""
    kinds = {form(p) for p in parts}
    if len(kinds) != 1:
        names = sorted(f"{t.__name__} {kind}".strip() for t, kind in kinds)
        raise TypeError(f"cannot concatenate {names}: convert the parts to one form first")
    if len({p.shape[1] for p in parts}) != 1:
        raise ValueError(f"parts have different input widths: {[p.shape for p in parts]}")
    first = parts[0]
    if isinstance(first, Int4Rows):
        int4 = [p for p in parts if isinstance(p, Int4Rows)]
        return Int4Rows(torch.cat([p.q for p in int4]), torch.cat([p.scales for p in int4]),
                        torch.cat([p.zeros for p in int4]))
    if isinstance(first, Int8Rows):
        int8 = [p for p in parts if isinstance(p, Int8Rows)]
        return Int8Rows(torch.cat([p.q for p in int8]), torch.cat([p.scales for p in int8]))
    if isinstance(first, BlockRows):
        blocks = [p for p in parts if isinstance(p, BlockRows)]
        return BlockRows(torch.cat([p.blocks for p in blocks]), first.kind, first.k,
                         first.decode)
    dense = [p for p in parts if isinstance(p, DenseRows)]
    dtypes = {p.weight.dtype for p in dense}
    dtype = dtypes.pop() if len(dtypes) == 1 else torch.float32
    return DenseRows(torch.cat([p.weight.to(dtype) for p in dense]))

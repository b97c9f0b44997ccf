"""Float weights → the quantized row forms of `rows.py` (weights the file did not store 4-bit).

    int4  asymmetric, one scale and zero per 32 weights: the group's [min, max] spread over the
          16 codes (scale = (max - min) / 15, zero = min + 8 * scale, the value of code 8)
    int8  symmetric, one scale per output row: scale = max|w| / 127, codes in -127..127
    bf16  the weight itself, rounded to bfloat16

Scales and zeros are rounded to bfloat16 (the kernels' dtype) *before* the codes are chosen,
so each code is the nearest one under the values the kernel will really use.
"""

from __future__ import annotations

from typing import Literal

import torch

from .rows import GROUP, BlockRows, DenseRows, Int4Rows, Int8Rows, QuantRows

Target = Literal["int4", "int8", "bf16"]
TARGETS: tuple[Target, ...] = ("int4", "int8", "bf16")
_KERNEL_DTYPE = torch.bfloat16


def _kernel_rounded(t: torch.Tensor) -> torch.Tensor:
    return t.to(_KERNEL_DTYPE).float()


def to_int4(weight: torch.Tensor) -> Int4Rows:
    """(N, K) float, K a multiple of 32 → Int4Rows."""
    n, k = weight.shape
    if k % GROUP:
        raise ValueError(f"int4 groups need K to be a multiple of {GROUP}, got {k}")
    w = weight.float().view(n, k // GROUP, GROUP)  # (N, G, 32)
    low, high = w.amin(-1), w.amax(-1)  # (N, G)
    scales = _kernel_rounded((high - low) / 15)
    zeros = _kernel_rounded(low + 8 * scales)
    safe = torch.where(scales == 0, torch.ones_like(scales), scales)  # a constant group
    q = torch.round((w - zeros.unsqueeze(-1)) / safe.unsqueeze(-1)) + 8
    return Int4Rows(q.clamp_(0, 15).to(torch.uint8).view(n, k), scales, zeros)


def to_int8(weight: torch.Tensor) -> Int8Rows:
    """(N, K) float → Int8Rows."""
    w = weight.float()
    scales = _kernel_rounded(w.abs().amax(-1) / 127)  # (N,)
    safe = torch.where(scales == 0, torch.ones_like(scales), scales)
    q = torch.round(w / safe.unsqueeze(-1)).clamp_(-127, 127)
    return Int8Rows(q.to(torch.int8), scales)


def to_bf16(weight: torch.Tensor) -> DenseRows:
    return DenseRows(weight.to(torch.bfloat16))


def rows_from_dense(weight: torch.Tensor, target: Target) -> QuantRows:
    """(N, K) float → the rows of `target`. int4 needs K % 32 == 0; other widths fall back
    to int8 (the next-smallest form)."""
    if target == "int4" and weight.shape[1] % GROUP == 0:
        return to_int4(weight)
    if target in ("int4", "int8"):
        return to_int8(weight)
    if target == "bf16":
        return to_bf16(weight)
    raise ValueError(f"unknown target {target!r} (one of {', '.join(TARGETS)})")


def convert_rows(rows: QuantRows, target: Target) -> QuantRows:
    """Rows already in the form of `target` are returned as they are (a lossless Q4 repack
    stays lossless); others (a file's blocks too) are dequantized and quantized again."""
    kind = {Int4Rows: "int4", Int8Rows: "int8", DenseRows: "bf16", BlockRows: "blocks"}[type(rows)]
    if kind == target:
        return rows
    return rows_from_dense(rows.dequantize(), target)

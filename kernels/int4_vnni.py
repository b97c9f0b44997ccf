"""A 4-bit linear layer for x86 CPUs with AVX-512 VNNI: the codes multiplied as integers.

torch's int4 CPU kernel (`int4_linear.Int4Linear`) turns every code into a float before it
multiplies, and that conversion, not memory, bounds it: ~11 GB/s of weights per thread.
Here (`csrc/int4_vnni.cpp`, built by `native.py`) each row of activations is quantized per
group of 32 in two int8 steps, x ≈ d (a + b / 256) with d = max|x| / 127, which keeps every x
within d / 256 of itself (tighter than bf16's 2^-9 relative for all but a group's smallest
values), and the codes are multiplied by both with VPDPBUSD, 64 products per instruction;
the group's float scale is applied to the exact integer sum, and the zero term uses the
group's sum of the quantized activations. Weights are read as stored: 4 bits per code plus a
bf16 scale and zero per 32 (5 bits per weight, K unpadded).

Every row of x is summed in the same order whatever their number (M = 1 in a decode step, a
batch, a prompt chunk), so a sequence's output is bit-identical alone, in a batch, or
prefilled in any chunks. `Int4LinearReference` (the float32 product of the same weight) is
its twin; they differ by the activations' rounding and fp32 summation order
(tests/kernels/test_int4_vnni.py).
"""

from __future__ import annotations

import torch
from torch import nn

from . import native
from .rows import GROUP, Int4Rows

CHUNK = 128  # weights per record: 4 groups, one 512-bit load of codes
GROUP_BYTES = 20  # a group as stored: 16 bytes of codes, a bf16 scale, a bf16 zero


def _records(q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    """g groups per row → (N, 20 g): the groups' codes (byte j of a group: code j in the low
    nibble, code j + 16 in the high one), then their bf16 scales, then their bf16 zeros."""
    n, g = scales.shape
    halves = q.reshape(n, g, 2, GROUP // 2)
    codes = (halves[:, :, 0] | (halves[:, :, 1] << 4)).reshape(n, 16 * g)
    sz = torch.cat([scales.to(torch.bfloat16), zeros.to(torch.bfloat16)], -1).view(torch.uint8)
    return torch.cat([codes, sz], -1)


def pack_blocks(rows: Int4Rows) -> torch.Tensor:
    """Rows → the kernel's (N, 20 K / 32) uint8: each row a record per chunk of 4 groups,
    and a last one for the 1-3 groups left when K is not a multiple of CHUNK (no padding)."""
    n, k = rows.shape
    full = k // CHUNK * CHUNK
    parts = [_records(rows.q[:, :full].reshape(-1, CHUNK), rows.scales[:, :full // GROUP]
                      .reshape(-1, 4), rows.zeros[:, :full // GROUP].reshape(-1, 4))
             .reshape(n, -1)]
    if full < k:
        parts.append(_records(rows.q[:, full:], rows.scales[:, full // GROUP:],
                              rows.zeros[:, full // GROUP:]))
    return torch.cat(parts, -1).contiguous()


def _unrecord(records: torch.Tensor, g: int) -> Int4Rows:
    n = records.shape[0]
    halves = records[:, :16 * g].reshape(n, g, GROUP // 2)
    q = torch.cat([halves & 0x0F, halves >> 4], dim=-1).reshape(n, g * GROUP)
    sz = records[:, 16 * g:].contiguous().view(torch.bfloat16).float()  # (n, 2 g)
    return Int4Rows(q, sz[:, :g], sz[:, g:])


def unpack_blocks(blocks: torch.Tensor) -> Int4Rows:
    """The inverse of `pack_blocks` (scales and zeros as the kernel holds them, bf16)."""
    n, width = blocks.shape
    groups = width // GROUP_BYTES
    full = groups // 4
    body = _unrecord(blocks[:, :full * 4 * GROUP_BYTES].reshape(n * full, 4 * GROUP_BYTES), 4)
    parts = [Int4Rows(body.q.reshape(n, -1), body.scales.reshape(n, -1),
                      body.zeros.reshape(n, -1))]
    if groups % 4:
        parts.append(_unrecord(blocks[:, full * 4 * GROUP_BYTES:], groups % 4))
    return Int4Rows(torch.cat([p.q for p in parts], -1), torch.cat([p.scales for p in parts], -1),
                    torch.cat([p.zeros for p in parts], -1))


class Int4VnniLinear(nn.Module):
    """y = x @ W.T (+ bias) with W kept as int4 codes (x86 CPU with AVX-512 VNNI)."""

    extra_sources = (*native.SOURCES, *native.HEADERS)  # what a compiled step also depends on

    def __init__(self, rows: Int4Rows, bias: torch.Tensor | None = None,
                 device: torch.device | str = "cpu") -> None:
        super().__init__()
        if torch.device(device).type != "cpu" or not native.load():
            raise ValueError("Int4VnniLinear needs an x86 CPU with AVX-512 VNNI")
        self.out_features, self.in_features = rows.shape
        if self.in_features % GROUP:
            raise ValueError(f"K = {self.in_features} is not a multiple of {GROUP}")
        self.register_buffer("blocks", pack_blocks(rows))  # (N, 20 K / 32)
        self.register_buffer("bias", None if bias is None else bias.float())

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in self.buffers())

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, " \
               f"group={GROUP}, vnni"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x.reshape(-1, self.in_features)  # (M, K)
        y = torch.ops.ollamapy_native.int4_mm(a, self.blocks)  # (M, N) fp32
        y = y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)
        return y if self.bias is None else y + self.bias.to(x.dtype)

    def dequantize(self) -> torch.Tensor:
        """→ (N, K) float32: (q - 8) * scale + zero, the weight the kernel multiplies by."""
        return unpack_blocks(self.blocks).dequantize()

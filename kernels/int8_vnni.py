"""An 8-bit linear layer (one scale per row) for x86 CPUs with AVX-512 VNNI.

The int8 twin of `int4_vnni.Int4VnniLinear`: torch's `_weight_int8pack_mm` converts every code
to float before it multiplies; here (`csrc/int8_vnni.cpp`) each row of activations is
quantized per group of 32 in two int8 steps (as in `int4_vnni`) and multiplied by the codes
with VPDPBUSD, each group's exact integer sum scaled by its activation step in fp32, the row's
sum by the row's scale. The codes are kept as the loader made them (a tied head's rows are
not copied when K is a multiple of 64). Every row of x is summed in the same order whatever
their number. `Int8LinearReference` is its twin.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import native
from .rows import Int8Rows

CHUNK = 64  # K is padded to the kernel's 2-group step with zero codes


class Int8VnniLinear(nn.Module):
    """y = x @ W.T (+ bias) with W kept as int8 codes and per-row scales (x86, AVX-512 VNNI)."""

    extra_sources = (*native.SOURCES, *native.HEADERS)  # what a compiled step also depends on

    def __init__(self, rows: Int8Rows, bias: torch.Tensor | None = None,
                 device: torch.device | str = "cpu") -> None:
        super().__init__()
        if torch.device(device).type != "cpu" or not native.load():
            raise ValueError("Int8VnniLinear needs an x86 CPU with AVX-512 VNNI")
        self.out_features, self.in_features = rows.shape
        pad = -self.in_features % CHUNK
        codes = F.pad(rows.q, (0, pad)) if pad else rows.q
        self.register_buffer("codes", codes.contiguous())  # (N, K_padded) int8
        # bf16-rounded, as every int8 layer holds them; fp32 for the kernel (exact)
        self.register_buffer("scales", rows.scales.to(torch.bfloat16).float())
        self.register_buffer("bias", None if bias is None else bias.float())

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in self.buffers())

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, per-row, vnni"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x.reshape(-1, self.in_features)  # (M, K)
        pad = self.codes.shape[1] - self.in_features
        if pad:
            a = F.pad(a, (0, pad))
        y = torch.ops.ollamapy_native.int8_mm(a, self.codes, self.scales)  # (M, N) fp32
        y = y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)
        return y if self.bias is None else y + self.bias.to(x.dtype)

    def dequantize(self) -> torch.Tensor:
        """→ (N, K) float32: q * scale, the weight the kernel multiplies by."""
        return self.codes[:, :self.in_features].float() * self.scales.unsqueeze(-1)

"""A dense bfloat16 linear layer that casts its input: the "keep it 16-bit" target, and the
fallback for quantized rows on devices without an int kernel (int8 anywhere but the CPU,
int4 anywhere but CPU/CUDA).

Same contract as the quantized layers: any input dtype in, the same dtype out, the product
taken in bf16 (on the CPU, `F.linear` in bf16 beats fp32 for these shapes: kernels/README.md).
`DenseLinearReference` takes the same arguments and computes it in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .reference_linear import LinearReference
from .rows import QuantRows


class DenseLinear(nn.Module):
    """y = x @ W.T (+ bias) with W dequantized once into bfloat16."""

    def __init__(self, rows: QuantRows, bias: torch.Tensor | None = None,
                 device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.out_features, self.in_features = rows.shape
        self.register_buffer("weight", rows.dequantize().to(device=device, dtype=torch.bfloat16))
        self.register_buffer("bias", None if bias is None else bias.to(device, torch.bfloat16))

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in self.buffers())

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bf16"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(torch.bfloat16), self.weight, self.bias).to(x.dtype)

    def dequantize(self) -> torch.Tensor:
        return self.weight.float()


class DenseLinearReference(LinearReference):
    """The same layer in float32 (weight and bias rounded to bf16 as the fast one holds
    them)."""

    bias_dtype = torch.bfloat16

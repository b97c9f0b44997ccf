"""The plain-torch twin shared by every fast linear layer: the weight the fast layer really
multiplies by (its rows with scales, or weights, rounded to bf16 as the kernel sees them,
dequantized to float32) and `F.linear` in float32. Same arguments as the fast layer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .rows import QuantRows


class LinearReference(nn.Module):
    bias_dtype = torch.float32  # the dtype the fast layer keeps its bias in

    def __init__(self, rows: QuantRows, bias: torch.Tensor | None = None,
                 device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.register_buffer("weight", rows.rounded(torch.bfloat16).dequantize().to(device))
        self.register_buffer("bias", None if bias is None
                             else bias.to(self.bias_dtype).float().to(device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.float(), self.weight, self.bias).to(x.dtype)

"""The experts of an MoE projection kept quantized: int8 codes with one scale per row.

`engine/moe.py` asks a projection for the float weights of the experts a token was routed to
(`weights(index)`); this twin of its `Experts` keeps every expert as int8 rows (a stored Q4/Q5/
Q6/Q8 block requantized per row, see requantize.py) and dequantizes only the experts asked
for, so memory holds about a byte per weight and a decode step reads only the chosen experts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .requantize import convert_rows
from .rows import Int8Rows, QuantRows


class Int8Experts(nn.Module):
    def __init__(self, experts: Sequence[QuantRows], device: torch.device | str = "cpu",
                 bias: torch.Tensor | None = None) -> None:
        """bias: (n_experts, out_features), kept as given (gpt-oss's experts have them)."""
        super().__init__()
        rows = [r if isinstance(r, Int8Rows) else convert_rows(r, "int8") for r in experts]
        assert all(isinstance(r, Int8Rows) for r in rows)
        self.register_buffer("q", torch.stack([r.q for r in rows]).to(device))  # (E, N, K) int8
        self.register_buffer("scales", torch.stack([r.scales for r in rows]).to(device))  # (E, N)
        self.bias = bias.to(device) if bias is not None else None

    def weights(self, index: torch.Tensor) -> torch.Tensor:
        """index (...) expert ids → (..., N, K) float32 weights of those experts."""
        return self.q[index].float() * self.scales[index].unsqueeze(-1)

    def extra_repr(self) -> str:
        e, n, k = self.q.shape
        return f"experts={e}, out_features={n}, in_features={k}, int8"

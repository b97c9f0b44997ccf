"""A linear layer whose weight stays 8-bit with one scale per output row (CPU).

`torch.ops.aten._weight_int8pack_mm(A (M, K), W (N, K) int8, scales (N,))` computes
A @ (W * scales[:, None]).T; the codes need no packing. The scales must have the activations'
dtype, and only bfloat16 activations take the vectorised x86 path (fp32 runs a scalar loop
several times slower), so the input is cast to bf16 here and the output cast back; the output
is rounded to bf16. There is no per-group variant, so GGUF's per-32 block scales (Q8_0, …)
cannot be kept: the rows are re-quantized per row (`requantize.to_int8`).

On other devices `pack` uses a dense bfloat16 layer instead (`dense_linear.DenseLinear`).
`Int8LinearReference` takes the same arguments and computes the product in plain torch.
"""

from __future__ import annotations

import torch
from torch import nn

from .reference_linear import LinearReference
from .rows import Int8Rows


class Int8Linear(nn.Module):
    """y = x @ W.T (+ bias) with W kept as int8 codes and bf16 per-row scales (CPU)."""

    def __init__(self, rows: Int8Rows, bias: torch.Tensor | None = None,
                 device: torch.device | str = "cpu") -> None:
        super().__init__()
        if torch.device(device).type != "cpu":
            raise ValueError("the int8 kernel runs on the CPU: use DenseLinear elsewhere")
        self.out_features, self.in_features = rows.shape
        self.register_buffer("q", rows.q.contiguous())
        self.register_buffer("scales", rows.scales.to(torch.bfloat16))
        self.register_buffer("bias", None if bias is None else bias.float())

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in self.buffers())

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, per-row"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x.reshape(-1, self.in_features).to(torch.bfloat16).contiguous()  # (M, K)
        y = torch.ops.aten._weight_int8pack_mm(a, self.q, self.scales)  # (M, N) bf16
        y = y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)
        return y if self.bias is None else y + self.bias.to(x.dtype)

    def dequantize(self) -> torch.Tensor:
        return self.q.float() * self.scales.float().unsqueeze(-1)


class Int8LinearReference(LinearReference):
    """The same layer in plain torch: codes times bf16-rounded scales, `F.linear` in fp32."""

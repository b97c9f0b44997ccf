"""A linear layer whose weight stays 8-bit with one scale per output row (CPU).

`torch.ops.aten._weight_int8pack_mm(A (M, K), W (N, K) int8, scales (N,))` computes
A @ (W * scales[:, None]).T; the codes need no packing. The scales must have the activations'
dtype, and only bfloat16 activations take the vectorised x86 path (fp32 runs a scalar loop
several times slower), so the input is cast to bf16 here and the output cast back; the output
is rounded to bf16. There is no per-group variant, so GGUF's per-32 block scales (Q8_0, …)
cannot be kept: the rows are re-quantized per row (`requantize.to_int8`).

Inside a compiled step, one row (M = 1, a decode step of one sequence) through a layer of
N >= ROW_MIN_N rows of K <= ROW_MAX_K takes another route: the product written as a multiply
and a sum over K, which inductor turns into one loop over the codes as stored, parallel over
N: 1.2-1.9x the aten kernel's rate on the shapes measured, heads most
(`benchmarks/bench_linear.py --rows`; the figures are in kernels/README.md). Its input is
first written out whole (`materialized`, an opaque op): without it inductor inlines the
producer (the norm before the head) into the loop and recomputes it for every row, which made
the route slower than the aten kernel inside a real decode step. It sums the products in
fp32 like the aten kernel; inductor may drop the bf16 round trips of its input and output, so
it can be closer to the exact product than the aten kernel, never further than that kernel's
bound (tests/kernels/test_int8_and_dense.py). Not for longer rows (at K = 8192 it is the
slower one), nor for M > 1 (at M = 4 it reads the weight once per row of activations), nor
in eager code, where the multiply would materialise a float copy of the weight.

On other devices `pack` uses a dense bfloat16 layer instead (`dense_linear.DenseLinear`).
`Int8LinearReference` takes the same arguments and computes the product in plain torch.
"""

from __future__ import annotations

import torch
from torch import nn

from .reference_linear import LinearReference
from .rows import Int8Rows

ROW_MAX_K = 4096  # the longest rows the compiled one-row route is measured faster for
ROW_MIN_N = 8192  # below this the route's gain (~20 µs) is not worth its extra op


@torch.library.custom_op("ollamapy_kernels::materialized", mutates_args=())
def materialized(x: torch.Tensor) -> torch.Tensor:
    """A copy of x that inductor cannot see through: what feeds it is computed once, into a
    buffer, instead of being inlined into each of its consumer's iterations."""
    return x.clone()


@materialized.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


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
        if (a.shape[0] == 1 and self.in_features <= ROW_MAX_K
                and self.out_features >= ROW_MIN_N and torch.compiler.is_compiling()):
            # (N, K) * (1, K) summed over K: one fused loop over the codes (module docstring)
            y = (self.q.to(torch.float32) * materialized(a.float())).sum(-1) * self.scales.float()
            y = y.to(torch.bfloat16).unsqueeze(0)  # (1, N)
        else:
            y = torch.ops.aten._weight_int8pack_mm(a, self.q, self.scales)  # (M, N) bf16
        y = y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)
        return y if self.bias is None else y + self.bias.to(x.dtype)

    def dequantize(self) -> torch.Tensor:
        return self.q.float() * self.scales.float().unsqueeze(-1)


class Int8LinearReference(LinearReference):
    """The same layer in plain torch: codes times bf16-rounded scales, `F.linear` in fp32."""

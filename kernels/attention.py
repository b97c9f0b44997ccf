"""Attention over the KV cache one query at a time, for x86 CPUs with AVX-512: every query of
a decode step or a prompt chunk on the fast path.

torch's fused CPU attention is built for blocks of queries: for the one query of a decode step
it spends most of its time outside the reads of the cache (kernels/README.md), and its sums
over the keys depend on how the queries were blocked, so a token's attention changed with the
chunk its prompt was cut into. Here (`csrc/attention.cpp`) each query is handled alone: each
kv head's keys and values are read once for all the query heads they serve, in spans of 64
positions split among torch's threads (flash-decoding), and the spans are merged in order.
The spans start at position 0 whatever the cache's length, and a hidden key adds exactly
zero, so a query's output depends on the keys it sees alone: the same in a decode step of any
batch, in any slot, and in a prompt chunk of any length (batch invariance). Spans the mask
hides (the future in a chunk, outside a sliding window) are not read. The cache may be
float32, bfloat16 or float16; soft-capped scores (gemma2) and sink logits (gpt-oss) are
handled as `ollamapy.engine.ops.attend` does.
"""

from __future__ import annotations

import torch
from torch import nn

from . import native


class SpanAttention(nn.Module):
    """softmax(cap(q k^T * scale) | mask, sinks) v for q (B, H, T, D); k, v (B, H_kv, S, D);
    mask bool (B or 1, 1, T, S) → (B, H, T, D) in q's dtype. D must be a multiple of 16
    (`fits`)."""

    extra_sources = (*native.SOURCES, *native.HEADERS)  # what a compiled step also depends on

    def __init__(self) -> None:
        super().__init__()
        if not native.load():
            raise ValueError("SpanAttention needs an x86 CPU with AVX-512 VNNI")

    @staticmethod
    def fits(n_heads: int, n_kv_heads: int, head_dim: int) -> bool:
        """Whether the kernel takes heads of this shape."""
        return head_dim % 16 == 0 and n_heads % n_kv_heads == 0 and n_heads // n_kv_heads <= 64

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                scale: float, cap: float = 0.0, sinks: torch.Tensor | None = None
                ) -> torch.Tensor:
        out = torch.ops.ollamapy_native.span_attention(q, k, v, mask, scale, cap, sinks)
        return out.to(q.dtype)

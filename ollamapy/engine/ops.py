"""Reference building blocks shared by the decoder: RMSNorm, the linear layer, activations,
soft-capping and attention.

Each op here is the pure-PyTorch reference; `kernels/` may provide accelerated twins with the
same signature (for example a linear layer whose weight stays quantized in memory), swapped in
from outside the model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ollamapy.engine.config import Activation


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in float32. The weight is stored ready to multiply
    (gemma's "1 + w" convention is folded in by the loader)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * self.weight.float()).to(x.dtype)


class Linear(nn.Module):
    """y = x @ W.T (+ b). The weight is a dense tensor here; a quantized twin keeps the same
    `forward(x)` and is chosen per weight by the loader, so the model code never changes."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


# gpt-oss's clamped SwiGLU (transformers' GptOssExperts, llama.cpp's swiglu_oai)
OAI_ALPHA, OAI_LIMIT = 1.702, 7.0


def glu(name: Activation, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """The gated MLP's hidden state from its gate and up projections."""
    if name == "silu":
        return F.silu(gate) * up
    if name == "gelu_tanh":
        return F.gelu(gate, approximate="tanh") * up
    gate, up = gate.clamp(max=OAI_LIMIT), up.clamp(-OAI_LIMIT, OAI_LIMIT)
    return (up + 1) * (gate * torch.sigmoid(gate * OAI_ALPHA))


class Sinks(nn.Module):
    """Attention sinks: one learned logit per head that every query also attends to, taking
    a share of the softmax without contributing a value (gpt-oss)."""

    def __init__(self, n_heads: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_heads), requires_grad=False)


def softcap(x: torch.Tensor, cap: float) -> torch.Tensor:
    """Squash x smoothly into (-cap, cap) (gemma2's attention scores and logits)."""
    return torch.tanh(x / cap) * cap


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float,
           cap: float = 0.0, sinks: torch.Tensor | None = None) -> torch.Tensor:
    """Grouped-query attention: q (B, H, T, hd), k and v (B, H_kv, S, hd), mask bool (T, S) or
    (B, 1, T, S), True where a query may see a key → (B, H, T, hd). Each kv head serves
    H // H_kv query heads. With a soft cap or sinks (H,) the scores are written out (torch's
    fused attention has neither); without, torch's fused attention computes the same thing."""
    if not cap and sinks is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale,
                                              enable_gqa=k.shape[1] != q.shape[1])
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    scores = (q @ k.transpose(-2, -1)).float() * scale  # (B, H, T, S)
    if cap:
        scores = softcap(scores, cap)
    scores = scores.masked_fill(~mask, float("-inf"))
    if sinks is None:
        return scores.softmax(dim=-1).to(v.dtype) @ v
    # each head's sink is one more column of the softmax, dropped after it
    sink = sinks.float().view(1, -1, 1, 1).expand(*scores.shape[:-1], 1)  # (B, H, T, 1)
    probs = torch.cat((scores, sink), dim=-1).softmax(dim=-1)[..., :-1]
    return probs.to(v.dtype) @ v

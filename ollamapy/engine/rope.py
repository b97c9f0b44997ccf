"""Rotary position embeddings (RoPE), in the "rotate half" layout.

Each head's first `rope_dim` features are split into two halves (x1, x2) that are rotated as
pairs (x1[i], x2[i]) by the angle position * base^(-2i / rope_dim). Checkpoints that store q/k
in the interleaved-pairs layout (llama GGUFs) are permuted into this layout once, at load.
"""

from __future__ import annotations

import torch


def rope_frequencies(rope_dim: int, base: float, device: torch.device | str | None = None
                     ) -> torch.Tensor:
    # (rope_dim // 2,) inverse frequencies, computed in float64 then rounded once
    exponents = torch.arange(0, rope_dim, 2, dtype=torch.float64, device=device) / rope_dim
    return (1.0 / (base**exponents)).to(torch.float32)


def rope_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor, scale: float = 1.0
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables for `positions` (T,) or per row (B, T) → two float32 tensors of
    shape (T, rope_dim) or (B, T, rope_dim)."""
    # (..., rope_dim // 2)
    angles = (positions.to(torch.float32) / scale).unsqueeze(-1) * inv_freq
    angles = torch.cat((angles, angles), dim=-1)  # (..., rope_dim): both halves share an angle
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, n_heads, T, head_dim) by the (T, rope_dim) or per-row (B, T, rope_dim)
    tables; the rest of each head passes as is."""
    if cos.dim() == 3:  # (B, T, rope_dim) → (B, 1, T, rope_dim): one table per row
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    rope_dim = cos.shape[-1]
    rot, rest = x[..., :rope_dim], x[..., rope_dim:]
    x1, x2 = rot.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)  # rotate_half
    out = rot * cos.to(x.dtype) + rotated * sin.to(x.dtype)
    return torch.cat((out, rest), dim=-1) if rest.shape[-1] else out

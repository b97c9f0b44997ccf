"""Rotary position embeddings (RoPE), in the "rotate half" layout.

Each head's first `rope_dim` features are split into two halves (x1, x2) that are rotated as
pairs (x1[i], x2[i]) by the angle position * base^(-2i / rope_dim) / factor[i]. Checkpoints that
store q/k in the interleaved-pairs layout (llama GGUFs) are permuted into this layout once, at
load. The per-frequency factors are 1 unless the checkpoint scales its RoPE (llama 3.x).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def rope_frequencies(rope_dim: int, base: float, device: torch.device | str | None = None,
                     factors: Sequence[float] = ()) -> torch.Tensor:
    # (rope_dim // 2,) inverse frequencies, computed in float64 then rounded once
    exponents = torch.arange(0, rope_dim, 2, dtype=torch.float64, device=device) / rope_dim
    inv_freq = 1.0 / (base**exponents)
    if factors:
        inv_freq = inv_freq / torch.tensor(factors, dtype=torch.float64, device=device)
    return inv_freq.to(torch.float32)


def llama3_factors(rope_dim: int, base: float, factor: float, low_freq_factor: float,
                   high_freq_factor: float, original_context: int) -> tuple[float, ...]:
    """Llama 3.1's RoPE scaling as per-frequency divisors (the `rope_freqs` tensor llama.cpp's
    converter writes): wavelengths shorter than original_context / high_freq_factor keep their
    frequency, those longer than original_context / low_freq_factor are divided by `factor`,
    and the band between blends the two."""
    factors = []
    for i in range(0, rope_dim, 2):
        wavelength = 2 * math.pi * base ** (i / rope_dim)
        if wavelength < original_context / high_freq_factor:
            factors.append(1.0)
        elif wavelength > original_context / low_freq_factor:
            factors.append(factor)
        else:  # (original_context / wavelength) runs from low_freq_factor to high_freq_factor
            smooth = (original_context / wavelength - low_freq_factor) / (
                high_freq_factor - low_freq_factor)
            factors.append(1.0 / ((1.0 - smooth) / factor + smooth))
    return tuple(factors)


def yarn_factors(rope_dim: int, base: float, factor: float, original_context: int,
                 beta_fast: float = 32.0, beta_slow: float = 1.0, truncate: bool = True
                 ) -> tuple[float, ...]:
    """YaRN (gpt-oss) as per-frequency divisors: a frequency that turns more than beta_fast
    times over the original context keeps its value, one that turns fewer than beta_slow times
    is divided by `factor`, and a linear ramp blends the band between (its ends rounded
    outwards when `truncate`, as llama.cpp always does)."""
    def dim_of(turns: float) -> float:  # the pair index whose frequency turns `turns` times
        return rope_dim * math.log(original_context / (turns * 2 * math.pi)) / (2 * math.log(base))

    low, high = dim_of(beta_fast), dim_of(beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, rope_dim - 1)
    factors = []
    for i in range(rope_dim // 2):
        ramp = min(max((i - low) / max(high - low, 1e-3), 0.0), 1.0)  # 0: keep, 1: divide
        keep = 1.0 - ramp
        factors.append(1.0 / (keep + (1.0 - keep) / factor))
    return tuple(factors)


def yarn_attn_factor(factor: float) -> float:
    """YaRN's magnitude correction of cos and sin: 0.1 ln(factor) + 1."""
    return 0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0


def rope_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor, scale: float = 1.0,
                 attn_factor: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables for `positions` (T,) or per row (B, T) → two float32 tensors of
    shape (T, rope_dim) or (B, T, rope_dim), both multiplied by attn_factor (LongRoPE's
    magnitude correction; 1 elsewhere)."""
    # (..., rope_dim // 2)
    angles = (positions.to(torch.float32) / scale).unsqueeze(-1) * inv_freq
    angles = torch.cat((angles, angles), dim=-1)  # (..., rope_dim): both halves share an angle
    if attn_factor == 1.0:
        return angles.cos(), angles.sin()
    return angles.cos() * attn_factor, angles.sin() * attn_factor


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

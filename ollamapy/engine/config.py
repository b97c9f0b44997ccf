"""The decoder's hyper-parameters: one frozen dataclass, filled from checkpoint metadata.

Architecture differences (gemma3's sliding window and q/k norm, qwen's biases) are fields here,
read from a GGUF's metadata or a Hugging Face config.json by `ollamapy.loading`, never forks of
the model code and never looked up from a model's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Activation = Literal["silu", "gelu_tanh"]


@dataclass(frozen=True, slots=True)
class ModelConfig:
    arch: str  # the checkpoint's own word: "llama", "qwen2", "qwen3", "gemma3"
    vocab_size: int
    dim: int  # model width
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_dim: int
    norm_eps: float
    context_length: int  # the trained context; num_ctx is clamped to it
    rope_base: float
    rope_dim: int  # leading dims of each head that are rotated (== head_dim for full RoPE)
    rope_scale: float = 1.0  # linear position scaling (positions are divided by it)
    # per-frequency divisors of the global layers' RoPE frequencies, rope_dim // 2 of them
    # (llama 3.x's scaling: 1 for short wavelengths, its factor for long ones); () = none
    rope_freq_factors: tuple[float, ...] = ()
    rope_base_local: float | None = None  # RoPE base of sliding-window layers (gemma3)
    sliding_window: int | None = None  # a query sees at most this many keys, itself included
    sliding_layers: tuple[bool, ...] = ()  # per layer: True where the sliding window applies
    qkv_bias: bool = False  # qwen2
    qk_norm: bool = False  # RMSNorm over each head of q and k (qwen3, gemma3)
    post_norms: bool = False  # extra RMSNorm after attention and after the MLP (gemma3)
    embed_scale: float = 1.0  # token embeddings are multiplied by this (gemma: sqrt(dim))
    attn_scale: float = field(default=0.0)  # 0.0 means 1/sqrt(head_dim)
    activation: Activation = "silu"
    tied_embeddings: bool = False  # the output head reuses the token embedding matrix

    def __post_init__(self) -> None:
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads "
                             f"{self.n_kv_heads}")
        if not 0 < self.rope_dim <= self.head_dim or self.rope_dim % 2:
            raise ValueError(f"rope_dim {self.rope_dim} must be even and in (0, head_dim]")
        if self.rope_freq_factors and len(self.rope_freq_factors) != self.rope_dim // 2:
            raise ValueError(f"{len(self.rope_freq_factors)} RoPE frequency factors for "
                             f"rope_dim {self.rope_dim}: need {self.rope_dim // 2}")
        if self.sliding_layers and len(self.sliding_layers) != self.n_layers:
            raise ValueError("sliding_layers needs one entry per layer")

    @property
    def scale(self) -> float:
        return self.attn_scale or self.head_dim**-0.5

    def is_sliding(self, layer: int) -> bool:
        return self.sliding_window is not None and bool(self.sliding_layers) and (
            self.sliding_layers[layer]
        )

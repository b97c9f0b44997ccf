"""The decoder's hyper-parameters: one frozen dataclass, filled from checkpoint metadata.

Architecture differences (gemma's sliding window and soft-capping, qwen's biases, granite's
multipliers, an MoE's experts) are fields here, read from a GGUF's metadata or a Hugging Face
config.json by `ollamapy.loading` (its family table), never forks of the model code and never
looked up from a model's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# the gated MLP's activation: act(gate) * up, or gpt-oss's clamped variant (ops.glu)
Activation = Literal["silu", "gelu_tanh", "swiglu_oai"]
# where each block norms: "pre" (llama: the input of each branch), "sandwich" (gemma: the input
# and the output of each branch), "post" (olmo2: the output of each branch only)
NormPlacement = Literal["pre", "sandwich", "post"]
# RMSNorm over q and k: "head" (qwen3, gemma3: each head), "all" (olmo2: the whole projection)
QKNorm = Literal["none", "head", "all"]


@dataclass(frozen=True, slots=True)
class ModelConfig:
    arch: str  # the checkpoint's own word (GGUF general.architecture): "llama", "gemma2", …
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
    # LongRoPE (phi3): the factors for contexts beyond rope_original_context (the short ones
    # are rope_freq_factors), and the factor both tables' cos and sin are multiplied by
    rope_freq_factors_long: tuple[float, ...] = ()
    rope_original_context: int = 0
    rope_attn_factor: float = 1.0
    rope_base_local: float | None = None  # RoPE base of sliding-window layers (gemma3)
    sliding_window: int | None = None  # a query sees at most this many keys, itself included
    sliding_layers: tuple[bool, ...] = ()  # per layer: True where the sliding window applies
    qkv_bias: bool = False  # qwen2, gpt-oss
    out_bias: bool = False  # the attention output projection has a bias (gpt-oss)
    attn_sinks: bool = False  # a learned per-head logit each query may attend to (gpt-oss)
    qk_norm: QKNorm = "none"
    norms: NormPlacement = "pre"
    embed_scale: float = 1.0  # token embeddings are multiplied by this (gemma: sqrt(dim))
    attn_scale: float = field(default=0.0)  # 0.0 means 1/sqrt(head_dim)
    residual_scale: float = 1.0  # each branch's output is multiplied by this (granite)
    logit_scale: float = 1.0  # the logits are divided by this (granite)
    # soft-capping, cap * tanh(x / cap), of attention scores and of the logits (gemma2); 0 = off
    attn_softcap: float = 0.0
    final_softcap: float = 0.0
    activation: Activation = "silu"
    tied_embeddings: bool = False  # the output head reuses the token embedding matrix
    # mixture of experts: n_experts gated MLPs of expert_ffn_dim per layer, a router picks
    # n_experts_used per token; their weights are renormalised to sum to 1 when norm_top_k
    n_experts: int = 0
    n_experts_used: int = 0
    expert_ffn_dim: int = 0
    norm_top_k: bool = True
    moe_bias: bool = False  # the router and every expert projection have biases (gpt-oss)

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
        if self.rope_freq_factors_long and (
                len(self.rope_freq_factors_long) != len(self.rope_freq_factors)):
            raise ValueError("LongRoPE needs as many long factors as short ones")
        if self.n_experts and not 0 < self.n_experts_used <= self.n_experts:
            raise ValueError(f"{self.n_experts_used} experts used of {self.n_experts}")

    @property
    def scale(self) -> float:
        return self.attn_scale or self.head_dim**-0.5

    def rope_factors(self, context: int) -> tuple[float, ...]:
        """The per-frequency factors for a context of `context` tokens: LongRoPE's long
        ones beyond the trained original context (as llama.cpp chooses), else the short."""
        if self.rope_freq_factors_long and context > self.rope_original_context:
            return self.rope_freq_factors_long
        return self.rope_freq_factors

    def is_sliding(self, layer: int) -> bool:
        return self.sliding_window is not None and bool(self.sliding_layers) and (
            self.sliding_layers[layer]
        )

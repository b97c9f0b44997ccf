"""BERT as a sentence encoder (all-minilm, nomic-embed-text): token ids → hidden states → one
vector per text.

Post-norm BERT (Devlin et al., 2018): embeddings (word + position + token type, LayerNorm),
then n_layers × [x = LN(x + Attention(x)); x = LN(x + FFN(x))] with bidirectional attention
that only masks padding. A sentence embedding pools the last hidden states (mean over the
real tokens, the [CLS] state, or the last token's) and, like Ollama's /api/embed,
L2-normalises the result.

nomic-bert (nomic-embed-text, Nussbaum et al., 2024) is the same post-norm encoder with three
config switches: rotary positions on q and k instead of a position table (`rope_base`, the
rotate-half layout), a SwiGLU feed-forward (`gated_ffn`), and no biases in the linear layers
(`bias`). Its checkpoints fuse q, k and v into one projection; the loader splits it.

This file is only the model: its config, the modules and batching (truncate, pad, mask). Like
the decoder it never tokenizes, reads files or sees a foreign tensor name: the loader
(`ollamapy.loading.encoder_weights`) translates a checkpoint's names and config and builds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ollamapy.engine.ops import Linear
from ollamapy.engine.pooling import Pooling, pool
from ollamapy.engine.rope import apply_rope, rope_cos_sin, rope_frequencies

# -- config -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EncoderConfig:
    dim: int  # model width
    n_layers: int
    n_heads: int
    ffn_dim: int
    vocab_size: int
    max_positions: int  # the longest input: rows of the learned position table, if any
    type_vocab_size: int  # rows of the token-type ("segment") table; we always use type 0
    norm_eps: float
    rope_base: float | None = None  # rotary positions with this base; None: a position table
    gated_ffn: bool = False  # w_down(SiLU(w_gate(x)) * w_up(x)), else w_down(GELU(w_up(x)))
    bias: bool = True  # the linear layers have biases
    pooling: Pooling = "mean"
    normalize: bool = True  # L2-normalise pooled embeddings
    max_tokens: int = 512  # longer inputs are truncated to this many ids, [CLS] … [SEP] kept

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


# -- the model ----------------------------------------------------------------------------------


class SelfAttention(nn.Module):
    """Bidirectional multi-head attention; only padding keys are masked out."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.n_heads, self.head_dim = config.n_heads, config.head_dim
        self.wq = Linear(config.dim, config.dim, bias=config.bias)
        self.wk = Linear(config.dim, config.dim, bias=config.bias)
        self.wv = Linear(config.dim, config.dim, bias=config.bias)
        self.wo = Linear(config.dim, config.dim, bias=config.bias)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """x (B, T, dim), key_mask (B, 1, 1, T) bool, True for real tokens, rope the (T, head_dim)
        cos and sin tables or None → (B, T, dim)."""
        B, T, _ = x.shape
        # (B, T, dim) → (B, T, n_heads, head_dim) → (B, n_heads, T, head_dim)
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)  # scale 1/√head_dim
        # (B, n_heads, T, hd) → (B, T, n_heads * hd): dim, or a tensor-parallel rank's share
        out = out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)
        return self.wo(out)


class FeedForward(nn.Module):
    """w_down(GELU(w_up(x))), with the exact erf GELU BERT was trained with; or, gated,
    SwiGLU: w_down(SiLU(w_gate(x)) * w_up(x))."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.w_gate = (Linear(config.dim, config.ffn_dim, bias=config.bias)
                       if config.gated_ffn else None)
        self.w_up = Linear(config.dim, config.ffn_dim, bias=config.bias)
        self.w_down = Linear(config.ffn_dim, config.dim, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.w_gate is not None:  # (B, T, ffn_dim) gate and value
            return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))
        return self.w_down(F.gelu(self.w_up(x), approximate="none"))


class EncoderLayer(nn.Module):
    """Post-norm residual block: the LayerNorm comes after each residual sum."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.attn = SelfAttention(config)
        self.attn_norm = nn.LayerNorm(config.dim, eps=config.norm_eps)
        self.ffn = FeedForward(config)
        self.ffn_norm = nn.LayerNorm(config.dim, eps=config.norm_eps)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        x = self.attn_norm(x + self.attn(x, key_mask, rope))
        return self.ffn_norm(x + self.ffn(x))


class BertEncoder(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.pos_embeddings = (nn.Embedding(config.max_positions, config.dim)
                               if config.rope_base is None else None)
        self.type_embeddings = nn.Embedding(config.type_vocab_size, config.dim)
        self.embed_norm = nn.LayerNorm(config.dim, eps=config.norm_eps)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.n_layers))
        self.requires_grad_(False)  # weights are read-only

    @torch.inference_mode()
    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids (B, T) long, mask (B, T) bool (True for real tokens, right padding) → last
        hidden states (B, T, dim). Hidden states at padded positions are meaningless."""
        if ids.shape[1] > self.config.max_positions:
            raise ValueError(f"{ids.shape[1]} tokens exceed {self.config.max_positions} positions")
        B, T = ids.shape
        positions = torch.arange(T, device=ids.device)  # (T,), every row starts at 0
        x = self.tok_embeddings(ids)  # (B, T, dim)
        if self.pos_embeddings is not None:  # a learned table (BERT)
            x = x + self.pos_embeddings(positions)  # (T, dim), broadcast over B
        x = x + self.type_embeddings(torch.zeros_like(ids))  # one segment: type 0 everywhere
        x = self.embed_norm(x)
        rope = None
        if self.config.rope_base is not None:  # rotary (nomic-bert): q and k turn in each layer
            inv_freq = rope_frequencies(self.config.head_dim, self.config.rope_base, ids.device)
            rope = rope_cos_sin(positions, inv_freq)  # (T, head_dim) cos and sin
        key_mask = mask.view(B, 1, 1, T)  # broadcast over heads and query positions
        for layer in self.layers:
            x = layer(x, key_mask, rope)
        return x

    @torch.inference_mode()
    def embed(self, ids: torch.Tensor, mask: torch.Tensor, normalize: bool | None = None
              ) -> torch.Tensor:
        """ids (B, T), mask (B, T) → float32 sentence embeddings (B, dim), L2-normalised
        when normalize (None: as the checkpoint's pipeline says)."""
        pooled = pool(self(ids, mask), mask, self.config.pooling)  # (B, dim) float32
        normalize = self.config.normalize if normalize is None else normalize
        return F.normalize(pooled, p=2, dim=-1) if normalize else pooled

    def embed_ids(self, batch: Sequence[Sequence[int]], max_tokens: int | None = None,
                  normalize: bool | None = None) -> torch.Tensor:
        """Token id lists (with [CLS] … [SEP]) of any lengths → float32 (B, dim), in one
        padded forward; lists longer than max_tokens (at most config.max_tokens) are
        truncated first."""
        limit = min(max_tokens or self.config.max_tokens, self.config.max_tokens)
        device = self.tok_embeddings.weight.device
        ids, mask = pad_batch([truncate(seq, limit) for seq in batch], device)
        return self.embed(ids, mask, normalize)


# -- batching -----------------------------------------------------------------------------------


def truncate(ids: Sequence[int], max_tokens: int) -> list[int]:
    """Cut the middle, keep the last id: [CLS] a b c … [SEP] → [CLS] a b … [SEP], the same
    ids Hugging Face's tokenizer gives with truncation=True, max_length=max_tokens."""
    ids = list(ids)
    return ids if len(ids) <= max_tokens else ids[: max_tokens - 1] + ids[-1:]


def pad_batch(
    batch: Sequence[Sequence[int]], device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists to the longest → ids (B, T) long, mask (B, T) bool. The pad id is
    0, but which id does not matter: padded keys are masked and padded states not pooled."""
    if not batch or any(len(seq) == 0 for seq in batch):
        raise ValueError("every sequence needs at least one token")
    T = max(len(seq) for seq in batch)
    ids = torch.zeros(len(batch), T, dtype=torch.long)
    mask = torch.zeros(len(batch), T, dtype=torch.bool)
    for row, seq in enumerate(batch):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = True
    return ids.to(device), mask.to(device)

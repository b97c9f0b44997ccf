"""The decoder-only transformer, hand-written: RMSNorm → RoPE → Attention → MLP → Block.

One file serves every decoder family (llama, qwen, gemma, phi3, granite, olmo2, their MoE
variants); their differences are `ModelConfig` fields. An MoE layer's feed-forward is
`engine/moe.py`'s.
The model turns token ids into logits and nothing else: it never samples, tokenizes or reads
files. The KV cache is run state passed into `forward`.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from ollamapy.engine.config import ModelConfig
from ollamapy.engine.kv_cache import KVCache
from ollamapy.engine.moe import MoEFeedForward
from ollamapy.engine.ops import Linear, RMSNorm, Sinks, attend, glu, softcap
from ollamapy.engine.rope import apply_rope, rope_cos_sin, rope_frequencies


def attention_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int | None) -> torch.Tensor:
    """Bool (B, 1, T, S), broadcast over heads: True where a query at q_pos (B, T) may see a
    key at k_pos, (S,) for cached keys shared by every row or (B, S): causal, and within the
    sliding window when there is one (q - k < window, so a query always sees itself)."""
    q = q_pos.unsqueeze(-1)  # (B, T, 1)
    k = k_pos.unsqueeze(-2)  # (1, S) or (B, 1, S)
    visible = k <= q  # (B, T, S)
    if window is not None:
        visible &= (q - k) < window
    return visible.unsqueeze(1)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        c = config
        self.layer = layer
        self.n_heads, self.n_kv_heads, self.head_dim = c.n_heads, c.n_kv_heads, c.head_dim
        self.scale, self.softcap = c.scale, c.attn_softcap
        # q, k and v in one matmul: rows of q, then k, then v
        self.qkv_sizes = [c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim,
                          c.n_kv_heads * c.head_dim]
        self.wqkv = Linear(c.dim, sum(self.qkv_sizes), bias=c.qkv_bias)
        self.wo = Linear(c.n_heads * c.head_dim, c.dim, bias=c.out_bias)
        self.sinks = Sinks(c.n_heads) if c.attn_sinks else None
        # q/k norms: over each head (qwen3, gemma3) or over the whole projection (olmo2)
        self.qk_norm = c.qk_norm
        q_width, k_width = ((c.head_dim, c.head_dim) if c.qk_norm == "head" else
                            (c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim))
        self.q_norm = RMSNorm(q_width, c.norm_eps) if c.qk_norm != "none" else None
        self.k_norm = RMSNorm(k_width, c.norm_eps) if c.qk_norm != "none" else None
        # an attention kernel with `attend`'s signature, set by a fast loader: it handles
        # each query alone, reading the cache in its own dtype, so that a token's attention is
        # the same in a decode step of any batch as in a prompt chunk of any length
        # (kernels/attention.py); without one, `attend`
        self.kernel: nn.Module | None = None
        # False: prompt chunks (T > 1) take torch's fused attention instead, whose sums over
        # the keys depend on how the prompt was cut (`Transformer.batch_invariant`)
        self.kernel_for_prompts = True

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor, positions: torch.Tensor, cache: KVCache | None
                ) -> torch.Tensor:
        B, T, _ = x.shape
        # (B, T, n_heads * head_dim), (B, T, n_kv_heads * head_dim) twice
        q, k, v = self.wqkv(x).split(self.qkv_sizes, dim=-1)
        if self.qk_norm == "all" and self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        # (B, T, n_heads * head_dim) → (B, n_heads, T, head_dim)
        q = q.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = k.view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if self.qk_norm == "head" and self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            # (B, n_kv_heads, S, head_dim): S, the keys' span, is the mask's last dimension
            k, v = cache.update(self.layer, positions, k, v, length=mask.shape[-1])
        # (B, n_heads, T, head_dim)
        if self.kernel is not None and (T == 1 or self.kernel_for_prompts):
            out = self.kernel(q, k, v, mask, self.scale, self.softcap, self.sink_logits())
        else:
            out = attend(q, k.to(q.dtype), v.to(q.dtype), mask, self.scale, self.softcap,
                         self.sink_logits())
        out = out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)  # (B, T, H*hd)
        return self.wo(out)

    def sink_logits(self) -> torch.Tensor | None:
        return self.sinks.weight if self.sinks is not None else None


class FeedForward(nn.Module):
    """Gated MLP: w_down(act(gate) * up), gate and up from one matmul (rows of gate, then up)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.activation = config.activation
        self.w_gate_up = Linear(config.dim, 2 * config.ffn_dim)
        self.w_down = Linear(config.ffn_dim, config.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w_gate_up(x).chunk(2, dim=-1)  # (B, T, ffn_dim) each
        return self.w_down(glu(self.activation, gate, up))


class Block(nn.Module):
    """Residual block: x + attn(x), then x + ffn(x), each branch normed at its input (pre),
    its input and output (sandwich: gemma) or its output only (post: olmo2)."""

    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        c = config
        pre, post = c.norms in ("pre", "sandwich"), c.norms in ("sandwich", "post")
        self.attn_norm = RMSNorm(c.dim, c.norm_eps) if pre else nn.Identity()
        self.attn = Attention(c, layer)
        self.post_attn_norm = RMSNorm(c.dim, c.norm_eps) if post else nn.Identity()
        self.ffn_norm = RMSNorm(c.dim, c.norm_eps) if pre else nn.Identity()
        self.ffn = MoEFeedForward(c) if c.n_experts else FeedForward(c)
        self.post_ffn_norm = RMSNorm(c.dim, c.norm_eps) if post else nn.Identity()
        self.residual_scale = c.residual_scale

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor, positions: torch.Tensor, cache: KVCache | None
                ) -> torch.Tensor:
        h = self.post_attn_norm(self.attn(self.attn_norm(x), cos, sin, mask, positions, cache))
        x = x + self._scaled(h)
        h = self.post_ffn_norm(self.ffn(self.ffn_norm(x)))
        return x + self._scaled(h)

    def _scaled(self, h: torch.Tensor) -> torch.Tensor:
        return h if self.residual_scale == 1.0 else h * self.residual_scale


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.tok_embeddings.weight.requires_grad_(False)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.output = Linear(config.dim, config.vocab_size)
        # inverse RoPE frequencies, global and (gemma3) local; rebuilt on the real device
        self.register_buffer("inv_freq", torch.empty(config.rope_dim // 2), persistent=False)
        self.register_buffer("inv_freq_local", torch.empty(config.rope_dim // 2),
                             persistent=False)
        self._kv_dtype = ""  # a loader's choice, by name (`kv_dtype`); "": the stream's

    @property
    def device(self) -> torch.device:
        return self.norm.weight.device

    @property
    def cache_devices(self) -> list[torch.device]:
        """Where each layer's KV cache lives: its block's device (engine/placement.py may
        put the last blocks on an accelerator)."""
        return [next(itertools.chain(b.parameters(), b.buffers())).device for b in self.layers]

    @property
    def dtype(self) -> torch.dtype:
        """The residual stream's dtype (and so the KV cache's); a fast path may keep some
        weights in other forms."""
        return self.norm.weight.dtype

    @property
    def kv_dtype(self) -> torch.dtype:
        """The KV cache's dtype: the residual stream's, unless the loader chose another
        (OLLAMA_KV_CACHE_TYPE on the fast path). Attention reads it as it is stored."""
        return getattr(torch, self._kv_dtype) if self._kv_dtype else self.dtype

    @kv_dtype.setter
    def kv_dtype(self, dtype: torch.dtype) -> None:
        # kept as a name: a torch.dtype attribute does not survive the saved steps' guards
        self._kv_dtype = str(dtype).removeprefix("torch.")

    @property
    def batch_invariant(self) -> bool:
        """Whether a token's logits are the same whatever batch, slot and prompt chunk it was
        computed in: every query through the attention kernel, where the fast loader gave
        one (every other op of the model is per row on the paths that have one). Setting it
        False sends prompt chunks to torch's fused attention (OLLAMAPY_BATCH_INVARIANT=0)."""
        return all(b.attn.kernel is not None and b.attn.kernel_for_prompts for b in self.layers)

    @batch_invariant.setter
    def batch_invariant(self, on: bool) -> None:
        for block in self.layers:
            block.attn.kernel_for_prompts = on

    def init_rope(self, context: int = 0) -> None:
        """Fill the RoPE tables on the model's device (after weights have been assigned), for
        sequences of up to `context` tokens (LongRoPE picks its factors by it; 0: the short)."""
        c, device = self.config, self.device
        self.inv_freq = rope_frequencies(c.rope_dim, c.rope_base, device, c.rope_factors(context))
        self.inv_freq_local = rope_frequencies(c.rope_dim, c.rope_base_local or c.rope_base,
                                               device)

    @torch.no_grad()  # not inference_mode: its tensors cannot enter a compiled graph
    def forward(self, tokens: torch.Tensor, start_pos: int | torch.Tensor = 0,
                cache: KVCache | None = None, *, key_positions: torch.Tensor | None = None,
                all_logits: bool = False, hidden: bool = False) -> torch.Tensor:
        """tokens (B, T), row i at positions [start_pos[i], start_pos[i] + T) → float32
        logits, (B, T, vocab) when all_logits else (B, vocab) for the last position only;
        hidden: the final norm's output instead of logits, (B, T, dim) or (B, dim), in the
        model's dtype.

        With a cache, row i of the cache holds sequence i and the new keys attend over the
        cached span key_positions = arange(S). An int start_pos is every row at the same
        position, the span then ending with the new tokens; a (B,) tensor (a batched decode
        step) needs key_positions, so that a compiled step sees one graph whatever the
        positions are."""
        c = self.config
        B, T = tokens.shape
        device = tokens.device
        if isinstance(start_pos, int):
            if cache is not None:
                cache.check(start_pos + T)
                key_positions = torch.arange(start_pos + T, device=device)
            start_pos = torch.full((B,), start_pos, device=device)
        elif start_pos.shape != (B,) or (cache is not None and key_positions is None):
            raise ValueError("per-row positions need one position per row and, with a cache, "
                             "key_positions")
        x = self.tok_embeddings(tokens)  # (B, T, dim)
        if c.embed_scale != 1.0:
            x = x * torch.tensor(c.embed_scale, dtype=x.dtype)
        q_pos = start_pos[:, None] + torch.arange(T, device=device)  # (B, T)
        k_pos = key_positions if key_positions is not None and cache is not None else q_pos
        cos, sin = rope_cos_sin(q_pos, self.inv_freq, c.rope_scale, c.rope_attn_factor)
        # sliding layers rotate by their own base where the family has one (gemma3), else
        # as the global layers do (phi3's window keeps its LongRoPE factors)
        cos_l, sin_l = rope_cos_sin(q_pos, self.inv_freq_local) if c.rope_base_local \
            else (cos, sin)
        mask_global = attention_mask(q_pos, k_pos, None)  # (B, 1, T, S)
        mask_local = attention_mask(q_pos, k_pos, c.sliding_window) if c.sliding_window \
            else mask_global
        for i, layer in enumerate(self.layers):
            if c.is_sliding(i):
                x = layer(x, cos_l, sin_l, mask_local, q_pos, cache)
            else:
                x = layer(x, cos, sin, mask_global, q_pos, cache)
        if not all_logits:
            x = x[:, -1:, :]
        x = self.norm(x)  # (B, T or 1, dim)
        if hidden:  # the final hidden states, before the output head (embeddings)
            return x if all_logits else x[:, -1, :]
        logits = self.output(x).float()  # (B, T or 1, vocab)
        if c.logit_scale != 1.0:
            logits = logits / c.logit_scale
        if c.final_softcap:
            logits = softcap(logits, c.final_softcap)
        return logits if all_logits else logits[:, -1, :]

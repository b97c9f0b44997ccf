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
(`bias`). Its checkpoints fuse q, k and v into one projection; `build_encoder` splits it.

This file owns the encoder's config, the module, batching (truncate, pad, mask) and the map
from Hugging Face tensor names to ours (`ollamapy.loading.weights` maps a GGUF's). Like the
decoder it never tokenizes or reads files: `from_hf` takes tensors already read by
`ollamapy.loading.safetensors`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from ollamapy.engine.ops import Linear
from ollamapy.engine.pooling import Pooling, pool
from ollamapy.engine.rope import apply_rope, rope_cos_sin, rope_frequencies

if TYPE_CHECKING:  # only for the annotation: the engine does not import the loader at runtime
    from ollamapy.loading.safetensors import HFFolder


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

    @classmethod
    def from_hf_config(
        cls,
        config: Mapping[str, Any],
        pooling_config: Mapping[str, Any] | None,
        sentence_config: Mapping[str, Any] | None,
        *,
        modules: Sequence[Mapping[str, Any]] | None = None,
    ) -> EncoderConfig:
        """From config.json (`bert` or `nomic_bert`), sentence-transformers' Pooling config,
        sentence_bert_config.json and modules.json (the sentence-transformers pipeline), each
        optional but the first."""
        config = _nomic_ai_config(config)
        nomic = config.get("model_type") == "nomic_bert"
        act = "silu" if nomic else "gelu"  # nomic: the SiLU of SwiGLU's gate
        if config.get("hidden_act", act) != act:
            raise ValueError(f"unsupported {'nomic-bert' if nomic else 'BERT'} activation "
                             f"{config['hidden_act']!r}")
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(
                f"unsupported position embedding {config['position_embedding_type']!r}"
            )
        rope = config.get("rope_parameters") or {}
        if rope.get("rope_type", "default") != "default":
            raise ValueError(f"unsupported RoPE scaling {rope['rope_type']!r}")
        max_positions = config["max_position_embeddings"]
        max_tokens = (sentence_config or {}).get("max_seq_length") or max_positions
        return cls(
            dim=config["hidden_size"],
            n_layers=config["num_hidden_layers"],
            n_heads=config["num_attention_heads"],
            ffn_dim=config["intermediate_size"],
            vocab_size=config["vocab_size"],
            max_positions=max_positions,
            type_vocab_size=config.get("type_vocab_size", 2),
            norm_eps=float(config.get("layer_norm_eps", 1e-12)),
            # transformers' NomicBertConfig defaults its RoPE base to 1000
            rope_base=float(rope.get("rope_theta", 1000.0)) if nomic else None,
            gated_ffn=nomic,
            bias=not nomic,
            pooling=_pooling(pooling_config),
            normalize=_normalize(modules),
            max_tokens=min(int(max_tokens), max_positions),
        )


# nomic-ai's remote-code config.json (nomic-embed-text's own repository) in the names that
# transformers' NomicBertConfig uses; max_trained_positions is the context llama.cpp keeps
_NOMIC_AI_KEYS = {"n_embd": "hidden_size", "n_layer": "num_hidden_layers",
                  "n_head": "num_attention_heads", "n_inner": "intermediate_size",
                  "layer_norm_epsilon": "layer_norm_eps",
                  "max_trained_positions": "max_position_embeddings"}


def _nomic_ai_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    if "n_embd" not in config:
        return config
    if (config.get("activation_function") != "swiglu" or config.get("prenorm")
            or config.get("rotary_emb_interleaved")
            or config.get("rotary_emb_fraction", 1.0) != 1.0):
        raise ValueError("unsupported nomic-bert variant: only post-norm SwiGLU with full, "
                         "rotate-half RoPE (nomic-embed-text v1, v1.5) is")
    renamed = {theirs: config[ours] for ours, theirs in _NOMIC_AI_KEYS.items() if ours in config}
    rope = {"rope_type": "default", "rope_theta": config.get("rotary_emb_base", 1000.0)}
    return {**config, **renamed, "hidden_act": "silu", "rope_parameters": rope}


def _pooling(pooling_config: Mapping[str, Any] | None) -> Pooling:
    # without a sentence-transformers Pooling module, mean pooling is what both
    # sentence-transformers and llama.cpp fall back to for BERT
    if not pooling_config or pooling_config.get("pooling_mode_mean_tokens"):
        return "mean"
    if pooling_config.get("pooling_mode_cls_token"):
        return "cls"
    raise ValueError(f"unsupported pooling {dict(pooling_config)}")


def _normalize(modules: Sequence[Mapping[str, Any]] | None) -> bool:
    # Ollama's /api/embed returns unit vectors, so normalise unless the checkpoint's own
    # pipeline (modules.json) is known and ends without a Normalize module
    if modules is None:
        return True
    return any(str(m.get("type", "")).endswith(".Normalize") for m in modules)


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
        B, T, D = x.shape
        # (B, T, dim) → (B, T, n_heads, head_dim) → (B, n_heads, T, head_dim)
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)  # scale 1/√head_dim
        out = out.transpose(1, 2).reshape(B, T, D)  # (B, n_heads, T, hd) → (B, T, dim)
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

    @classmethod
    def from_hf(
        cls, folder: HFFolder, device: torch.device | str, dtype: torch.dtype
    ) -> BertEncoder:
        """A BertEncoder from a Hugging Face (sentence-transformers) folder."""
        config = EncoderConfig.from_hf_config(
            folder.config,
            pooling_config=_sentence_module_config(folder.extra, "Pooling"),
            sentence_config=folder.extra.get("sentence_bert_config.json"),
            modules=folder.extra.get("modules.json"),
        )
        ours = ((name, t) for hf, t in folder.tensors.items() if (name := bert_name(hf)))
        return build_encoder(config, ours, device, dtype)


def _sentence_module_config(extra: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    """The config of the sentence-transformers module of this kind (e.g. 1_Pooling/config.json);
    modules.json names its folder."""
    for module in extra.get("modules.json") or []:
        if str(module.get("type", "")).endswith(f".{kind}"):
            return extra.get(f"{module.get('path')}/config.json")
    return None


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


# -- Hugging Face names → ours ------------------------------------------------------------------

_HF_GLOBAL = {
    "embeddings.word_embeddings.weight": "tok_embeddings.weight",
    "embeddings.position_embeddings.weight": "pos_embeddings.weight",
    "embeddings.token_type_embeddings.weight": "type_embeddings.weight",
    "embeddings.LayerNorm.weight": "embed_norm.weight",
    "embeddings.LayerNorm.bias": "embed_norm.bias",
    # nomic-bert, as nomic-ai's checkpoints name it (and transformers' save_pretrained writes it)
    "emb_ln.weight": "embed_norm.weight",
    "emb_ln.bias": "embed_norm.bias",
}
_HF_LAYER = {
    "attention.self.query": "attn.wq",
    "attention.self.key": "attn.wk",
    "attention.self.value": "attn.wv",
    "attention.output.dense": "attn.wo",
    "attention.output.LayerNorm": "attn_norm",
    "intermediate.dense": "ffn.w_up",
    "output.dense": "ffn.w_down",
    "output.LayerNorm": "ffn_norm",
    # nomic-bert; `encoder.layers`, not `encoder.layer`
    "attn.Wqkv": "attn.wqkv",  # q, k and v stacked: split by build_encoder
    "attn.out_proj": "attn.wo",
    "norm1": "attn_norm",
    "mlp.fc11": "ffn.w_up",
    "mlp.fc12": "ffn.w_gate",
    "mlp.fc2": "ffn.w_down",
    "norm2": "ffn_norm",
}
_HF_BLOCK = re.compile(r"encoder\.layers?\.(\d+)\.([\w.]+)\.(weight|bias)")
# Saved by BertModel but unused by a sentence encoder: the position_ids buffer (we build
# positions ourselves), the pooler (a tanh head for next-sentence prediction; sentence
# pooling reads the hidden states) and pretraining heads.
_HF_UNUSED = re.compile(r"embeddings\.position_ids|pooler\..*|cls\..*")


def bert_name(hf_name: str) -> str | None:
    """Our parameter name for a Hugging Face BERT or nomic-bert tensor, None for tensors we do
    not use."""
    name = hf_name.removeprefix("bert.")  # BertFor* task models nest the encoder here
    if name in _HF_GLOBAL:
        return _HF_GLOBAL[name]
    if _HF_UNUSED.fullmatch(name):
        return None
    m = _HF_BLOCK.fullmatch(name)
    if m and m[2] in _HF_LAYER:
        return f"layers.{m[1]}.{_HF_LAYER[m[2]]}.{m[3]}"
    raise ValueError(f"unexpected tensor {hf_name!r} in a BERT checkpoint")


def build_encoder(config: EncoderConfig, tensors: Iterable[tuple[str, torch.Tensor]],
                  device: torch.device | str, dtype: torch.dtype) -> BertEncoder:
    """A BertEncoder from (our name, tensor) pairs: built on the meta device, then each tensor
    converted and assigned in turn, so the weights are allocated once, on their device."""
    with torch.device("meta"):
        model = BertEncoder(config)
    state = {name: tensor.to(device=device, dtype=dtype) for name, tensor in _split_qkv(tensors)}
    expected = set(model.state_dict())
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise ValueError(
            f"weights do not fit the config: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    model.load_state_dict(state, assign=True, strict=True)
    return model.eval()


def _split_qkv(tensors: Iterable[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
    """nomic-bert's fused projection `attn.wqkv` (3 * dim, dim), rows q then k then v → our
    `attn.wq`, `attn.wk`, `attn.wv` (dim, dim) each; other tensors pass as they are."""
    for name, tensor in tensors:
        if ".attn.wqkv." not in name:
            yield name, tensor
            continue
        for part, rows in zip(("wq", "wk", "wv"), tensor.chunk(3, dim=0), strict=True):
            yield name.replace(".wqkv.", f".{part}."), rows

"""BERT as a sentence encoder (all-minilm): token ids → hidden states → one vector per text.

Post-norm BERT (Devlin et al., 2018): embeddings (word + position + token type, LayerNorm),
then n_layers × [x = LN(x + Attention(x)); x = LN(x + FFN(x))] with bidirectional attention
that only masks padding. A sentence embedding pools the last hidden states (mean over the
real tokens, the [CLS] state, or the last token's) and, like Ollama's /api/embed,
L2-normalises the result.

This file owns the encoder's config, the module, batching (truncate, pad, mask) and the map
from Hugging Face tensor names to ours (`ollamapy.loading.weights` maps a GGUF's). Like the
decoder it never tokenizes or reads files: `from_hf` takes tensors already read by
`ollamapy.loading.safetensors`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ollamapy.engine.ops import Linear

if TYPE_CHECKING:  # only for the annotation: the engine does not import the loader at runtime
    from ollamapy.loading.safetensors import HFFolder

Pooling = Literal["mean", "cls", "last"]


# -- config -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EncoderConfig:
    dim: int  # model width
    n_layers: int
    n_heads: int
    ffn_dim: int
    vocab_size: int
    max_positions: int  # rows of the learned position table
    type_vocab_size: int  # rows of the token-type ("segment") table; we always use type 0
    norm_eps: float
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
        """From config.json, sentence-transformers' Pooling config, sentence_bert_config.json
        and modules.json (the sentence-transformers pipeline), each optional but the first."""
        if config.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"unsupported BERT activation {config['hidden_act']!r}")
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(
                f"unsupported position embedding {config['position_embedding_type']!r}"
            )
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
            pooling=_pooling(pooling_config),
            normalize=_normalize(modules),
            max_tokens=min(int(max_tokens), max_positions),
        )


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
        self.wq = Linear(config.dim, config.dim, bias=True)
        self.wk = Linear(config.dim, config.dim, bias=True)
        self.wv = Linear(config.dim, config.dim, bias=True)
        self.wo = Linear(config.dim, config.dim, bias=True)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """x (B, T, dim), key_mask (B, 1, 1, T) bool, True for real tokens → (B, T, dim)."""
        B, T, D = x.shape
        # (B, T, dim) → (B, T, n_heads, head_dim) → (B, n_heads, T, head_dim)
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)  # scale 1/√head_dim
        out = out.transpose(1, 2).reshape(B, T, D)  # (B, n_heads, T, hd) → (B, T, dim)
        return self.wo(out)


class FeedForward(nn.Module):
    """w_down(GELU(w_up(x))), with the exact erf GELU BERT was trained with."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.w_up = Linear(config.dim, config.ffn_dim, bias=True)
        self.w_down = Linear(config.ffn_dim, config.dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_down(F.gelu(self.w_up(x), approximate="none"))


class EncoderLayer(nn.Module):
    """Post-norm residual block: the LayerNorm comes after each residual sum."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.attn = SelfAttention(config)
        self.attn_norm = nn.LayerNorm(config.dim, eps=config.norm_eps)
        self.ffn = FeedForward(config)
        self.ffn_norm = nn.LayerNorm(config.dim, eps=config.norm_eps)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        x = self.attn_norm(x + self.attn(x, key_mask))
        return self.ffn_norm(x + self.ffn(x))


class BertEncoder(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.pos_embeddings = nn.Embedding(config.max_positions, config.dim)
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
        x = (
            self.tok_embeddings(ids)  # (B, T, dim)
            + self.pos_embeddings(positions)  # (T, dim), broadcast over B
            + self.type_embeddings(torch.zeros_like(ids))  # one segment: type 0 everywhere
        )
        x = self.embed_norm(x)
        key_mask = mask.view(B, 1, 1, T)  # broadcast over heads and query positions
        for layer in self.layers:
            x = layer(x, key_mask)
        return x

    @torch.inference_mode()
    def embed(self, ids: torch.Tensor, mask: torch.Tensor, normalize: bool | None = None
              ) -> torch.Tensor:
        """ids (B, T), mask (B, T) → float32 sentence embeddings (B, dim), L2-normalised
        when normalize (None: as the checkpoint's pipeline says)."""
        hidden = self(ids, mask).float()  # pool in float32 whatever the weights' dtype
        if self.config.pooling == "cls":
            pooled = hidden[:, 0]  # (B, dim): the [CLS] state
        elif self.config.pooling == "last":  # the last real token's state (right padding)
            last = mask.sum(1).clamp(min=1) - 1  # (B,)
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        else:
            weights = mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
            # clamp as sentence-transformers does, so an all-padding row gives 0, not NaN
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)  # (B, dim)
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
}
_HF_BLOCK = re.compile(r"encoder\.layer\.(\d+)\.([\w.]+)\.(weight|bias)")
# Saved by BertModel but unused by a sentence encoder: the position_ids buffer (we build
# positions ourselves), the pooler (a tanh head for next-sentence prediction; sentence
# pooling reads the hidden states) and pretraining heads.
_HF_UNUSED = re.compile(r"embeddings\.position_ids|pooler\..*|cls\..*")


def bert_name(hf_name: str) -> str | None:
    """Our parameter name for a Hugging Face BERT tensor, None for tensors we do not use."""
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
    state = {name: tensor.to(device=device, dtype=dtype) for name, tensor in tensors}
    expected = set(model.state_dict())
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise ValueError(
            f"weights do not fit the config: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    model.load_state_dict(state, assign=True, strict=True)
    return model.eval()

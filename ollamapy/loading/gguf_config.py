"""GGUF metadata → ModelConfig (decoders) or EncoderConfig (`bert`, `nomic-bert` encoders).

Every number comes from the file's `<arch>.*` keys. The few facts that llama.cpp hard-codes
per architecture instead of storing them (gemma3's local RoPE base and sliding-layer pattern,
its embedding scale and GELU) live in `ARCH_DEFAULTS`, keyed by `general.architecture` — the
file's own word for its architecture, never a model name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence, Set
from typing import Any

from ollamapy.engine.bert import EncoderConfig, Pooling
from ollamapy.engine.config import ModelConfig

SUPPORTED_ARCHS = ("llama", "qwen2", "qwen3", "gemma3")
ENCODER_ARCHS = ("bert", "nomic-bert")

# `<arch>.pooling_type`, llama.cpp's enum: 0 none, 1 mean, 2 cls, 3 last, 4 rank
POOLING_TYPES: dict[int, Pooling] = {1: "mean", 2: "cls", 3: "last"}

# GGUF tensors that hold configuration, not weights. rope_freqs: llama 3.x's per-frequency
# RoPE divisors, which llama.cpp's converter computes from config.json's rope_scaling.
ROPE_FREQS = "rope_freqs.weight"
CONFIG_TENSORS = frozenset({ROPE_FREQS})

# Per-architecture facts absent from GGUF metadata; sources: llama.cpp src/llama-model.cpp
# (LLM_ARCH_GEMMA3: swa pattern 6, rope_freq_base_train_swa 10000) and the HF Gemma3 config.
ARCH_DEFAULTS: dict[str, dict[str, Any]] = {
    "gemma3": {"sliding_pattern": 6, "rope_base_local": 10_000.0, "activation": "gelu_tanh",
               "scale_embeddings": True},
}


class UnsupportedModelError(ValueError):
    pass


def _int(meta: Mapping[str, Any], key: str, default: int | None = None) -> int:
    value = meta.get(key, default)
    if isinstance(value, list | tuple):  # per-layer arrays: only uniform ones are supported
        if len(set(value)) != 1:
            raise UnsupportedModelError(f"{key}: per-layer values {value[:4]}… not supported")
        value = value[0]
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        raise UnsupportedModelError(f"GGUF metadata {key} is missing or not a number")
    return int(value)


def _float(meta: Mapping[str, Any], key: str, default: float) -> float:
    value = meta.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UnsupportedModelError(f"GGUF metadata {key} is not a number")
    return float(value)


def _sliding_layers(meta: Mapping[str, Any], arch: str, n_layers: int) -> tuple[bool, ...]:
    pattern = meta.get(f"{arch}.attention.sliding_window_pattern")
    if isinstance(pattern, list | tuple):  # newer files store one bool per layer
        return tuple(bool(p) for p in pattern)
    every = int(pattern) if pattern else ARCH_DEFAULTS.get(arch, {}).get("sliding_pattern", 0)
    if not every:
        return ()
    # every `every`-th layer is global (full attention), the others slide (llama.cpp
    # set_swa_pattern): layer i slides unless (i + 1) % every == 0
    return tuple((i + 1) % every != 0 for i in range(n_layers))


def config_from_gguf(meta: Mapping[str, Any], tensor_names: Set[str],
                     rope_freqs: Sequence[float] = ()) -> ModelConfig:
    """rope_freqs: the values of the file's `rope_freqs.weight`, if it has one."""
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_ARCHS:
        raise UnsupportedModelError(f"unsupported architecture {arch!r}; "
                                    f"supported: {', '.join(SUPPORTED_ARCHS)}")
    assert isinstance(arch, str)
    defaults = ARCH_DEFAULTS.get(arch, {})
    p = f"{arch}."
    dim = _int(meta, p + "embedding_length")
    n_heads = _int(meta, p + "attention.head_count")
    head_dim = _int(meta, p + "attention.key_length", dim // n_heads)
    n_layers = _int(meta, p + "block_count")
    tokens = meta.get("tokenizer.ggml.tokens")
    vocab = _int(meta, p + "vocab_size", len(tokens) if tokens is not None else None)
    window = meta.get(p + "attention.sliding_window")
    scaling = meta.get(p + "rope.scaling.type", "none")
    if scaling not in ("none", "linear"):
        raise UnsupportedModelError(f"RoPE scaling {scaling!r} is not supported")
    return ModelConfig(
        arch=arch,
        vocab_size=vocab,
        dim=dim,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=_int(meta, p + "attention.head_count_kv", n_heads),
        head_dim=head_dim,
        ffn_dim=_int(meta, p + "feed_forward_length"),
        norm_eps=_float(meta, p + "attention.layer_norm_rms_epsilon", 1e-5),
        context_length=_int(meta, p + "context_length", 2048),
        rope_base=_float(meta, p + "rope.freq_base", 10_000.0),
        rope_dim=_int(meta, p + "rope.dimension_count", head_dim),
        rope_scale=_float(meta, p + "rope.scaling.factor", 1.0) if scaling == "linear" else 1.0,
        rope_freq_factors=tuple(float(f) for f in rope_freqs),
        rope_base_local=(_float(meta, p + "rope.freq_base_swa", defaults["rope_base_local"])
                         if "rope_base_local" in defaults else None),
        sliding_window=int(window) if window else None,
        sliding_layers=_sliding_layers(meta, arch, n_layers) if window else (),
        qkv_bias="blk.0.attn_q.bias" in tensor_names,
        qk_norm="blk.0.attn_q_norm.weight" in tensor_names,
        post_norms="blk.0.post_attention_norm.weight" in tensor_names,
        embed_scale=math.sqrt(dim) if defaults.get("scale_embeddings") else 1.0,
        activation=defaults.get("activation", "silu"),
        tied_embeddings="output.weight" not in tensor_names,
    )


def encoder_config_from_gguf(meta: Mapping[str, Any]) -> EncoderConfig:
    arch = meta.get("general.architecture")
    if arch not in ENCODER_ARCHS:
        raise UnsupportedModelError(f"unsupported encoder architecture {arch!r}")
    p = f"{arch}."
    pooling_type = _int(meta, p + "pooling_type", 1)
    if pooling_type not in POOLING_TYPES:
        raise UnsupportedModelError(f"{p}pooling_type {pooling_type} is not supported "
                                    "(mean, cls and last are)")
    tokens = meta.get("tokenizer.ggml.tokens")
    context = _int(meta, p + "context_length", 512)
    # llama.cpp's LLM_ARCH_NOMIC_BERT: rotate-half RoPE, SwiGLU, no biases; BERT's otherwise
    nomic = arch == "nomic-bert"
    return EncoderConfig(
        dim=_int(meta, p + "embedding_length"),
        n_layers=_int(meta, p + "block_count"),
        n_heads=_int(meta, p + "attention.head_count"),
        ffn_dim=_int(meta, p + "feed_forward_length"),
        vocab_size=_int(meta, p + "vocab_size", len(tokens) if tokens is not None else None),
        max_positions=context,
        type_vocab_size=_int(meta, "tokenizer.ggml.token_type_count", 2),
        norm_eps=_float(meta, p + "attention.layer_norm_epsilon", 1e-12),
        rope_base=_float(meta, p + "rope.freq_base", 10_000.0) if nomic else None,
        gated_ffn=nomic,
        bias=not nomic,
        pooling=POOLING_TYPES[pooling_type],
        normalize=True,  # /api/embed returns unit vectors, as Ollama's does
        max_tokens=context,
    )

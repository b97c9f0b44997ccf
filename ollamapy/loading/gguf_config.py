"""GGUF metadata → ModelConfig (decoders) or EncoderConfig (`bert`, `nomic-bert` encoders).

Every number comes from the file's `<arch>.*` keys. The facts that llama.cpp hard-codes per
architecture instead of storing them (gemma's sliding-layer pattern and GELU, …) come from the
family table (families.py), keyed by `general.architecture`, the file's own word for its
architecture, never a model name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence, Set
from typing import Any

from ollamapy.engine.bert import EncoderConfig, Pooling
from ollamapy.engine.config import ModelConfig
from ollamapy.engine.rope import yarn_attn_factor, yarn_factors
from ollamapy.loading.families import ENCODER_ARCHS, FAMILIES, VISION_PREFIXES, Family

SUPPORTED_ARCHS = tuple(FAMILIES)

# `<arch>.pooling_type`, llama.cpp's enum: 0 none, 1 mean, 2 cls, 3 last, 4 rank
POOLING_TYPES: dict[int, Pooling] = {1: "mean", 2: "cls", 3: "last"}

# GGUF tensors that hold configuration, not weights. rope_freqs: llama 3.x's per-frequency
# RoPE divisors, which llama.cpp's converter computes from config.json's rope_scaling;
# rope_factors_short/long: LongRoPE's (phi3), the short ones for contexts up to the original.
ROPE_FREQS = "rope_freqs.weight"
ROPE_FACTORS_SHORT = "rope_factors_short.weight"
ROPE_FACTORS_LONG = "rope_factors_long.weight"
CONFIG_TENSORS = frozenset({ROPE_FREQS, ROPE_FACTORS_SHORT, ROPE_FACTORS_LONG})


def is_decoder_weight(name: str) -> bool:
    """A GGUF tensor that is a weight of the text decoder (not configuration, not vision)."""
    return name not in CONFIG_TENSORS and not name.startswith(VISION_PREFIXES)


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


def _sliding_layers(meta: Mapping[str, Any], family: Family, n_layers: int
                    ) -> tuple[bool, ...]:
    pattern = meta.get(f"{family.arch}.attention.sliding_window_pattern")
    if isinstance(pattern, list | tuple):  # newer files store one bool per layer
        return tuple(bool(p) for p in pattern)
    every = int(pattern) if pattern else family.sliding_pattern
    if not every:  # a window and no pattern: every layer slides (phi3, mistral v0.1)
        return (True,) * n_layers
    # every `every`-th layer is global (full attention), the others slide (llama.cpp
    # set_swa_pattern): layer i slides unless (i + 1) % every == 0
    return tuple((i + 1) % every != 0 for i in range(n_layers))


def family_of(meta: Mapping[str, Any]) -> Family:
    arch = meta.get("general.architecture")
    if not isinstance(arch, str) or arch not in FAMILIES:
        raise UnsupportedModelError(f"unsupported architecture {arch!r}; "
                                    f"supported: {', '.join(SUPPORTED_ARCHS)}")
    return FAMILIES[arch]


def config_from_gguf(meta: Mapping[str, Any], tensor_names: Set[str],
                     config_tensors: Mapping[str, Sequence[float]] | None = None
                     ) -> ModelConfig:
    """config_tensors: the values of the file's CONFIG_TENSORS, by name, those it has."""
    family = family_of(meta)
    arch, values = family.arch, config_tensors or {}
    p = f"{arch}."
    dim = _int(meta, p + "embedding_length")
    n_heads = _int(meta, p + "attention.head_count")
    head_dim = _int(meta, p + "attention.key_length", dim // n_heads)
    n_layers = _int(meta, p + "block_count")
    tokens = meta.get("tokenizer.ggml.tokens")
    vocab = _int(meta, p + "vocab_size", len(tokens) if tokens is not None else None)
    window = meta.get(p + "attention.sliding_window")
    rope_dim = _int(meta, p + "rope.dimension_count", head_dim)
    rope_base = _float(meta, p + "rope.freq_base", 10_000.0)
    rope = _rope_scaling(meta, p, rope_dim, rope_base, values)
    n_experts = _int(meta, p + "expert_count", 0)
    wide = n_layers == family.wide_attn_scale_layers
    return ModelConfig(
        arch=arch,
        vocab_size=vocab,
        dim=dim,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=_int(meta, p + "attention.head_count_kv", n_heads),
        head_dim=head_dim,
        ffn_dim=_int(meta, p + "feed_forward_length", 0 if n_experts else None),
        norm_eps=_float(meta, p + "attention.layer_norm_rms_epsilon", 1e-5),
        context_length=_int(meta, p + "context_length", 2048),
        rope_base=rope_base,
        rope_dim=rope_dim,
        **rope,
        rope_base_local=(_float(meta, p + "rope.freq_base_swa", family.rope_base_local)
                         if family.rope_base_local else None),
        sliding_window=int(window) if window else None,
        sliding_layers=_sliding_layers(meta, family, n_layers) if window else (),
        qkv_bias="blk.0.attn_q.bias" in tensor_names or "blk.0.attn_qkv.bias" in tensor_names,
        out_bias="blk.0.attn_output.bias" in tensor_names,
        attn_sinks="blk.0.attn_sinks.weight" in tensor_names,
        qk_norm=family.qk_norm if "blk.0.attn_q_norm.weight" in tensor_names else "none",
        norms=family.norms,
        embed_scale=_float(meta, p + "embedding_scale",
                           math.sqrt(dim) if family.scale_embeddings else 1.0),
        attn_scale=_float(meta, p + "attention.scale",
                          (dim // n_heads) ** -0.5 if wide else 0.0),
        residual_scale=_float(meta, p + "residual_scale", 1.0),
        logit_scale=_float(meta, p + "logit_scale", 1.0),
        attn_softcap=_float(meta, p + "attn_logit_softcapping", 0.0),
        final_softcap=_float(meta, p + "final_logit_softcapping", 0.0),
        activation=family.activation,
        tied_embeddings="output.weight" not in tensor_names,
        n_experts=n_experts,
        n_experts_used=_int(meta, p + "expert_used_count", 0),
        expert_ffn_dim=_int(meta, p + "expert_feed_forward_length",
                            _int(meta, p + "feed_forward_length", 0)) if n_experts else 0,
        norm_top_k=bool(meta.get(p + "expert_weights_norm", True)),
        moe_bias="blk.0.ffn_gate_inp.bias" in tensor_names,
    )


def _rope_scaling(meta: Mapping[str, Any], p: str, rope_dim: int, base: float,
                  values: Mapping[str, Sequence[float]]) -> dict[str, Any]:
    """ModelConfig's RoPE scaling fields: linear; llama 3's and LongRoPE's factor tensors;
    YaRN's factors computed as llama.cpp does (the ramp's ends rounded outwards)."""
    kind = meta.get(p + "rope.scaling.type", "none")
    fields: dict[str, Any] = {
        "rope_freq_factors": tuple(values.get(ROPE_FREQS, values.get(ROPE_FACTORS_SHORT, ()))),
        "rope_freq_factors_long": tuple(values.get(ROPE_FACTORS_LONG, ())),
        "rope_original_context": _int(meta, p + "rope.scaling.original_context_length", 0),
        "rope_attn_factor": _float(meta, p + "rope.scaling.attn_factor", 1.0)}
    if kind == "linear":
        fields["rope_scale"] = _float(meta, p + "rope.scaling.factor", 1.0)
    elif kind == "yarn":
        factor = _float(meta, p + "rope.scaling.factor", 1.0)
        fields["rope_freq_factors"] = yarn_factors(
            rope_dim, base, factor, fields["rope_original_context"],
            _float(meta, p + "rope.scaling.yarn_beta_fast", 32.0),
            _float(meta, p + "rope.scaling.yarn_beta_slow", 1.0))
        fields["rope_attn_factor"] *= yarn_attn_factor(factor)
    elif kind != "none":
        raise UnsupportedModelError(f"RoPE scaling {kind!r} is not supported")
    return fields


def decoder_pooling(meta: Mapping[str, Any]) -> Pooling:
    """How a decoder's final hidden states become an embedding, as llama.cpp does it: the
    file's `<arch>.pooling_type`; without one (or 0, none) the last prompt token's state, the
    one output Ollama's runner asks llama.cpp for. Any metadata without it (a Hugging Face
    config.json) → "last"."""
    pooling_type = meta.get(f"{meta.get('general.architecture')}.pooling_type", 0)
    if pooling_type == 0:
        return "last"
    if pooling_type not in POOLING_TYPES:
        raise UnsupportedModelError(f"pooling_type {pooling_type} cannot embed "
                                    "(mean, cls and last can)")
    return POOLING_TYPES[pooling_type]


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

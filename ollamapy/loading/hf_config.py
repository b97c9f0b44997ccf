"""Hugging Face config.json → ModelConfig for decoder folders (llama, qwen2, qwen3, gemma3).

Reads both spellings transformers has used: `rope_theta` and `rope_scaling` (4.x) and
`rope_parameters` (5.x, per attention type for gemma3). RoPE scaling: linear, and llama3 (as
per-frequency factors, the same ones llama.cpp's converter writes into a GGUF).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ollamapy.engine.config import ModelConfig
from ollamapy.engine.rope import llama3_factors
from ollamapy.loading.gguf_config import UnsupportedModelError

# HF model_type → our architecture word (the GGUF spelling)
HF_ARCHS = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma3_text": "gemma3",
            "gemma3": "gemma3"}


def _rope(config: Mapping[str, Any], kind: str) -> tuple[float | None, Mapping[str, Any] | None]:
    """(base, scaling parameters or None) for one attention kind ("full_attention" /
    "sliding_attention")."""
    params = config.get("rope_parameters")
    if isinstance(params, Mapping) and kind in params:  # gemma3 in transformers 5
        params = params[kind]
    scaling = config.get("rope_scaling") if kind == "full_attention" else None
    if isinstance(params, Mapping):
        base = params.get("rope_theta")
        scaling = params if params.get("rope_type", "default") != "default" else None
    else:
        base = config.get("rope_theta") if kind == "full_attention" else (
            config.get("rope_local_base_freq"))
    return (float(base) if base is not None else None), scaling


def _rope_scaling(scaling: Mapping[str, Any] | None, rope_dim: int, base: float
                  ) -> tuple[float, tuple[float, ...]]:
    """(linear position scale, per-frequency factors) from rope_scaling / rope_parameters."""
    kind = scaling.get("rope_type", scaling.get("type")) if scaling else None
    if kind in (None, "default"):
        return 1.0, ()
    if kind == "linear":
        return float(scaling["factor"]), ()
    if kind == "llama3":  # the defaults are llama.cpp's converter's
        return 1.0, llama3_factors(
            rope_dim, base, float(scaling.get("factor", 8.0)),
            float(scaling.get("low_freq_factor", 1.0)),
            float(scaling.get("high_freq_factor", 4.0)),
            int(scaling.get("original_max_position_embeddings", 8192)))
    raise UnsupportedModelError(f"RoPE scaling {dict(scaling)} is not supported")


def _sliding_layers(config: Mapping[str, Any], n_layers: int) -> tuple[bool, ...]:
    if layer_types := config.get("layer_types"):
        return tuple(t == "sliding_attention" for t in layer_types)
    every = config.get("sliding_window_pattern")
    return tuple((i + 1) % every != 0 for i in range(n_layers)) if every else ()


def config_from_hf(config: Mapping[str, Any]) -> ModelConfig:
    if "text_config" in config:  # multimodal wrappers keep the decoder here
        config = {**config["text_config"], "model_type": config["text_config"].get("model_type")}
    model_type = config.get("model_type")
    arch = HF_ARCHS.get(str(model_type))
    if arch is None:
        raise UnsupportedModelError(f"unsupported model_type {model_type!r}")
    dim, n_heads, n_layers = config["hidden_size"], config["num_attention_heads"], \
        config["num_hidden_layers"]
    head_dim = config.get("head_dim") or dim // n_heads
    rope_dim = int(head_dim * config.get("partial_rotary_factor", 1.0))
    rope_base, scaling = _rope(config, "full_attention")
    rope_base = rope_base or 10_000.0
    rope_scale, rope_freq_factors = _rope_scaling(scaling, rope_dim, rope_base)
    local_base, _ = _rope(config, "sliding_attention")  # gemma3's local RoPE: never scaled
    gemma = arch == "gemma3"
    window = config.get("sliding_window") if gemma or config.get("use_sliding_window") else None
    sliding = _sliding_layers(config, n_layers) if window else ()
    pre_attn_scalar = config.get("query_pre_attn_scalar")
    return ModelConfig(
        arch=arch,
        vocab_size=config["vocab_size"],
        dim=dim,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=config.get("num_key_value_heads") or n_heads,
        head_dim=head_dim,
        ffn_dim=config["intermediate_size"],
        norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        context_length=config.get("max_position_embeddings", 2048),
        rope_base=rope_base,
        rope_dim=rope_dim,
        rope_scale=rope_scale,
        rope_freq_factors=rope_freq_factors,
        rope_base_local=(local_base or 10_000.0) if gemma else None,
        sliding_window=window if sliding else None,
        sliding_layers=sliding,
        qkv_bias=arch == "qwen2" or bool(config.get("attention_bias")),
        qk_norm=arch in ("qwen3", "gemma3"),
        post_norms=gemma,
        embed_scale=math.sqrt(dim) if gemma else 1.0,
        attn_scale=pre_attn_scalar**-0.5 if pre_attn_scalar else 0.0,
        activation="gelu_tanh" if gemma else "silu",
        tied_embeddings=bool(config.get("tie_word_embeddings", gemma)),
    )

"""Hugging Face config.json → ModelConfig for decoder folders (the families in families.py), or
EncoderConfig for `bert` and `nomic_bert` folders (with sentence-transformers' module configs).

Reads both spellings transformers has used: `rope_theta` and `rope_scaling` (4.x) and
`rope_parameters` (5.x, per attention type for gemma3). RoPE scaling: linear, llama3 (as
per-frequency factors, the same ones llama.cpp's converter writes into a GGUF) and longrope
(phi3: short and long factors and the attention factor, as the converter writes them).
nomic-bert's config.json comes in nomic-ai's remote-code keys (`n_embd`, …) or transformers';
both read the same.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence, Set
from typing import Any

from ollamapy.engine.bert import EncoderConfig, Pooling
from ollamapy.engine.config import ModelConfig
from ollamapy.engine.rope import llama3_factors, yarn_attn_factor, yarn_factors
from ollamapy.loading.families import HF_FAMILIES
from ollamapy.loading.gguf_config import UnsupportedModelError


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


def _rope_scaling(scaling: Mapping[str, Any] | None, config: Mapping[str, Any], rope_dim: int,
                  base: float) -> dict[str, Any]:
    """ModelConfig's RoPE scaling fields from rope_scaling / rope_parameters."""
    kind = scaling.get("rope_type", scaling.get("type")) if scaling else None
    if kind in (None, "default"):
        return {}
    assert scaling is not None
    if kind == "linear":
        return {"rope_scale": float(scaling["factor"])}
    if kind == "llama3":  # the defaults are llama.cpp's converter's
        return {"rope_freq_factors": llama3_factors(
            rope_dim, base, float(scaling.get("factor", 8.0)),
            float(scaling.get("low_freq_factor", 1.0)),
            float(scaling.get("high_freq_factor", 4.0)),
            int(scaling.get("original_max_position_embeddings", 8192)))}
    if kind == "longrope":  # phi3: the attention factor as transformers (and the converter)
        original = int(scaling.get("original_max_position_embeddings")
                       or config["original_max_position_embeddings"])
        factor = config.get("max_position_embeddings", original) / original
        attn_factor = scaling.get("attention_factor") or (
            math.sqrt(1 + math.log(factor) / math.log(original)) if factor > 1 else 1.0)
        return {"rope_freq_factors": tuple(map(float, scaling["short_factor"])),
                "rope_freq_factors_long": tuple(map(float, scaling["long_factor"])),
                "rope_original_context": original, "rope_attn_factor": float(attn_factor)}
    if kind == "yarn":  # gpt-oss; transformers' defaults
        factor = float(scaling["factor"])
        return {"rope_freq_factors": yarn_factors(
            rope_dim, base, factor, int(scaling.get("original_max_position_embeddings")
                                        or config["max_position_embeddings"]),
            float(scaling.get("beta_fast") or 32.0), float(scaling.get("beta_slow") or 1.0),
            bool(scaling.get("truncate", True))),
            "rope_attn_factor": float(scaling.get("attention_factor")
                                      or yarn_attn_factor(factor))}
    raise UnsupportedModelError(f"RoPE scaling {dict(scaling)} is not supported")


def _experts(config: Mapping[str, Any]) -> dict[str, Any]:
    """ModelConfig's MoE fields: qwen3moe's num_experts, Mixtral's num_local_experts."""
    n = config.get("num_experts") or config.get("num_local_experts")
    if not n:
        return {}
    if config.get("mlp_only_layers") or config.get("decoder_sparse_step", 1) != 1:
        raise UnsupportedModelError("MoE models with dense layers between the sparse ones are "
                                    "not supported")
    return {"n_experts": int(n), "n_experts_used": int(config["num_experts_per_tok"]),
            "expert_ffn_dim": int(config.get("moe_intermediate_size")
                                  or config["intermediate_size"]),
            "norm_top_k": bool(config.get("norm_topk_prob", True))}


def _sliding_layers(config: Mapping[str, Any], pattern: int, n_layers: int
                    ) -> tuple[bool, ...]:
    """Which layers slide: config.json's layer_types, else every `pattern`-th layer is global,
    else (phi3, mistral) all of them slide."""
    if layer_types := config.get("layer_types"):
        return tuple(t == "sliding_attention" for t in layer_types)
    every = config.get("sliding_window_pattern") or pattern
    return tuple((i + 1) % every != 0 for i in range(n_layers)) if every else (True,) * n_layers


def config_from_hf(config: Mapping[str, Any], tensor_names: Set[str]) -> ModelConfig:
    """tensor_names: the folder's tensors, for what only their presence says (q/k norms,
    biases, sinks), as the GGUF side reads it from the file's tensors."""
    def has(layer_0_tensor: str) -> bool:  # multimodal folders prefix "language_model."
        return any(n.endswith(f"layers.0.{layer_0_tensor}") for n in tensor_names)

    if "text_config" in config:  # multimodal wrappers keep the decoder here
        config = {**config["text_config"], "model_type": config["text_config"].get("model_type")}
    model_type = config.get("model_type")
    family = HF_FAMILIES.get(str(model_type))
    if family is None:
        raise UnsupportedModelError(f"unsupported model_type {model_type!r}")
    dim, n_heads, n_layers = config["hidden_size"], config["num_attention_heads"], \
        config["num_hidden_layers"]
    head_dim = config.get("head_dim") or dim // n_heads
    rope_dim = int(head_dim * config.get("partial_rotary_factor", 1.0))
    rope_base, scaling = _rope(config, "full_attention")
    rope_base = rope_base or 10_000.0
    local_base, _ = _rope(config, "sliding_attention")  # gemma3's local RoPE: never scaled
    # qwen's configs name a window they do not use unless use_sliding_window is set
    window = config.get("sliding_window") if config.get("use_sliding_window", True) else None
    sliding = _sliding_layers(config, family.sliding_pattern, n_layers) if window else ()
    pre_attn_scalar = config.get("query_pre_attn_scalar")
    attn_scale = pre_attn_scalar**-0.5 if pre_attn_scalar else 0.0
    return ModelConfig(
        arch=family.arch,
        vocab_size=config["vocab_size"],
        dim=dim,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=config.get("num_key_value_heads") or n_heads,
        head_dim=head_dim,
        ffn_dim=config.get("intermediate_size", 0),
        norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        context_length=config.get("max_position_embeddings", 2048),
        rope_base=rope_base,
        rope_dim=rope_dim,
        **_rope_scaling(scaling, config, rope_dim, rope_base),
        rope_base_local=(local_base or family.rope_base_local) if family.rope_base_local
        else None,
        sliding_window=window if sliding else None,
        sliding_layers=sliding,
        qkv_bias=family.arch == "qwen2" or bool(config.get("attention_bias")),
        out_bias=has("self_attn.o_proj.bias"),
        attn_sinks=has("self_attn.sinks"),
        moe_bias=has("mlp.router.bias"),
        qk_norm=family.qk_norm if has("self_attn.q_norm.weight") else "none",
        norms=family.norms,
        embed_scale=float(config.get("embedding_multiplier")
                          or (math.sqrt(dim) if family.scale_embeddings else 1.0)),
        attn_scale=float(config.get("attention_multiplier") or attn_scale),
        residual_scale=float(config.get("residual_multiplier") or 1.0),
        logit_scale=float(config.get("logits_scaling") or 1.0),
        attn_softcap=float(config.get("attn_logit_softcapping") or 0.0),
        final_softcap=float(config.get("final_logit_softcapping") or 0.0),
        activation=family.activation,
        tied_embeddings=bool(config.get("tie_word_embeddings", family.norm_plus_one)),
        **_experts(config),
    )


# -- encoders -----------------------------------------------------------------------------------


def encoder_config_from_hf(
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
    return EncoderConfig(
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

"""Tiny random Hugging Face decoders (the test oracle) for every architecture we support."""

from __future__ import annotations

import torch
import transformers

VOCAB = 96


def tiny_hf_model(arch: str, seed: int = 0, **overrides) -> transformers.PreTrainedModel:
    common = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                  rms_norm_eps=1e-6)
    if arch == "llama":
        config = transformers.LlamaConfig(**common, rope_theta=10_000.0, head_dim=16,
                                          tie_word_embeddings=False)
        cls = transformers.LlamaForCausalLM
    elif arch == "qwen2":
        config = transformers.Qwen2Config(**common, rope_theta=1_000_000.0,
                                          tie_word_embeddings=True)
        cls = transformers.Qwen2ForCausalLM
    elif arch == "qwen3":
        config = transformers.Qwen3Config(**common, head_dim=24, rope_theta=1_000_000.0,
                                          tie_word_embeddings=True)
        cls = transformers.Qwen3ForCausalLM
    elif arch == "gemma3":
        # a small sliding window and mixed layer types, so the window is exercised
        config = transformers.Gemma3TextConfig(
            **common, head_dim=32, sliding_window=6, query_pre_attn_scalar=24,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
            rope_theta=1_000_000.0, rope_local_base_freq=10_000.0)
        cls = transformers.Gemma3ForCausalLM
    else:
        raise ValueError(arch)
    for key, value in overrides.items():
        setattr(config, key, value)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = cls(config).eval()
    with torch.no_grad():  # random norms and biases too, so no weight is trivially 0 or 1
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.2)
    return model

"""The decoder families as users get their files: a tiny random model built with
transformers' own class, saved as a Hugging Face folder with a tokenizer, and converted by
llama.cpp's own converter (tests/llama_cpp.py) to an f32 GGUF and a q8_0 one.

Shared by tests/loading/test_families.py (CASES: the families of the family table, each
with the features that change its logits) and benchmarks/bench_families.py (ALL_CASES:
those and the families with test files of their own, test_llama3.py and tests/engine).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers

from tests.llama_cpp import (
    convert,
    save_with_tokenizer,
    tiny_tokenizer,
    write_gpt2_tokenizer,
    write_qwen2_tokenizer,
    write_spm_tokenizer,
)

PROMPT = "The quick brown fox jumps over the lazy dog. Hello world!"
SPM_VOCAB = 400


def common(vocab: int) -> dict[str, Any]:
    return dict(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                initializer_range=0.2, bos_token_id=1, eos_token_id=2, pad_token_id=0)


@dataclass(frozen=True)
class Case:
    arch: str  # what the GGUF names it
    model: type[transformers.PreTrainedModel]
    config: Callable[[int], transformers.PretrainedConfig]  # vocab size → config
    # "spm" (tokenizer.model; "spm-bare": no space prefix), "gpt2", "qwen2" (GPT-2's and
    # Qwen2's vocabularies) or "bpe" (Llama 2's tokenizer.json shape, tiny_tokenizer)
    tokenizer: str = "spm"
    # a family feature → the ModelConfig fields that switch it off
    ablations: dict[str, dict[str, Any]] = field(default_factory=dict)
    moe: bool = False


RENORMALISED = {"top-k weights renormalised": {"norm_top_k": False}}
CASES: dict[str, Case] = {
    "gemma2": Case("gemma2", transformers.Gemma2ForCausalLM, lambda v: transformers.Gemma2Config(
        **common(v), head_dim=16, query_pre_attn_scalar=16, sliding_window=4,
        attn_logit_softcapping=2.0, final_logit_softcapping=3.0),
        tokenizer="spm-bare",
        ablations={"attention soft-cap": {"attn_softcap": 0.0},
                   "final soft-cap": {"final_softcap": 0.0},
                   "sliding window": {"sliding_window": None}}),
    "phi3": Case("phi3", transformers.Phi3ForCausalLM, lambda v: transformers.Phi3Config(
        **common(v), original_max_position_embeddings=64, sliding_window=6, rope_scaling={
            "type": "longrope", "short_factor": [1.0 + 0.5 * i for i in range(8)],
            "long_factor": [4.0 + i for i in range(8)]}),
        ablations={"LongRoPE factors": {"rope_freq_factors": (), "rope_freq_factors_long": ()},
                   "LongRoPE attention factor": {"rope_attn_factor": 1.0},
                   "sliding window": {"sliding_window": None}}),
    "granite": Case("granite", transformers.GraniteForCausalLM, lambda v: (
        transformers.GraniteConfig)(**common(v), embedding_multiplier=6.0, residual_multiplier=0.4,
        attention_multiplier=0.5, logits_scaling=0.25),
        ablations={"embedding multiplier": {"embed_scale": 1.0},
                   "residual multiplier": {"residual_scale": 1.0},
                   "attention multiplier": {"attn_scale": 0.0},
                   "logit scaling": {"logit_scale": 1.0}}),
    "olmo2": Case("olmo2", transformers.Olmo2ForCausalLM, lambda v: transformers.Olmo2Config(
        **common(v)), tokenizer="gpt2"),
    "mixtral": Case("llama", transformers.MixtralForCausalLM, lambda v: transformers.MixtralConfig(
        **common(v), num_local_experts=4, num_experts_per_tok=2),
        ablations=RENORMALISED, moe=True),
    "qwen3moe": Case("qwen3moe", transformers.Qwen3MoeForCausalLM, lambda v: (
        transformers.Qwen3MoeConfig)(**common(v), head_dim=16, num_experts=4, num_experts_per_tok=2,
        moe_intermediate_size=32, norm_topk_prob=True, tie_word_embeddings=False),
        tokenizer="gpt2", ablations=RENORMALISED, moe=True),
    "gpt-oss": Case("gpt-oss", transformers.GptOssForCausalLM, lambda v: (
        transformers.GptOssConfig)(**common(v), head_dim=16, num_local_experts=4,
                                   num_experts_per_tok=2, sliding_window=4, rope_scaling={
            "rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
            "truncate": True, "original_max_position_embeddings": 64}),
        tokenizer="gpt2", moe=True,
        ablations={**RENORMALISED, "attention sinks": {"attn_sinks": False},
                   "YaRN": {"rope_freq_factors": (), "rope_attn_factor": 1.0},
                   "sliding window": {"sliding_window": None}}),
}

# Llama 3's RoPE scaling, as tests/loading/test_llama3.py sets it (frequencies in all three
# bands: kept, divided by the factor, blended)
LLAMA3_SCALING = {"rope_type": "llama3", "rope_theta": 500_000.0, "factor": 8.0,
                  "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 512}

# the families with test files of their own, their configs as those files set them
# (tests/loading/test_llama3.py, tests/engine/hf_tiny.py), in this table's shape
OWN_TESTS: dict[str, Case] = {
    "llama": Case("llama", transformers.LlamaForCausalLM, lambda v: transformers.LlamaConfig(
        **{**common(v), "max_position_embeddings": 2048}, head_dim=16,
        rope_parameters=LLAMA3_SCALING, tie_word_embeddings=True), tokenizer="bpe"),
    "qwen2": Case("qwen2", transformers.Qwen2ForCausalLM, lambda v: transformers.Qwen2Config(
        **common(v), rope_theta=1_000_000.0, tie_word_embeddings=True), tokenizer="qwen2"),
    "qwen3": Case("qwen3", transformers.Qwen3ForCausalLM, lambda v: transformers.Qwen3Config(
        **common(v), head_dim=24, rope_theta=1_000_000.0, tie_word_embeddings=True),
        tokenizer="gpt2"),
    # query_pre_attn_scalar = head_dim: GGUF does not store it, llama.cpp assumes head_dim
    "gemma3": Case("gemma3", transformers.Gemma3ForCausalLM, lambda v: (
        transformers.Gemma3TextConfig)(**common(v), head_dim=32, sliding_window=6,
                                       query_pre_attn_scalar=32, rope_theta=1_000_000.0,
                                       rope_local_base_freq=10_000.0),
        tokenizer="spm-bare"),
}
ALL_CASES: dict[str, Case] = {**OWN_TESTS, **CASES}


@dataclass
class Built:
    hf: transformers.PreTrainedModel
    folder: Path
    gguf: Path  # f32, as converted
    gguf_q8: Path  # q8_0: what the fast path keeps quantized
    ids: list[int]  # PROMPT through transformers' tokenizer


def build(name: str, root: Path, seed: int = 7) -> Built:
    """The family's tiny random model (seeded), its folder root/hf (weights, config.json and
    a tokenizer), and the converter's root/f32.gguf and root/q8.gguf of it."""
    case = ALL_CASES[name]
    folder = root / "hf"
    folder.mkdir(parents=True)
    bpe = tiny_tokenizer() if case.tokenizer == "bpe" else None
    if case.tokenizer in ("gpt2", "qwen2"):
        write = write_gpt2_tokenizer if case.tokenizer == "gpt2" else write_qwen2_tokenizer
        vocab = write(folder)
    else:
        vocab = bpe.get_vocab_size() if bpe is not None else SPM_VOCAB
    config = case.config(vocab)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    hf = case.model(config).eval()
    with torch.no_grad():  # random norms, biases and sinks too: none trivially 0 or 1
        for pname, p in hf.named_parameters():
            if "norm" in pname or pname.endswith(("bias", "sinks")):
                p.add_(torch.randn_like(p) * 0.2)
    if bpe is not None:
        save_with_tokenizer(hf, folder, bpe)
    else:
        hf.save_pretrained(folder)
    if case.tokenizer.startswith("spm"):
        write_spm_tokenizer(folder, space_prefix=case.tokenizer == "spm")
    ids = transformers.AutoTokenizer.from_pretrained(folder)(PROMPT).input_ids
    return Built(hf, folder, convert(folder, root / "f32.gguf"),
                 convert(folder, root / "q8.gguf", "q8_0"), ids)


def hf_logits(built: Built, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return built.hf(torch.tensor([ids])).logits[0].float()  # (T, vocab)
